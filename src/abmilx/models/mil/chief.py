"""CHIEF slide aggregator (Wang et al. 2024) as a MIL model, with its organ text embedding.

CHIEF = CLAM-style gated attention (size "small": 768 -> 512, attention 256) whose pooled slide
feature is summed with a projection of a fixed 768-d text embedding of the organ (one row of
a 19-row table, CHIEF's `Text_emdding.pth`), then a Linear head. Parameter names follow the
official `CHIEF` module (`attention_net.0`, `attention_net.3.attention_a.0`, `classifiers`,
`text_to_vision.0`, `organ_embedding`), so `CHIEF_pretraining.pth` loads; its CLAM instance
classifiers and retrieval head (`instance_classifiers.*`, `att_head.*`), unused for slide
classification, are skipped.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from ..registry import register_mil
from ..weights import WeightsUnavailableError, load_matching, read_checkpoint, strip_prefixes
from .base import MILOutput, as_bag_batch, init_linears_xavier

ORGANS = {"brca": 1, "blca": 2, "panda": 4, "lung": 6}
"""Rows of CHIEF's organ table used by the ABMILX code for its datasets."""
N_ORGANS, TEXT_DIM = 19, 768


class GatedAttention(nn.Module):
    """CLAM Attn_Net_Gated: Linear+Tanh+Dropout times Linear+Sigmoid+Dropout, Linear -> score."""

    def __init__(self, dim: int, attn_dim: int, dropout: float):
        super().__init__()
        self.attention_a = nn.Sequential(nn.Linear(dim, attn_dim), nn.Tanh(), nn.Dropout(dropout))
        self.attention_b = nn.Sequential(
            nn.Linear(dim, attn_dim), nn.Sigmoid(), nn.Dropout(dropout)
        )
        self.attention_c = nn.Linear(attn_dim, 1)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return self.attention_c(self.attention_a(h) * self.attention_b(h))


def organ_index(organ: int | str) -> int:
    if isinstance(organ, str):
        if organ.lower() not in ORGANS:
            raise ValueError(f"organ must be an index 0..{N_ORGANS - 1} or one of {list(ORGANS)}")
        return ORGANS[organ.lower()]
    if not 0 <= organ < N_ORGANS:
        raise ValueError(f"organ index must be in 0..{N_ORGANS - 1}, got {organ}")
    return organ


class CHIEFAggregator(nn.Module):
    """Linear(in->512)+ReLU+Dropout, gated attention pooling, + text_to_vision(organ row),
    Linear(512->C). Without `text_weights`/`weights` the organ table is N(0,1), as CHIEF's
    constructor leaves it before loading `Text_emdding.pth`."""

    def __init__(
        self,
        in_dim: int,
        n_classes: int,
        *,
        organ: int | str = "brca",
        hidden_dim: int = 512,
        attn_dim: int = 256,
        dropout: float = 0.25,
        weights: str | Path | None = None,
        text_weights: str | Path | None = None,
    ):
        super().__init__()
        self.organ = organ_index(organ)
        self.attention_net = nn.Sequential(
            nn.Linear(in_dim, hidden_dim),
            nn.ReLU(),
            nn.Dropout(dropout),
            GatedAttention(hidden_dim, attn_dim, dropout),
        )
        self.classifiers = nn.Linear(hidden_dim, n_classes)
        self.text_to_vision = nn.Sequential(
            nn.Linear(TEXT_DIM, hidden_dim), nn.ReLU(), nn.Dropout(dropout)
        )
        init_linears_xavier(self)
        self.register_buffer("organ_embedding", torch.randn(N_ORGANS, TEXT_DIM))
        if text_weights is not None:
            self.organ_embedding.copy_(read_text_embedding(text_weights))
        self.load_report: dict[str, list[str]] = {"missing": [], "unexpected": []}
        if weights is not None:  # CHIEF's checkpoint holds the table too and wins, as upstream
            state = strip_prefixes(read_checkpoint(weights))
            if state.get("classifiers.weight", self.classifiers.weight).shape != (
                self.classifiers.weight.shape
            ):  # a head for another task is replaced, not loaded
                state = {k: v for k, v in state.items() if not k.startswith("classifiers.")}
            self.load_report = load_matching(
                self, state, str(weights), ignore_unexpected=("instance_classifiers.", "att_head.")
            )

    def forward(self, x: torch.Tensor, coords: torch.Tensor | None = None) -> MILOutput:
        h = self.attention_net[:3](as_bag_batch(x))  # (B, N, hidden)
        attention = torch.softmax(self.attention_net[3](h).transpose(1, 2), dim=-1)  # (B,1,N)
        text = self.text_to_vision(self.organ_embedding[self.organ])
        slide = (attention @ h).squeeze(1) + text
        return MILOutput(self.classifiers(slide), attention, slide)


def read_text_embedding(path: str | Path) -> torch.Tensor:
    """CHIEF's `Text_emdding.pth`: a (19, 768) tensor (or a dict holding `organ_embedding`)."""
    path = Path(path)
    if not path.is_file():
        raise WeightsUnavailableError(
            f"CHIEF text embedding {path} does not exist; download Text_emdding.pth from the "
            "CHIEF repository's model_weight folder and give its path as text_weights"
        )
    table = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(table, dict):
        table = strip_prefixes(table).get("organ_embedding")
    if not isinstance(table, torch.Tensor) or tuple(table.shape) != (N_ORGANS, TEXT_DIM):
        raise WeightsUnavailableError(f"{path} does not hold a ({N_ORGANS}, {TEXT_DIM}) table")
    return table.float()


@register_mil("chief_aggregator")
def chief_aggregator(in_dim: int, n_classes: int, **options) -> CHIEFAggregator:
    """`organ`: index or brca/blca/panda/lung; `weights`: CHIEF_pretraining.pth (needs in_dim
    768, CTransPath features); `text_weights`: Text_emdding.pth."""
    return CHIEFAggregator(in_dim, n_classes, **options)
