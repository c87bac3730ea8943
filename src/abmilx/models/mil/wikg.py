"""WiKG (Li et al., 2024): dynamic knowledge graph over instances, attention readout.

Per slide, with h = embed(x) and h <- (h + mean_i h_i) / 2:
  e_h = W_head h, e_t = W_tail h;  every instance i keeps its top-k (6) neighbours j by
  e_h_i . e_t_j / sqrt(d), with p_ij = softmax_j over the kept logits;
  r_ij = p_ij e_t_j + (1 - p_ij) e_h_i            neighbour-aware head embedding
  w_ij = softmax_j(e_t_j . tanh(e_h_i + r_ij));  n_i = sum_j w_ij e_t_j   (knowledge attention)
  bi-interaction: z_i = lrelu(W_1 (h_i + n_i)) + lrelu(W_2 (h_i * n_i)), Dropout(0.3)
  readout a = softmax_i(Linear(d/2 -> 1)(lrelu(Linear(d -> d/2) z_i))), s = LN(sum_i a_i z_i);
  logits = Linear(d -> C)(s).
The official module also builds gate_U/gate_V/gate_W (0.39 M parameters) that its forward
never uses; they are left out, which gives 1.709 M parameters for in_dim 1024 and 2 classes,
the paper's 1.71 M. The readout is torch_geometric's GlobalAttention written out. The
official embedding is Linear + LeakyReLU without dropout, hence these defaults.
The official knowledge attention writes the dot product as einsum('ijkl,ijkm->ijk'), which
is (sum of e_t) x (sum of the gate), not e_t . gate; the paper's dot product is used here.
Memory is O(N^2) for the neighbour logits (the paper's OOM on survival slides).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from ..registry import register_mil
from .base import InstanceEmbedding, MILOutput, as_bag_batch, init_linears_xavier


class WiKG(nn.Module):
    """Official `WiKG` with agg_type "bi-interaction" and pool "attn", without unused layers."""

    def __init__(
        self,
        in_dim: int,
        n_classes: int,
        *,
        hidden_dim: int = 512,
        topk: int = 6,
        message_dropout: float = 0.3,
        act: str = "leaky_relu",
        dropout: float = 0.0,
        mil_norm: str | None = "none",
        mil_bias: bool = True,
    ):
        super().__init__()
        self.topk = topk
        self.embed = InstanceEmbedding(in_dim, hidden_dim, act, dropout, mil_norm, mil_bias)
        self.head = nn.Linear(hidden_dim, hidden_dim)
        self.tail = nn.Linear(hidden_dim, hidden_dim)
        self.sum_interaction = nn.Linear(hidden_dim, hidden_dim)
        self.product_interaction = nn.Linear(hidden_dim, hidden_dim)
        self.message_dropout = nn.Dropout(message_dropout)
        self.readout = nn.Sequential(
            nn.Linear(hidden_dim, hidden_dim // 2), nn.LeakyReLU(), nn.Linear(hidden_dim // 2, 1)
        )
        self.norm = nn.LayerNorm(hidden_dim)
        self.classifier = nn.Linear(hidden_dim, n_classes, bias=mil_bias)
        init_linears_xavier(self)

    def forward(self, x: torch.Tensor, coords: torch.Tensor | None = None) -> MILOutput:
        h = self.embed(as_bag_batch(x))  # (B, N, d)
        h = (h + h.mean(dim=1, keepdim=True)) / 2
        e_head, e_tail = self.head(h), self.tail(h)
        logits = e_head @ e_tail.transpose(1, 2) / math.sqrt(h.shape[-1])  # (B, N, N)
        top_logits, top_index = logits.topk(min(self.topk, h.shape[1]), dim=-1)  # (B, N, k)
        batch, n_instances, k = top_index.shape
        neighbours = e_tail.gather(
            1, top_index.reshape(batch, -1, 1).expand(-1, -1, e_tail.shape[-1])
        ).view(batch, n_instances, k, -1)  # (B, N, k, d)
        p = torch.softmax(top_logits, dim=-1)[..., None]  # (B, N, k, 1)
        mixed = p * neighbours + (1 - p) * e_head[:, :, None]
        gate = torch.tanh(e_head[:, :, None] + mixed)
        knowledge = torch.softmax((neighbours * gate).sum(-1), dim=-1)  # (B, N, k)
        message = (knowledge[..., None] * neighbours).sum(2)  # (B, N, d)
        z = F.leaky_relu(self.sum_interaction(h + message)) + F.leaky_relu(
            self.product_interaction(h * message)
        )
        z = self.message_dropout(z)
        attention = torch.softmax(self.readout(z).transpose(1, 2), dim=-1)  # (B, 1, N)
        slide = self.norm((attention @ z).squeeze(1))
        return MILOutput(self.classifier(slide), attention, slide)


@register_mil("wikg")
def wikg(in_dim: int, n_classes: int, **options) -> WiKG:
    return WiKG(in_dim, n_classes, **options)
