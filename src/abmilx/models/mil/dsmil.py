"""DSMIL (Li et al., 2021): max-instance classifier plus critical-instance attention.

Per slide, h = embed(x) (N x 512):
  s = W_i h                       instance scores (N x C); the critical instance of class c is
                                  m_c = argmax_i s_ic (a hard choice: W_i learns only via aux)
  q = tanh(W_2 relu(W_1 h))       queries (N x 128), v = relu(W_v h) (N x 512)
  A_ic = softmax_i(q_i . q_{m_c} / sqrt(128))
  b_c = sum_i A_ic v_i;   y = Conv1d(C, C, kernel 512)(b)   bag logits (C)
The official loss is 0.5 * CE(y) + 0.5 * CE(max_i s_i); `aux_loss` is the second CE, so the
trainer uses aux_weight = 1 (both halves scaled by 2). Invariant to instance order (up to
exact ties of the instance scores).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from ..registry import register_mil
from .base import InstanceEmbedding, MILOutput, as_bag_batch, init_linears_xavier, training_labels


class DSMIL(nn.Module):
    """MILNet of the official code. 0.873 M parameters for in_dim 1024 and 2 classes (paper
    0.87 M)."""

    def __init__(
        self,
        in_dim: int,
        n_classes: int,
        *,
        hidden_dim: int = 512,
        query_dim: int = 128,
        act: str = "relu",
        dropout: float = 0.25,
        value_dropout: float = 0.0,
        mil_norm: str | None = "none",
        mil_bias: bool = True,
    ):
        super().__init__()
        self.embed = InstanceEmbedding(in_dim, hidden_dim, act, dropout, mil_norm, mil_bias)
        self.instance_classifier = nn.Linear(hidden_dim, n_classes)
        self.query = nn.Sequential(
            nn.Linear(hidden_dim, query_dim),
            nn.ReLU(),
            nn.Linear(query_dim, query_dim),
            nn.Tanh(),
        )
        self.value = nn.Sequential(
            nn.Dropout(value_dropout), nn.Linear(hidden_dim, hidden_dim), nn.ReLU()
        )
        self.classifier = nn.Conv1d(n_classes, n_classes, kernel_size=hidden_dim, bias=mil_bias)
        init_linears_xavier(self)

    def forward(
        self,
        x: torch.Tensor,
        coords: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
    ) -> MILOutput:
        h = self.embed(as_bag_batch(x))  # (B, N, hidden)
        instance_scores = self.instance_classifier(h)  # (B, N, C)
        queries = self.query(h)  # (B, N, q)
        critical = instance_scores.argmax(dim=1)  # (B, C)
        critical_queries = queries.gather(
            1, critical[..., None].expand(-1, -1, queries.shape[-1])
        )  # (B, C, q)
        similarity = critical_queries @ queries.transpose(1, 2) / math.sqrt(queries.shape[-1])
        attention = torch.softmax(similarity, dim=-1)  # (B, C, N)
        bag = attention @ self.value(h)  # (B, C, hidden)
        logits = self.classifier(bag).squeeze(-1)  # (B, C)
        labels = training_labels(self, labels, h.shape[0])
        aux = None
        if labels is not None:
            aux = F.cross_entropy(instance_scores.amax(dim=1), labels.to(h.device))
        return MILOutput(logits, attention, bag.flatten(1), aux)


@register_mil("dsmil")
def dsmil(in_dim: int, n_classes: int, **options) -> DSMIL:
    return DSMIL(in_dim, n_classes, **options)
