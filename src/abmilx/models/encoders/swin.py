"""CTransPath (Wang et al. 2022), the patch encoder of CHIEF: Swin-T with a convolutional stem.

Parameter names follow timm 0.5.4's SwinTransformer with TransPath's `ConvStem` patch embedding,
so the released `ctranspath.pth` (`{"model": ...}`) loads without renaming. The checkpoint also
stores `relative_position_index` and `attn_mask` buffers; they are recomputed here for the
actual input size (any size, not only 224 px) and dropped from checkpoints on load. At 224 px
the computation is exactly timm's; other sizes pad to whole windows as the official Swin
detection backbone does.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from ..registry import register_encoder
from .common import NormalizingEncoder, load_weights
from .vit import Mlp


class DropPath(nn.Module):
    """Stochastic depth: drop the whole residual branch per sample in training."""

    def __init__(self, p: float):
        super().__init__()
        self.p = p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0:
            return x
        keep = x.new_empty((x.shape[0],) + (1,) * (x.dim() - 1)).bernoulli_(1 - self.p)
        return x * keep / (1 - self.p)


class ConvStem(nn.Module):
    """TransPath stem: two stride-2 3x3 conv+BN+ReLU (dim/8, dim/4), then 1x1 conv, LayerNorm."""

    def __init__(self, dim: int):
        super().__init__()
        layers: list[nn.Module] = []
        in_ch, out_ch = 3, dim // 8
        for _ in range(2):
            layers += [
                nn.Conv2d(in_ch, out_ch, 3, stride=2, padding=1, bias=False),
                nn.BatchNorm2d(out_ch),
                nn.ReLU(inplace=True),
            ]
            in_ch, out_ch = out_ch, out_ch * 2
        layers.append(nn.Conv2d(in_ch, dim, 1))
        self.proj = nn.Sequential(*layers)
        self.norm = nn.LayerNorm(dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.proj(x)
        return self.norm(x.permute(0, 2, 3, 1))  # (B, H, W, C)


class WindowAttention(nn.Module):
    def __init__(self, dim: int, num_heads: int, window: int):
        super().__init__()
        self.num_heads, self.window = num_heads, window
        self.relative_position_bias_table = nn.Parameter(
            torch.zeros((2 * window - 1) ** 2, num_heads)
        )
        nn.init.trunc_normal_(self.relative_position_bias_table, std=0.02)
        self.qkv, self.proj = nn.Linear(dim, 3 * dim), nn.Linear(dim, dim)

    def relative_bias(self, window: int) -> torch.Tensor:
        """(heads, w*w, w*w) bias of a window of side `window` <= the trained one."""
        coords = torch.stack(
            torch.meshgrid(torch.arange(window), torch.arange(window), indexing="ij")
        ).flatten(1)
        rel = (coords[:, :, None] - coords[:, None, :]) + self.window - 1
        index = rel[0] * (2 * self.window - 1) + rel[1]
        bias = self.relative_position_bias_table[index.to(self.relative_position_bias_table.device)]
        return bias.permute(2, 0, 1)

    def forward(self, x: torch.Tensor, window: int, mask: torch.Tensor | None) -> torch.Tensor:
        b, n, c = x.shape  # b = batch * windows
        q, k, v = self.qkv(x).view(b, n, 3, self.num_heads, -1).permute(2, 0, 3, 1, 4)
        bias = self.relative_bias(window).unsqueeze(0)  # (1, heads, n, n)
        if mask is not None:
            n_windows = mask.shape[0]
            bias = (bias.unsqueeze(0) + mask[None, :, None]).expand(b // n_windows, -1, -1, -1, -1)
            bias = bias.reshape(b, self.num_heads, n, n)
        x = F.scaled_dot_product_attention(q, k, v, attn_mask=bias.to(q.dtype))
        return self.proj(x.transpose(1, 2).reshape(b, n, c))


def window_partition(x: torch.Tensor, w: int) -> torch.Tensor:
    """(B, H, W, C) -> (B * H/w * W/w, w*w, C)."""
    b, h, wd, c = x.shape
    x = x.view(b, h // w, w, wd // w, w, c).permute(0, 1, 3, 2, 4, 5)
    return x.reshape(-1, w * w, c)


def window_reverse(x: torch.Tensor, w: int, b: int, h: int, wd: int) -> torch.Tensor:
    x = x.view(b, h // w, wd // w, w, w, -1).permute(0, 1, 3, 2, 4, 5)
    return x.reshape(b, h, wd, -1)


def shifted_window_mask(h: int, w: int, window: int, shift: int, device) -> torch.Tensor:
    """(windows, w*w, w*w) additive mask, -100 between regions that the cyclic shift joined."""
    regions = torch.zeros(1, h, w, 1, device=device)
    bands = (slice(0, -window), slice(-window, -shift), slice(-shift, None))
    for label, (rows, cols) in enumerate((r, c) for r in bands for c in bands):
        regions[:, rows, cols, :] = label
    labels = window_partition(regions, window).squeeze(-1)
    differ = labels[:, None, :] != labels[:, :, None]
    return torch.zeros(differ.shape, device=device).masked_fill(differ, -100.0)


class SwinBlock(nn.Module):
    def __init__(self, dim: int, num_heads: int, window: int, shift: bool, drop_path: float):
        super().__init__()
        self.window, self.shift = window, window // 2 if shift else 0
        self.norm1, self.attn = nn.LayerNorm(dim), WindowAttention(dim, num_heads, window)
        self.drop_path = DropPath(drop_path)
        self.norm2, self.mlp = nn.LayerNorm(dim), Mlp(dim, 4 * dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, h, w, _ = x.shape
        window, shift = self.window, self.shift
        if min(h, w) <= window:  # timm: one window covers the map, no shift
            window, shift = min(h, w), 0
        y = self.norm1(x)
        pad_h, pad_w = -h % window, -w % window
        y = F.pad(y, (0, 0, 0, pad_w, 0, pad_h))
        hp, wp = h + pad_h, w + pad_w
        mask = None
        if shift:
            y = torch.roll(y, (-shift, -shift), dims=(1, 2))
            mask = shifted_window_mask(hp, wp, window, shift, x.device)
        y = self.attn(window_partition(y, window), window, mask)
        y = window_reverse(y, window, b, hp, wp)
        if shift:
            y = torch.roll(y, (shift, shift), dims=(1, 2))
        x = x + self.drop_path(y[:, :h, :w])
        return x + self.drop_path(self.mlp(self.norm2(x)))


class PatchMerging(nn.Module):
    """2x2 neighbours concatenated (timm order x00, x10, x01, x11), LayerNorm, Linear 4C->2C."""

    def __init__(self, dim: int):
        super().__init__()
        self.norm, self.reduction = nn.LayerNorm(4 * dim), nn.Linear(4 * dim, 2 * dim, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.pad(x, (0, 0, 0, x.shape[2] % 2, 0, x.shape[1] % 2))
        x = torch.cat([x[:, 0::2, 0::2], x[:, 1::2, 0::2], x[:, 0::2, 1::2], x[:, 1::2, 1::2]], -1)
        return self.reduction(self.norm(x))


class SwinStage(nn.Module):
    def __init__(self, dim, depth, num_heads, window, drop_paths, downsample: bool):
        super().__init__()
        self.blocks = nn.ModuleList(
            SwinBlock(dim, num_heads, window, i % 2 == 1, drop_paths[i]) for i in range(depth)
        )
        self.downsample = PatchMerging(dim) if downsample else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for block in self.blocks:
            x = block(x)
        return x if self.downsample is None else self.downsample(x)


class CTransPath(NormalizingEncoder):
    """ConvStem + 4 Swin stages + LayerNorm + token average: (B,3,H,W) -> (B, 8*embed_dim)."""

    def __init__(
        self,
        embed_dim: int = 96,
        depths: tuple[int, ...] = (2, 2, 6, 2),
        num_heads: tuple[int, ...] = (3, 6, 12, 24),
        window: int = 7,
        drop_path_rate: float = 0.1,
    ):
        dims = [embed_dim * 2**i for i in range(len(depths))]
        super().__init__(out_dim=dims[-1], input_size=224)
        self.patch_embed = ConvStem(embed_dim)
        total = sum(depths)
        rates = [drop_path_rate * i / max(total - 1, 1) for i in range(total)]  # as linspace
        starts = [sum(depths[:i]) for i in range(len(depths))]
        self.layers = nn.ModuleList(
            SwinStage(
                dims[i],
                depths[i],
                num_heads[i],
                window,
                rates[starts[i] : starts[i] + depths[i]],
                downsample=i < len(depths) - 1,
            )
            for i in range(len(depths))
        )
        self.norm = nn.LayerNorm(dims[-1])
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.trunc_normal_(module.weight, std=0.02)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.patch_embed(x)
        for layer in self.layers:
            x = layer(x)
        return self.norm(x).mean(dim=(1, 2))


@register_encoder("chief")
def chief(
    weights: str | Path = "random",
    *,
    embed_dim: int = 96,
    depths: tuple[int, ...] = (2, 2, 6, 2),
    num_heads: tuple[int, ...] = (3, 6, 12, 24),
) -> CTransPath:
    """CTransPath/CHIEF patch encoder, 768-d at 224 px, ImageNet mean/std.

    `embed_dim`/`depths`/`num_heads` exist for small test models only. weights: a local
    `CHIEF_CTransPath.pth` / `ctranspath.pth` file or "random". There is no "hub": the weights
    are only distributed through the authors' download links (no timm or HF hub id).
    """
    model = CTransPath(embed_dim, tuple(depths), tuple(num_heads))
    no_hub = (
        "CTransPath/CHIEF has no Hugging Face hub id: download CHIEF_CTransPath.pth from the "
        "links in the CHIEF repository (github.com/hms-dbmi/CHIEF) and set the encoder weights "
        "to that file path, or choose weights: random."
    )
    load_weights(model, weights, None, no_hub, recomputed=("relative_position_index", "attn_mask"))
    return model
