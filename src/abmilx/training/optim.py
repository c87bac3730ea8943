"""Optimizer factory and the per-epoch warmup + cosine learning-rate schedule of the official code."""

from __future__ import annotations

import math
from collections.abc import Iterable

import torch


def build_optimizer(
    params: Iterable[torch.nn.Parameter] | Iterable[dict],
    name: str,
    lr: float,
    weight_decay: float,
) -> torch.optim.Optimizer:
    """Adam (weight decay as L2, as in the official PANDA config) or AdamW (decoupled decay).

    One learning rate and one weight decay for all parameters: the official code builds three
    groups with identical settings, which is the same thing.
    """
    if name == "adamw":
        return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
    if name == "adam":
        return torch.optim.Adam(params, lr=lr, weight_decay=weight_decay)
    raise ValueError(f"unknown optimizer {name!r}; expected 'adam' or 'adamw'")


class WarmupCosine:
    """timm-style cosine schedule stepped once per epoch, with a linear warmup that is not a prefix.

    lr(t) = warmup_lr + t (lr - warmup_lr) / W            for t < W
    lr(t) = min_lr + (lr - min_lr) (1 + cos(pi t / E)) / 2 otherwise
    The cosine counts from epoch 0, so at t = W the rate is already slightly below the peak.
    """

    def __init__(
        self,
        optimizer: torch.optim.Optimizer,
        lr: float,
        epochs: int,
        warmup_epochs: int = 0,
        warmup_lr: float = 1e-6,
        min_lr: float = 1e-7,
    ) -> None:
        if epochs < 1:
            raise ValueError("epochs must be >= 1")
        self.optimizer = optimizer
        self.lr = lr
        self.epochs = epochs
        self.warmup_epochs = warmup_epochs
        self.warmup_lr = warmup_lr
        self.min_lr = min_lr

    def lr_at(self, epoch: int) -> float:
        """Learning rate used during `epoch` (0-based)."""
        if epoch < self.warmup_epochs:
            return self.warmup_lr + epoch * (self.lr - self.warmup_lr) / self.warmup_epochs
        cosine = 1.0 + math.cos(math.pi * epoch / self.epochs)
        return self.min_lr + 0.5 * (self.lr - self.min_lr) * cosine

    def set_epoch(self, epoch: int) -> float:
        """Write the rate for `epoch` into every parameter group and return it."""
        lr = self.lr_at(epoch)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        return lr
