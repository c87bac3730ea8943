"""Model cost measures reported next to the results (parameters, FLOPs)."""

from __future__ import annotations

import torch
from torch import nn


def count_parameters(module: nn.Module, trainable_only: bool = False) -> int:
    return sum(p.numel() for p in module.parameters() if p.requires_grad or not trainable_only)


def count_flops(model: nn.Module, *inputs: torch.Tensor) -> int:
    """FLOPs of one no-grad forward, counted by torch's FlopCounterMode.

    A multiply-add counts as 2 FLOPs (fvcore/thop, which many papers use, count it as 1:
    halve to compare). Only matmul/conv-like ops are counted. Meta-device model and inputs
    give the count without computing anything (the paper's 512x3x224x224 input).
    """
    from torch.utils.flop_counter import FlopCounterMode  # ~0.1 CPU-s, only when counting

    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        model(*inputs)
    return counter.get_total_flops()
