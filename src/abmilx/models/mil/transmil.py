"""TransMIL (Shao et al., 2021): CLS token, two Nyström self-attention layers around a PPEG.

Forward: h = embed(x); pad the N instances to a square S = ceil(sqrt(N))^2 by repeating the
first S - N of them; prepend a CLS token; x + NA(LN(x)); PPEG (7/5/3 depthwise convs on the
sqrt(S) x sqrt(S) grid plus identity); x + NA(LN(x)); LN(CLS) -> Linear.

Nyström attention (Xiong et al., 2021), per head with q scaled by 1/sqrt(d):
  the sequence is zero-padded at the front to a multiple of m landmarks; landmarks are the
  means of m consecutive groups of q and k;
  F = softmax(q K~^T), A = softmax(Q~ K~^T), B = softmax(Q~ k^T);
  out = F pinv(A) (B v) + DepthwiseConv(33 x 1)(v),  pinv by 6 Newton-Schulz iterations.
The iterative pinv starts from A^T / (max row sum * max column sum). ``pinv_scale="batch"``
(default) takes both maxima over the whole (batch, heads) tensor, as the official Nyström
attention does ("over the whole batch"); ``"slide"`` takes them per slide and head, which makes
a slide's output independent of its batch mates.

Attention output: the CLS row of the last layer's F pinv(A) B, over the N real instance keys
only (not the CLS, the square-padding repeats or the front zeros), clipped at 0 (the Nyström
product is not guaranteed non-negative) and renormalised to sum to 1.
Not invariant to instance order (the PPEG grid follows it).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from ..registry import register_mil
from .base import InstanceEmbedding, MILOutput, as_bag_batch, init_linears_xavier

PINV_SCALES = ("batch", "slide")


def iterative_pinv(matrix: torch.Tensor, iterations: int, scale: str = "batch") -> torch.Tensor:
    """Moore-Penrose pseudo-inverse of each (..., m, m) matrix by Newton-Schulz iterations.

    ``scale`` says over what the starting point's maxima are taken: ``"batch"`` over the whole
    tensor (the official code), ``"slide"`` over each matrix.
    """
    if scale not in PINV_SCALES:
        raise ValueError(f"pinv scale must be one of {PINV_SCALES}, got {scale!r}")
    abs_matrix = matrix.abs()
    if scale == "batch":
        max_row_sum, max_col_sum = abs_matrix.sum(-1).amax(), abs_matrix.sum(-2).amax()
    else:
        max_row_sum = abs_matrix.sum(-1).amax(-1, keepdim=True)[..., None]
        max_col_sum = abs_matrix.sum(-2).amax(-1, keepdim=True)[..., None]
    z = matrix.transpose(-2, -1) / (max_row_sum * max_col_sum)
    identity = torch.eye(matrix.shape[-1], device=matrix.device, dtype=matrix.dtype)
    for _ in range(iterations):
        mz = matrix @ z
        z = 0.25 * z @ (13 * identity - mz @ (15 * identity - mz @ (7 * identity - mz)))
    return z


class NystromAttention(nn.Module):
    """Multi-head Nyström self-attention with a depthwise residual conv on the values."""

    def __init__(
        self,
        dim: int,
        n_heads: int = 8,
        head_dim: int = 64,
        n_landmarks: int = 256,
        pinv_iterations: int = 6,
        residual_kernel: int = 33,
        dropout: float = 0.1,
        pinv_scale: str = "batch",
    ):
        super().__init__()
        if pinv_scale not in PINV_SCALES:
            raise ValueError(f"pinv_scale must be one of {PINV_SCALES}, got {pinv_scale!r}")
        self.pinv_scale = pinv_scale
        self.n_heads, self.head_dim = n_heads, head_dim
        self.n_landmarks, self.pinv_iterations = n_landmarks, pinv_iterations
        self.qkv = nn.Linear(dim, 3 * n_heads * head_dim, bias=False)
        self.out = nn.Sequential(nn.Linear(n_heads * head_dim, dim), nn.Dropout(dropout))
        self.residual = nn.Conv2d(
            n_heads,
            n_heads,
            (residual_kernel, 1),
            padding=(residual_kernel // 2, 0),
            groups=n_heads,
            bias=False,
        )

    def forward(self, x: torch.Tensor, query_index: int = 0):
        """x: (B, n, dim) -> (B, n, dim) and the approximate attention row of token
        `query_index` over all n tokens, (B, heads, n)."""
        batch, n_tokens, _ = x.shape
        front = -n_tokens % self.n_landmarks
        x = F.pad(x, (0, 0, front, 0))
        q, k, v = (
            t.view(batch, -1, self.n_heads, self.head_dim).transpose(1, 2)
            for t in self.qkv(x).chunk(3, dim=-1)
        )
        q = q / math.sqrt(self.head_dim)
        group = x.shape[1] // self.n_landmarks
        q_landmarks = q.unflatten(2, (self.n_landmarks, group)).mean(dim=3)
        k_landmarks = k.unflatten(2, (self.n_landmarks, group)).mean(dim=3)
        to_landmarks = torch.softmax(q @ k_landmarks.transpose(-2, -1), dim=-1)
        between = iterative_pinv(
            torch.softmax(q_landmarks @ k_landmarks.transpose(-2, -1), dim=-1),
            self.pinv_iterations,
            self.pinv_scale,
        )
        from_landmarks = torch.softmax(q_landmarks @ k.transpose(-2, -1), dim=-1)
        mixed = (to_landmarks @ between) @ (from_landmarks @ v) + self.residual(v)
        merged = mixed.transpose(1, 2).reshape(batch, -1, self.n_heads * self.head_dim)
        query = front + query_index
        row = (to_landmarks[:, :, query : query + 1] @ between @ from_landmarks).squeeze(2)
        return self.out(merged[:, front:]), row[..., front:]


class PPEG(nn.Module):
    """Pyramid position encoding: identity + depthwise 7x7, 5x5 and 3x3 convs on the grid."""

    def __init__(self, dim: int):
        super().__init__()
        self.convs = nn.ModuleList(
            nn.Conv2d(dim, dim, k, padding=k // 2, groups=dim) for k in (7, 5, 3)
        )

    def forward(self, tokens: torch.Tensor, side: int) -> torch.Tensor:
        cls, grid_tokens = tokens[:, :1], tokens[:, 1:]
        grid = grid_tokens.transpose(1, 2).unflatten(2, (side, side))
        grid = grid + sum(conv(grid) for conv in self.convs)
        return torch.cat([cls, grid.flatten(2).transpose(1, 2)], dim=1)


class TransMIL(nn.Module):
    """TransMIL of the official code; 2.672 M parameters for in_dim 1024 and 2 classes (paper
    2.67 M)."""

    def __init__(
        self,
        in_dim: int,
        n_classes: int,
        *,
        hidden_dim: int = 512,
        n_heads: int = 8,
        head_dim: int = 64,
        n_landmarks: int = 256,
        pinv_iterations: int = 6,
        pinv_scale: str = "batch",
        attn_dropout: float = 0.1,
        act: str = "relu",
        dropout: float = 0.25,
        mil_norm: str | None = "none",
        mil_bias: bool = True,
    ):
        super().__init__()
        self.embed = InstanceEmbedding(in_dim, hidden_dim, act, dropout, mil_norm, mil_bias)
        self.cls_token = nn.Parameter(torch.empty(1, 1, hidden_dim))
        self.layer_norms = nn.ModuleList(nn.LayerNorm(hidden_dim) for _ in range(2))
        self.layers = nn.ModuleList(
            NystromAttention(
                hidden_dim,
                n_heads,
                head_dim,
                n_landmarks,
                pinv_iterations,
                dropout=attn_dropout,
                pinv_scale=pinv_scale,
            )
            for _ in range(2)
        )
        self.position = PPEG(hidden_dim)
        self.norm = nn.LayerNorm(hidden_dim)
        self.classifier = nn.Linear(hidden_dim, n_classes, bias=mil_bias)
        init_linears_xavier(self)
        nn.init.normal_(self.cls_token)

    def forward(self, x: torch.Tensor, coords: torch.Tensor | None = None) -> MILOutput:
        h = self.embed(as_bag_batch(x))  # (B, N, hidden)
        n_instances = h.shape[1]
        side = math.ceil(math.sqrt(n_instances))
        repeats = torch.arange(side * side - n_instances, device=h.device) % n_instances
        tokens = torch.cat([self.cls_token.expand(h.shape[0], -1, -1), h, h[:, repeats]], dim=1)
        update, _ = self.layers[0](self.layer_norms[0](tokens))
        tokens = self.position(tokens + update, side)
        update, cls_row = self.layers[1](self.layer_norms[1](tokens))
        slide = self.norm(tokens + update)[:, 0]
        attention = cls_row[..., 1 : n_instances + 1].clamp(min=0)
        attention = attention / attention.sum(-1, keepdim=True).clamp(min=1e-12)
        return MILOutput(self.classifier(slide), attention, slide)


@register_mil("transmil")
def transmil(in_dim: int, n_classes: int, **options) -> TransMIL:
    return TransMIL(in_dim, n_classes, **options)
