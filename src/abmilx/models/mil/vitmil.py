"""ViTMIL: a CLS token attending to the instances through a few pre-LN attention layers.

`attn_type="sa"` (the paper's "ViTMIL", 2 layers): CLS and instances self-attend, no FFN.
`attn_type="ca"` (the paper's "QAMIL", 1 layer): only the CLS query cross-attends to the
instances, which are not updated. Attention is the CLS row of the last layer; for "sa" its
weight on the CLS token itself is removed and the rest renormalised over instances.
No positional encoding, so both are invariant to instance order.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..registry import register_mil
from .base import InstanceEmbedding, MILOutput, as_bag_batch, check_choice, init_linears_xavier


class MultiHeadAttention(nn.Module):
    """Multi-head attention on SDPA (O(N) memory), also returning the first query's weights."""

    def __init__(self, dim: int, n_heads: int, attn_dropout: float):
        super().__init__()
        if dim % n_heads:
            raise ValueError(f"hidden_dim {dim} is not divisible by n_heads {n_heads}")
        self.n_heads, self.head_dim = n_heads, dim // n_heads
        self.attn_dropout = attn_dropout
        self.q = nn.Linear(dim, dim)
        self.kv = nn.Linear(dim, 2 * dim)
        self.out = nn.Linear(dim, dim)

    def _split(self, x: torch.Tensor) -> torch.Tensor:
        return x.view(x.shape[0], x.shape[1], self.n_heads, self.head_dim).transpose(1, 2)

    def forward(self, queries: torch.Tensor, keys: torch.Tensor):
        q = self._split(self.q(queries))
        k, v = (self._split(t) for t in self.kv(keys).chunk(2, dim=-1))
        dropout = self.attn_dropout if self.training else 0.0
        context = F.scaled_dot_product_attention(q, k, v, dropout_p=dropout)
        first_query = torch.softmax(q[:, :, :1] @ k.transpose(-2, -1) * self.head_dim**-0.5, -1)
        merged = context.transpose(1, 2).reshape(queries.shape)
        return self.out(merged), first_query.squeeze(2)  # (B, M, dim), (B, H, N_keys)


class TransformerMIL(nn.Module):
    """Embedding -> CLS token -> `n_layers` x (x + MHA(LN(x))) -> LN(CLS) -> Linear."""

    def __init__(
        self,
        in_dim: int,
        n_classes: int,
        *,
        attn_type: str = "sa",
        n_layers: int = 2,
        hidden_dim: int = 512,
        n_heads: int = 8,
        attn_dropout: float = 0.0,
        act: str = "relu",
        dropout: float = 0.25,
        mil_norm: str | None = "none",
        mil_bias: bool = True,
    ):
        super().__init__()
        check_choice("attn_type", attn_type, ("sa", "ca"))
        self.attn_type = attn_type
        self.embed = InstanceEmbedding(in_dim, hidden_dim, act, dropout, mil_norm, mil_bias)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, hidden_dim))
        self.norms = nn.ModuleList(nn.LayerNorm(hidden_dim) for _ in range(n_layers))
        self.layers = nn.ModuleList(
            MultiHeadAttention(hidden_dim, n_heads, attn_dropout) for _ in range(n_layers)
        )
        self.norm = nn.LayerNorm(hidden_dim)
        self.classifier = nn.Linear(hidden_dim, n_classes, bias=mil_bias)
        init_linears_xavier(self)
        nn.init.normal_(self.cls_token, std=0.02)

    def forward(self, x: torch.Tensor, coords: torch.Tensor | None = None) -> MILOutput:
        h = self.embed(as_bag_batch(x))
        cls = self.cls_token.expand(h.shape[0], -1, -1)
        if self.attn_type == "ca":
            for norm, layer in zip(self.norms, self.layers, strict=True):
                update, attention = layer(norm(cls), norm(h))
                cls = cls + update
        else:
            tokens = torch.cat([cls, h], dim=1)
            for norm, layer in zip(self.norms, self.layers, strict=True):
                normed = norm(tokens)
                update, attention = layer(normed, normed)
                tokens = tokens + update
            cls = tokens[:, :1]
            attention = attention[..., 1:] / attention[..., 1:].sum(-1, keepdim=True)
        slide = self.norm(cls.squeeze(1))
        return MILOutput(self.classifier(slide), attention, slide)


@register_mil("vitmil")
def vitmil(in_dim: int, n_classes: int, **options) -> TransformerMIL:
    return TransformerMIL(in_dim, n_classes, **{"attn_type": "sa", "n_layers": 2, **options})
