"""2DMamba (Zhang et al., 2025): a selective state-space model scanned over the 2-D patch grid.

The instances are placed on their patch grid (from `coords`, else a square pseudo-grid filled
in instance order); empty cells hold a learnable pad token. One residual Mamba block,
x + Mixer(LN(x)), runs on the grid, then LN, ABMIL pooling (Linear 512->128, Tanh,
Linear 128->1) over the real instances, and Linear(512 -> C) (the MambaMIL head).

Mixer, with u, z = in_proj(x) (width d_inner = 2 * 512):
  u = silu(DepthwiseConv2d(3 x 3)(u));  dt, B, C = x_proj(u);  dt = softplus(dt_proj(dt))
  A_bar = exp(dt A), A = -exp(A_log) (d_inner x d_state);  B_bar u = dt B u
  2-D selective scan: a row-major pass h'_ij = A_bar_ij h'_i,j-1 + B_bar_ij u_ij along each
  row, then a column-major pass h_ij = A_bar_ij h_i-1,j + h'_ij down each column;
  y = C_ij . h_ij + D u_ij;  out = out_proj(y * silu(z)).
The scan is two plain PyTorch loops (rows, then columns), no custom kernels: memory is
O(grid cells * d_inner * d_state), meant for the two-stage setting, not for speed.
Grid from coords (x, y): column = (x - min x) / step, row = (y - min y) / step, where the
step of each axis is the smallest gap between distinct values (the patch stride).
2.294 M parameters for in_dim 1024 and 2 classes vs the paper's 2.27 M (+1.0 %).
Not invariant to instance order or position.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from ..registry import register_mil
from .base import InstanceEmbedding, MILOutput, as_bag_batch, init_linears_xavier


def grid_cells(coords: torch.Tensor | None, n_instances: int) -> tuple[torch.Tensor, int, int]:
    """Row and column of each instance, (N, 2) long, and the grid's height and width."""
    if coords is None:
        side = math.ceil(math.sqrt(n_instances))
        index = torch.arange(n_instances)
        return torch.stack([index // side, index % side], dim=1), side, side
    axes = []
    for values in (coords[:, 1], coords[:, 0]):  # row from y, column from x
        values = values.double()
        distinct = torch.unique(values)
        gaps = distinct.diff()
        step = gaps.min() if gaps.numel() else values.new_ones(())
        axes.append(torch.round((values - distinct[0]) / step).long())
    cells = torch.stack(axes, dim=1).cpu()
    height, width = (int(cells[:, i].max()) + 1 for i in range(2))
    if torch.unique(cells[:, 0] * width + cells[:, 1]).numel() != n_instances:
        raise ValueError("two instances fall on the same grid cell")
    return cells, height, width


def selective_scan_2d(decay: torch.Tensor, inputs: torch.Tensor) -> torch.Tensor:
    """h_ij = decay_ij h_i-1,j + (row scan of `inputs` with `decay`)_ij over (H, W, ...)."""
    rows = torch.empty_like(inputs)
    state = torch.zeros_like(inputs[:, 0])
    for j in range(inputs.shape[1]):
        state = decay[:, j] * state + inputs[:, j]
        rows[:, j] = state
    states = torch.empty_like(inputs)
    state = torch.zeros_like(inputs[0])
    for i in range(inputs.shape[0]):
        state = decay[i] * state + rows[i]
        states[i] = state
    return states


class Mamba2DMixer(nn.Module):
    """The Mamba mixer with a depthwise 2-D conv and the 2-D selective scan, on one grid."""

    def __init__(self, dim: int, d_state: int, expand: int, conv_kernel: int):
        super().__init__()
        inner = expand * dim
        self.dt_rank = math.ceil(dim / 16)
        self.d_state = d_state
        self.in_proj = nn.Linear(dim, 2 * inner, bias=False)
        self.conv = nn.Conv2d(inner, inner, conv_kernel, padding=conv_kernel // 2, groups=inner)
        self.x_proj = nn.Linear(inner, self.dt_rank + 2 * d_state, bias=False)
        self.dt_proj = nn.Linear(self.dt_rank, inner)
        self.A_log = nn.Parameter(torch.empty(inner, d_state))
        self.D = nn.Parameter(torch.empty(inner))
        self.out_proj = nn.Linear(inner, dim, bias=False)

    def reset_ssm_parameters(self, dt_min: float = 1e-3, dt_max: float = 0.1) -> None:
        """Mamba's init: A = -(1..d_state), D = 1, softplus(dt bias) log-uniform in
        [dt_min, dt_max], dt_proj weights uniform in +-dt_rank^-0.5."""
        with torch.no_grad():
            self.A_log.copy_(torch.log(torch.arange(1, self.d_state + 1.0)).expand_as(self.A_log))
            self.D.fill_(1.0)
            nn.init.uniform_(self.dt_proj.weight, -(self.dt_rank**-0.5), self.dt_rank**-0.5)
            log_dt = torch.empty_like(self.dt_proj.bias).uniform_(
                math.log(dt_min), math.log(dt_max)
            )
            dt = log_dt.exp()
            self.dt_proj.bias.copy_(dt + torch.log(-torch.expm1(-dt)))  # inverse softplus

    def forward(self, grid: torch.Tensor) -> torch.Tensor:
        """grid: (H, W, dim) -> (H, W, dim)."""
        u, gate = self.in_proj(grid).chunk(2, dim=-1)
        u = F.silu(self.conv(u.permute(2, 0, 1)[None])[0].permute(1, 2, 0))
        dt, b, c = self.x_proj(u).split([self.dt_rank, self.d_state, self.d_state], dim=-1)
        dt = F.softplus(self.dt_proj(dt))[..., None]  # (H, W, inner, 1)
        decay = torch.exp(dt * -torch.exp(self.A_log))  # (H, W, inner, state)
        states = selective_scan_2d(decay, dt * b[:, :, None] * u[..., None])
        y = (states * c[:, :, None]).sum(-1) + self.D * u
        return self.out_proj(y * F.silu(gate))


class Mamba2DMIL(nn.Module):
    """One 2-D Mamba block (d_state 16, expand 2) between the embedding and ABMIL pooling."""

    def __init__(
        self,
        in_dim: int,
        n_classes: int,
        *,
        hidden_dim: int = 512,
        d_state: int = 16,
        expand: int = 2,
        conv_kernel: int = 3,
        attn_dim: int = 128,
        act: str = "relu",
        dropout: float = 0.25,
        mil_norm: str | None = "none",
        mil_bias: bool = True,
    ):
        super().__init__()
        self.embed = InstanceEmbedding(in_dim, hidden_dim, act, dropout, mil_norm, mil_bias)
        self.pad_token = nn.Parameter(torch.zeros(hidden_dim))
        self.block_norm = nn.LayerNorm(hidden_dim)
        self.mixer = Mamba2DMixer(hidden_dim, d_state, expand, conv_kernel)
        self.norm = nn.LayerNorm(hidden_dim)
        self.attention = nn.Sequential(
            nn.Linear(hidden_dim, attn_dim), nn.Tanh(), nn.Linear(attn_dim, 1)
        )
        self.classifier = nn.Linear(hidden_dim, n_classes, bias=mil_bias)
        init_linears_xavier(self)
        self.mixer.reset_ssm_parameters()
        nn.init.normal_(self.pad_token, std=0.02)

    def _mix(self, h: torch.Tensor, coords: torch.Tensor | None) -> torch.Tensor:
        """One slide's (N, d) instances through the residual block on their grid."""
        cells, height, width = grid_cells(coords, h.shape[0])
        flat = (cells[:, 0] * width + cells[:, 1]).to(h.device)
        grid = self.pad_token.expand(height * width, -1).index_copy(0, flat, h)
        mixed = self.mixer(self.block_norm(grid).view(height, width, -1))
        return h + mixed.view(height * width, -1)[flat]

    def forward(self, x: torch.Tensor, coords: torch.Tensor | None = None) -> MILOutput:
        h = self.embed(as_bag_batch(x))  # (B, N, hidden)
        if coords is not None and coords.dim() == 2:
            coords = coords.unsqueeze(0)
        h = torch.stack(
            [self._mix(bag, None if coords is None else coords[i]) for i, bag in enumerate(h)]
        )
        h = self.norm(h)
        attention = torch.softmax(self.attention(h).transpose(1, 2), dim=-1)  # (B, 1, N)
        slide = (attention @ h).squeeze(1)
        return MILOutput(self.classifier(slide), attention, slide)


@register_mil("mamba2d")
def mamba2d(in_dim: int, n_classes: int, **options) -> Mamba2DMIL:
    return Mamba2DMIL(in_dim, n_classes, **options)
