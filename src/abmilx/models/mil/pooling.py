"""Attention-free baselines: mean or max pooling over instances."""

from __future__ import annotations

import torch
from torch import nn

from ..registry import register_mil
from .base import InstanceEmbedding, MILOutput, as_bag_batch, check_choice, init_linears_xavier


class InstancePoolMIL(nn.Module):
    """Linear(in->hidden)+act+Dropout per instance, Linear(hidden->C), pooled over instances.

    mean: classifier(mean of embeddings), identical to the mean of instance logits since the
    classifier is affine. max: max of instance logits per class (as the official MaxMIL);
    its embedding is the channel-wise max of instance embeddings.
    """

    def __init__(
        self,
        in_dim: int,
        n_classes: int,
        *,
        pool: str = "mean",
        hidden_dim: int = 512,
        act: str = "relu",
        dropout: float = 0.25,
        mil_norm: str | None = "none",
        mil_bias: bool = True,
    ):
        super().__init__()
        check_choice("pool", pool, ("mean", "max"))
        self.pool = pool
        self.embed = InstanceEmbedding(in_dim, hidden_dim, act, dropout, mil_norm, mil_bias)
        self.classifier = nn.Linear(hidden_dim, n_classes, bias=mil_bias)
        init_linears_xavier(self)

    def forward(self, x: torch.Tensor, coords: torch.Tensor | None = None) -> MILOutput:
        h = self.embed(as_bag_batch(x))
        if self.pool == "mean":
            slide = h.mean(dim=1)
            return MILOutput(self.classifier(slide), None, slide)
        logits = self.classifier(h).amax(dim=1)
        return MILOutput(logits, None, h.amax(dim=1))


@register_mil("mean_pool")
def mean_pool(in_dim: int, n_classes: int, **options) -> InstancePoolMIL:
    return InstancePoolMIL(in_dim, n_classes, pool="mean", **options)


@register_mil("max_pool")
def max_pool(in_dim: int, n_classes: int, **options) -> InstancePoolMIL:
    return InstancePoolMIL(in_dim, n_classes, pool="max", **options)
