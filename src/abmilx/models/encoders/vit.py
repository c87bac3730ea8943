"""Vision Transformers of the pathology foundation models UNI and Prov-GigaPath (tile encoder).

Parameter names follow timm's VisionTransformer (`patch_embed.proj`, `blocks.i.attn.qkv`,
`blocks.i.ls1.gamma`, ...), so the released `pytorch_model.bin` files load without renaming.
Both use the CLS token after the final LayerNorm as the patch feature (timm global_pool
"token", num_classes 0). Inputs of another size than the training size get a bicubic
resampled position embedding, as timm does with dynamic_img_size.
"""

from __future__ import annotations

from functools import partial
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from ..registry import register_encoder
from .common import NormalizingEncoder, load_weights, timm_hub_state_dict


class LayerScale(nn.Module):
    def __init__(self, dim: int, init_values: float):
        super().__init__()
        self.gamma = nn.Parameter(torch.full((dim,), init_values))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gamma


class Mlp(nn.Module):
    """fc1 -> GELU -> fc2 (timm Mlp)."""

    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.fc1, self.act, self.fc2 = nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class SwiGLUPacked(nn.Module):
    """timm GluMlp(gate_last=False, SiLU) of DINOv2-giant: fc1 packs value and gate halves."""

    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(dim, hidden), nn.Linear(hidden // 2, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate, value = self.fc1(x).chunk(2, dim=-1)
        return self.fc2(F.silu(gate) * value)


class Attention(nn.Module):
    def __init__(self, dim: int, num_heads: int):
        super().__init__()
        self.num_heads = num_heads
        self.qkv, self.proj = nn.Linear(dim, 3 * dim), nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, d = x.shape
        q, k, v = self.qkv(x).view(b, n, 3, self.num_heads, -1).permute(2, 0, 3, 1, 4)
        x = F.scaled_dot_product_attention(q, k, v)
        return self.proj(x.transpose(1, 2).reshape(b, n, d))


class Block(nn.Module):
    def __init__(self, dim: int, num_heads: int, mlp: nn.Module, init_values: float):
        super().__init__()
        norm = partial(nn.LayerNorm, eps=1e-6)
        self.norm1, self.attn = norm(dim), Attention(dim, num_heads)
        self.ls1 = LayerScale(dim, init_values)
        self.norm2, self.mlp, self.ls2 = norm(dim), mlp, LayerScale(dim, init_values)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.ls1(self.attn(self.norm1(x)))
        return x + self.ls2(self.mlp(self.norm2(x)))


class PatchEmbed(nn.Module):
    def __init__(self, patch_size: int, dim: int):
        super().__init__()
        self.proj = nn.Conv2d(3, dim, patch_size, stride=patch_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x)  # (B, D, H/p, W/p)


class ViTEncoder(NormalizingEncoder):
    """Pre-norm ViT with layer-scale and a class token: (B,3,H,W) -> CLS feature (B, dim)."""

    def __init__(
        self,
        *,
        dim: int,
        depth: int,
        num_heads: int,
        mlp_hidden: int,
        swiglu: bool,
        patch_size: int,
        img_size: int = 224,
        init_values: float = 1e-5,
    ):
        super().__init__(out_dim=dim, input_size=img_size)
        self.patch_size, self.grid = patch_size, img_size // patch_size
        self.patch_embed = PatchEmbed(patch_size, dim)
        self.cls_token = nn.Parameter(torch.empty(1, 1, dim))
        self.pos_embed = nn.Parameter(torch.empty(1, 1 + self.grid**2, dim))
        mlp = partial(SwiGLUPacked if swiglu else Mlp, dim, mlp_hidden)
        self.blocks = nn.ModuleList(Block(dim, num_heads, mlp(), init_values) for _ in range(depth))
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        self._init_weights()

    def _init_weights(self) -> None:
        """timm's ViT init: truncated normal 0.02 for Linears and pos_embed, tiny CLS token."""
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        nn.init.normal_(self.cls_token, std=1e-6)
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.trunc_normal_(module.weight, std=0.02)
                nn.init.zeros_(module.bias)

    def position_embedding(self, height: int, width: int) -> torch.Tensor:
        """(1, 1 + height*width, D); resampled bicubically when the grid is not the trained one."""
        if (height, width) == (self.grid, self.grid):
            return self.pos_embed
        cls_pos, patch_pos = self.pos_embed[:, :1], self.pos_embed[:, 1:]
        patch_pos = patch_pos.reshape(1, self.grid, self.grid, -1).permute(0, 3, 1, 2)
        patch_pos = F.interpolate(
            patch_pos.float(), size=(height, width), mode="bicubic", antialias=True
        ).to(cls_pos.dtype)
        return torch.cat([cls_pos, patch_pos.flatten(2).transpose(1, 2)], dim=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.patch_embed(x)
        height, width = x.shape[-2:]
        x = x.flatten(2).transpose(1, 2)
        x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], dim=1)
        x = x + self.position_embedding(height, width)
        for block in self.blocks:
            x = block(x)
        return self.norm(x)[:, 0]


@register_encoder("uni")
def uni(
    weights: str | Path = "random", *, depth: int = 24, dim: int = 1024, num_heads: int = 16
) -> ViTEncoder:
    """UNI v1 (Chen et al. 2024): timm vit_large_patch16_224, init_values 1e-5, 1024-d, 224 px.

    `depth`/`dim`/`num_heads` exist for small test models only; checkpoints need the defaults.
    weights: a local `pytorch_model.bin` of MahmoodLab/UNI, "hub", or "random".
    """
    model = ViTEncoder(
        dim=dim, depth=depth, num_heads=num_heads, mlp_hidden=4 * dim, swiglu=False, patch_size=16
    )
    hub = partial(
        timm_hub_state_dict,
        "hf-hub:MahmoodLab/UNI",
        "UNI",
        init_values=1e-5,
        dynamic_img_size=True,
    )
    load_weights(model, weights, hub)
    return model


@register_encoder("gigapath")
def gigapath(
    weights: str | Path = "random",
    *,
    depth: int = 40,
    dim: int = 1536,
    num_heads: int = 24,
    patch_size: int = 16,
) -> ViTEncoder:
    """Prov-GigaPath tile encoder (Xu et al. 2024): DINOv2 ViT-giant, 1536-d, 224 px.

    timm arch vit_giant_patch14_dinov2 (SwiGLU MLP, mlp_ratio 5.33334 -> fc1 8192, layer-scale
    1e-5), but the released hub config overrides patch_size to 16 (14x14 tokens at 224 px),
    so 16 is the default; the "/14" of the name would not load that checkpoint.
    `depth`/`dim`/`num_heads` exist for small test models only.
    weights: a local `pytorch_model.bin` of prov-gigapath/prov-gigapath, "hub", or "random".
    """
    mlp_hidden = int(dim * 5.33334)
    mlp_hidden -= mlp_hidden % 2
    model = ViTEncoder(
        dim=dim,
        depth=depth,
        num_heads=num_heads,
        mlp_hidden=mlp_hidden,
        swiglu=True,
        patch_size=patch_size,
    )
    hub = partial(timm_hub_state_dict, "hf_hub:prov-gigapath/prov-gigapath", "Prov-GigaPath")
    load_weights(model, weights, hub)
    return model


__all__ = ["ViTEncoder", "gigapath", "uni"]
