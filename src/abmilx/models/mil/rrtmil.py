"""RRT-MIL (Tang et al., 2024): re-embed instances with regional attention, then ABMIL.

Encoder (official `RRTEncoder` with n_layers 2 = one R-MSA layer + one CR-MSA layer):
  the N tokens are zero-padded to a square grid of side ceil(sqrt(N)) rounded up to a multiple
  of region_num, which is cut into region_num x region_num square regions (8 x 8 = 64 by
  default, as the official padding rule does);
  R-MSA: multi-head self-attention inside each region, with EPEG: the attention logits get a
    depthwise (k x 1) conv over the logit map added before the softmax;
  CR-MSA: per region, k representatives R = softmax_p(X phi)^T X (phi: dim x k); multi-head
    attention across regions among the representatives of the same index; redistribution
    out_p = sum_k minmax_p(X phi)_pk softmax_k(X phi)_pk R'_k;
  each layer is x + Attn(LN(x)); the encoder ends with LN.
Pooling: ABMIL with a bias-free Linear(512->128) + ReLU + Linear(128->1); Linear(512->C).
The padding tokens take part in the attention but are dropped before pooling.
Not invariant to instance order (regions follow it).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from ..registry import register_mil
from .base import InstanceEmbedding, MILOutput, as_bag_batch, init_linears_xavier


class MultiHeadSelfAttention(nn.Module):
    """qkv -> softmax(q k^T / sqrt(d) [+ EPEG conv of the logits]) v -> proj -> Dropout."""

    def __init__(self, dim: int, n_heads: int, dropout: float, epeg_kernel: int | None):
        super().__init__()
        self.n_heads, self.head_dim = n_heads, dim // n_heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Sequential(nn.Linear(dim, dim), nn.Dropout(dropout))
        self.epeg = (
            nn.Conv2d(
                n_heads,
                n_heads,
                (epeg_kernel, 1),
                padding=(epeg_kernel // 2, 0),
                groups=n_heads,
            )
            if epeg_kernel
            else None
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (batch of sequences, length, dim)."""
        q, k, v = (
            t.unflatten(-1, (self.n_heads, self.head_dim)).transpose(1, 2)
            for t in self.qkv(x).chunk(3, dim=-1)
        )
        logits = q @ k.transpose(-2, -1) / math.sqrt(self.head_dim)
        if self.epeg is not None:
            logits = logits + self.epeg(logits)
        mixed = torch.softmax(logits, dim=-1) @ v
        return self.proj(mixed.transpose(1, 2).flatten(2))


def to_regions(x: torch.Tensor, region_num: int):
    """(B, N, C) -> zero-padded regions (B, region_num^2, region_size^2, C) and region_size."""
    batch, n_tokens, dim = x.shape
    side = math.ceil(math.sqrt(n_tokens))
    side += -side % region_num
    size = side // region_num
    grid = F.pad(x, (0, 0, 0, side * side - n_tokens)).view(batch, side, side, dim)
    regions = grid.view(batch, region_num, size, region_num, size, dim).transpose(2, 3)
    return regions.reshape(batch, region_num * region_num, size * size, dim), size


def from_regions(regions: torch.Tensor, region_num: int, size: int, n_tokens: int):
    """Inverse of `to_regions`, dropping the padding."""
    batch, dim = regions.shape[0], regions.shape[-1]
    grid = regions.view(batch, region_num, region_num, size, size, dim).transpose(2, 3)
    return grid.reshape(batch, -1, dim)[:, :n_tokens]


class RegionAttention(nn.Module):
    """R-MSA: self-attention inside each region, with EPEG."""

    def __init__(self, dim, n_heads, dropout, region_num, epeg_kernel):
        super().__init__()
        self.region_num = region_num
        self.attention = MultiHeadSelfAttention(dim, n_heads, dropout, epeg_kernel)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        regions, size = to_regions(x, self.region_num)
        mixed = self.attention(regions.flatten(0, 1)).view(regions.shape)
        return from_regions(mixed, self.region_num, size, x.shape[1])


class CrossRegionAttention(nn.Module):
    """CR-MSA: attention across regions between k learned per-region representatives."""

    def __init__(self, dim, n_heads, dropout, region_num, n_representatives):
        super().__init__()
        self.region_num = region_num
        self.phi = nn.Parameter(torch.empty(dim, n_representatives))
        nn.init.kaiming_uniform_(self.phi, a=math.sqrt(5))
        self.attention = MultiHeadSelfAttention(dim, n_heads, dropout, epeg_kernel=None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        regions, size = to_regions(x, self.region_num)  # (B, R, P, C)
        logits = regions @ self.phi  # (B, R, P, K)
        combine = torch.softmax(logits, dim=2)
        dispatch = torch.softmax(logits, dim=3)
        low, high = logits.amin(2, keepdim=True), logits.amax(2, keepdim=True)
        dispatch = dispatch * (logits - low) / (high - low + 1e-8)
        representatives = combine.transpose(2, 3) @ regions  # (B, R, K, C)
        across = representatives.transpose(1, 2)  # (B, K, R, C): attend across regions
        mixed = self.attention(across.flatten(0, 1)).view(across.shape).transpose(1, 2)
        spread = dispatch @ mixed  # (B, R, P, C)
        return from_regions(spread, self.region_num, size, x.shape[1])


class RRTMIL(nn.Module):
    """Official `RRTMIL` defaults; 2.697 M parameters for in_dim 1024 and 2 classes (paper
    2.70 M)."""

    def __init__(
        self,
        in_dim: int,
        n_classes: int,
        *,
        hidden_dim: int = 512,
        n_heads: int = 8,
        region_num: int = 8,
        epeg_kernel: int = 15,
        crmsa_k: int = 3,
        attn_dropout: float = 0.1,
        attn_dim: int = 128,
        act: str = "relu",
        dropout: float = 0.25,
        mil_norm: str | None = "none",
        mil_bias: bool = True,
    ):
        super().__init__()
        self.embed = InstanceEmbedding(in_dim, hidden_dim, act, dropout, mil_norm, mil_bias)
        self.layer_norms = nn.ModuleList(nn.LayerNorm(hidden_dim) for _ in range(2))
        self.region_attention = RegionAttention(
            hidden_dim, n_heads, attn_dropout, region_num, epeg_kernel
        )
        self.cross_region_attention = CrossRegionAttention(
            hidden_dim, n_heads, attn_dropout, region_num, crmsa_k
        )
        self.encoder_norm = nn.LayerNorm(hidden_dim)
        self.attention = nn.Sequential(
            nn.Linear(hidden_dim, attn_dim, bias=False),
            nn.ReLU(),
            nn.Linear(attn_dim, 1, bias=False),
        )
        self.classifier = nn.Linear(hidden_dim, n_classes, bias=mil_bias)
        init_linears_xavier(self)

    def forward(self, x: torch.Tensor, coords: torch.Tensor | None = None) -> MILOutput:
        h = self.embed(as_bag_batch(x))  # (B, N, hidden)
        h = h + self.region_attention(self.layer_norms[0](h))
        h = h + self.cross_region_attention(self.layer_norms[1](h))
        h = self.encoder_norm(h)
        attention = torch.softmax(self.attention(h).transpose(1, 2), dim=-1)  # (B, 1, N)
        slide = (attention @ h).squeeze(1)
        return MILOutput(self.classifier(slide), attention, slide)


@register_mil("rrtmil")
def rrtmil(in_dim: int, n_classes: int, **options) -> RRTMIL:
    return RRTMIL(in_dim, n_classes, **options)
