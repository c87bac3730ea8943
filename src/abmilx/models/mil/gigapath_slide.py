"""Prov-GigaPath slide encoder (`gigapath_slide_enc12l768d`, LongNet) + Linear head as a MIL model.

The official model is gigapath's `LongNetViT` on torchscale's LongNet encoder (flash-attention
dilated attention). This is a plain-PyTorch re-implementation with the same parameter names
(`patch_embed.proj`, `cls_token`, `encoder.layers.i.self_attn.q_proj`, `...inner_attn_ln`,
`...ffn.fc1`, `...ffn.ffn_layernorm`, `encoder.layer_norm`, `norm`), so the released
`slide_encoder.pth` loads, and with the same numerics:

- Dilated attention: for each (segment length, dilation ratio) branch the sequence is cut into
  segments; in a branch with ratio r the heads form r groups and group j attends among the
  positions j, j+r, j+2r, ... of each segment (dense attention inside). Branch outputs are
  mixed per position and head by softmax over their log-sum-exp, which torchscale computes
  without gradient; so does this module.
- torchscale pads each segment with zero keys/values that are not masked; they add exp(0)
  per padded key to the softmax denominator. Their number is added analytically here (the
  released segment lengths reach 1,048,576, far too long to materialise).
- Release settings: 16 heads, FFN 3072 with sub-LayerNorm, segment lengths
  [1024, 5792, 32768, 185363, 1048576] (gigapath's `get_optimal_segment_length` for
  262144-px slides in 256-px tiles), dilation ratios [1, 2, 4, 8, 16], dropout 0.25,
  drop path 0.1, CLS token after the final `norm` as the slide embedding.
- Positions: 2-D sin-cos (MAE) embedding of the tile grid index floor(coords / tile_size) on a
  1000 x 1000 grid, computed on the fly rather than read from the 1M-row table the release
  keeps as a buffer (its rows are the same function). The CLS token's position row is zero.
  Without `coords` all instances get that zero row, i.e. no position information.
"""

from __future__ import annotations

import math
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from ..encoders.swin import DropPath
from ..registry import register_mil
from ..weights import load_matching, read_checkpoint, strip_prefixes
from .base import MILOutput, as_bag_batch

SEGMENT_LENGTHS = (1024, 5792, 32768, 185363, 1048576)
DILATION_RATIOS = (1, 2, 4, 8, 16)
UNCOVERED = -1e8  # torchscale's log-sum-exp for positions a branch does not compute
SCORE_BUDGET = 2**24  # attention-score elements per chunk of queries (bounds memory)


def sincos_1d(dim: int, positions: torch.Tensor) -> torch.Tensor:
    """MAE 1-D sin-cos embedding: (..., ) -> (..., dim), [sin | cos] of positions * omega."""
    omega = 1.0 / 10000 ** (torch.arange(dim // 2, device=positions.device) / (dim / 2.0))
    angles = positions.float()[..., None] * omega
    return torch.cat([angles.sin(), angles.cos()], dim=-1)


def grid_position_embedding(dim: int, grid_xy: torch.Tensor) -> torch.Tensor:
    """Row `x * ngrids + y` of MAE's 2-D table: first half encodes y, second half x."""
    return torch.cat(
        [sincos_1d(dim // 2, grid_xy[..., 1]), sincos_1d(dim // 2, grid_xy[..., 0])], -1
    )


class DilatedAttention(nn.Module):
    def __init__(self, dim: int, num_heads: int, segment_lengths, dilation_ratios):
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"dim {dim} is not divisible by num_heads {num_heads}")
        if len(segment_lengths) != len(dilation_ratios):
            raise ValueError("segment_lengths and dilation_ratios must have the same length")
        self.num_heads, self.head_dim = num_heads, dim // num_heads
        self.branches = list(zip(segment_lengths, dilation_ratios, strict=True))
        self.k_proj, self.v_proj = nn.Linear(dim, dim), nn.Linear(dim, dim)
        self.q_proj, self.out_proj = nn.Linear(dim, dim), nn.Linear(dim, dim)
        self.inner_attn_ln = nn.LayerNorm(dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, length, dim = x.shape
        q, k, v = (
            p(x).view(b, length, self.num_heads, -1)
            for p in (self.q_proj, self.k_proj, self.v_proj)
        )
        outs, lses = zip(*(self._branch(q, k, v, sl, r) for sl, r in self.branches), strict=True)
        with torch.no_grad():
            mix = torch.softmax(torch.stack(lses), dim=0)  # (branches, B, L, H)
        out = sum(o * w.unsqueeze(-1).to(o.dtype) for o, w in zip(outs, mix, strict=True))
        return self.out_proj(self.inner_attn_ln(out.reshape(b, length, dim)))

    def _branch(self, q, k, v, segment: int, ratio: int):
        """One (segment, ratio) branch: output (B,L,H,d) and log-sum-exp (B,L,H)."""
        b, length, heads, d = q.shape
        n_seg = math.ceil(length / segment)
        seg_len = segment if n_seg > 1 else length  # positions past the end are zero keys
        rows = math.ceil(seg_len / ratio)  # positions per offset inside a segment

        def split(t):  # (B, L, H, d) -> (B, segments, rows, ratio, H, d)
            t = F.pad(t, (0, 0, 0, 0, 0, n_seg * seg_len - length)).view(
                b, n_seg, seg_len, heads, d
            )
            return F.pad(t, (0, 0, 0, 0, 0, rows * ratio - seg_len)).view(
                b, n_seg, rows, ratio, heads, d
            )

        qs, ks, vs = split(q), split(k), split(v)
        local = torch.arange(rows * ratio, device=q.device).view(rows, ratio)
        start = torch.arange(n_seg, device=q.device).view(-1, 1, 1) * seg_len
        real = (local < seg_len) & (start + local < length)  # (segments, rows, ratio)
        keys_in_release = math.ceil(segment / ratio)  # release pads every segment to this
        out = q.new_zeros(b, n_seg, rows, ratio, heads, d)
        lse = q.new_full((b, n_seg, rows, ratio, heads), UNCOVERED, dtype=torch.float32)
        per_group = math.ceil(heads / ratio)
        for offset in range(min(ratio, math.ceil(heads / per_group))):
            hs = slice(offset * per_group, (offset + 1) * per_group)
            valid = real[:, :, offset]  # (segments, rows)
            zero_keys = (keys_in_release - valid.sum(-1)).float()  # (segments,)
            o, s = self._attend(
                qs[:, :, :, offset, hs],
                ks[:, :, :, offset, hs],
                vs[:, :, :, offset, hs],
                valid,
                zero_keys,
            )
            out[:, :, :, offset, hs] = o
            lse[:, :, :, offset, hs] = s
        out = out.view(b, n_seg, rows * ratio, heads, d)[:, :, :seg_len].reshape(b, -1, heads, d)
        lse = lse.view(b, n_seg, rows * ratio, heads)[:, :, :seg_len].reshape(b, -1, heads)
        return out[:, :length], lse[:, :length]

    def _attend(self, q, k, v, valid, zero_keys):
        """Dense attention of (B, S, M, h, d) inside each segment, plus `zero_keys` extra keys of
        score 0 and value 0; returns output (B,S,M,h,d) and log-sum-exp (B,S,M,h). Computed in
        float32 (as flash attention accumulates): counts up to 65536 overflow float16."""
        dtype = q.dtype
        q, k, v = (t.permute(0, 1, 3, 2, 4).float() for t in (q, k, v))  # (B, S, h, M, d)
        key_bias = torch.zeros(valid.shape, device=q.device)
        key_bias = key_bias.masked_fill(~valid, float("-inf"))[:, None, None, :]  # (S,1,1,M)
        log_zero = zero_keys.log()[:, None, None, None]  # (S,1,1,1); -inf when none
        step = max(1, SCORE_BUDGET // max(1, q.shape[0] * q.shape[1] * q.shape[2] * k.shape[3]))
        outs, lses = [], []
        for i in range(0, q.shape[3], step):
            scores = q[:, :, :, i : i + step] @ k.transpose(-2, -1) * self.head_dim**-0.5
            scores = scores + key_bias
            lse = torch.logaddexp(torch.logsumexp(scores, dim=-1, keepdim=True), log_zero)
            outs.append(torch.exp(scores - lse) @ v)
            lses.append(lse.squeeze(-1))
        out, lse = torch.cat(outs, dim=3), torch.cat(lses, dim=3)
        return out.permute(0, 1, 3, 2, 4).to(dtype), lse.permute(0, 1, 3, 2)


class FeedForward(nn.Module):
    """torchscale FFN: fc1 -> GELU -> sub-LayerNorm -> fc2 -> dropout."""

    def __init__(self, dim: int, hidden: int, dropout: float):
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(dim, hidden), nn.Linear(hidden, dim)
        self.ffn_layernorm = nn.LayerNorm(hidden)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dropout(self.fc2(self.ffn_layernorm(F.gelu(self.fc1(x)))))


class EncoderLayer(nn.Module):
    """Pre-LN: x + DropPath(Dropout(DilatedAttn(LN x))); x + DropPath(FFN(LN x))."""

    def __init__(self, dim, num_heads, segment_lengths, dilation_ratios, dropout, drop_path):
        super().__init__()
        self.self_attn = DilatedAttention(dim, num_heads, segment_lengths, dilation_ratios)
        self.self_attn_layer_norm = nn.LayerNorm(dim)
        self.dropout_module = nn.Dropout(dropout)
        self.drop_path = DropPath(drop_path)
        self.ffn = FeedForward(dim, 4 * dim, dropout)
        self.final_layer_norm = nn.LayerNorm(dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.drop_path(self.dropout_module(self.self_attn(self.self_attn_layer_norm(x))))
        return x + self.drop_path(self.ffn(self.final_layer_norm(x)))


class LongNetEncoder(nn.Module):
    def __init__(self, dim, depth, num_heads, segment_lengths, dilation_ratios, dropout, drop_path):
        super().__init__()
        self.dropout_module = nn.Dropout(dropout)
        rates = [drop_path * i / max(depth - 1, 1) for i in range(depth)]  # torch.linspace
        self.layers = nn.ModuleList(
            EncoderLayer(dim, num_heads, segment_lengths, dilation_ratios, dropout, rate)
            for rate in rates
        )
        self.layer_norm = nn.LayerNorm(dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.dropout_module(x)
        for layer in self.layers:
            x = layer(x)
        return self.layer_norm(x)


class PatchEmbed(nn.Module):
    def __init__(self, in_dim: int, dim: int):
        super().__init__()
        self.proj = nn.Linear(in_dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x)


class GigaPathSlide(nn.Module):
    """Linear(in_dim -> dim) + 2-D sin-cos positions, CLS, LongNet, LayerNorm, CLS -> Linear."""

    def __init__(
        self,
        in_dim: int,
        n_classes: int,
        *,
        dim: int = 768,
        depth: int = 12,
        num_heads: int = 16,
        segment_lengths: tuple[int, ...] = SEGMENT_LENGTHS,
        dilation_ratios: tuple[int, ...] = DILATION_RATIOS,
        dropout: float = 0.25,
        drop_path: float = 0.1,
        tile_size: int = 256,
        weights: str | Path | None = None,
    ):
        super().__init__()
        self.dim, self.tile_size = dim, tile_size
        self.patch_embed = PatchEmbed(in_dim, dim)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.encoder = LongNetEncoder(
            dim,
            depth,
            num_heads,
            tuple(segment_lengths),
            tuple(dilation_ratios),
            dropout,
            drop_path,
        )
        self.norm = nn.LayerNorm(dim)
        self.classifier = nn.Linear(dim, n_classes)
        self._init_weights()
        self.load_report: dict[str, list[str]] = {"missing": [], "unexpected": []}
        if weights is not None:
            state = strip_prefixes(read_checkpoint(weights), ("module.", "slide_encoder."))
            own = self.state_dict()
            state = {  # a head trained for another task is replaced, not loaded
                k: v
                for k, v in state.items()
                if not (k.startswith("classifier.") and v.shape != own.get(k, v).shape)
            }
            self.load_report = load_matching(
                self,
                state,
                str(weights),
                ignore_unexpected=("pos_embed", "reg_token", "mask_token"),
            )

    def _init_weights(self) -> None:
        """gigapath: xavier-uniform Linears, zero biases, normal(0.02) CLS token."""
        nn.init.normal_(self.cls_token, std=0.02)
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.xavier_uniform_(module.weight)
                nn.init.zeros_(module.bias)

    def forward(self, x: torch.Tensor, coords: torch.Tensor | None = None) -> MILOutput:
        x = self.patch_embed(as_bag_batch(x))
        if coords is not None:
            coords = coords.unsqueeze(0) if coords.dim() == 2 else coords
            grid = torch.div(coords, self.tile_size, rounding_mode="floor")
            x = x + grid_position_embedding(self.dim, grid.to(x.device)).to(x.dtype)
        x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1).to(x.dtype), x], dim=1)
        slide = self.norm(self.encoder(x))[:, 0]
        return MILOutput(self.classifier(slide), None, slide)


@register_mil("gigapath_slide")
def gigapath_slide(in_dim: int, n_classes: int, **options) -> GigaPathSlide:
    """Release architecture by default; `depth`/`dim`/`num_heads` options for small models.
    `weights`: local `slide_encoder.pth` (or a fine-tuned checkpoint with `slide_encoder.`
    keys); the head is new unless the checkpoint has `classifier.*` of the right shape."""
    return GigaPathSlide(in_dim, n_classes, **options)
