"""Exponential moving average of a whole model (the official code's undocumented EMA teacher)."""

from __future__ import annotations

import copy

import torch
from torch import nn


class ModelEma:
    """Keeps `decay * ema + (1 - decay) * model` for float tensors and copies integer buffers.

    Updated after every optimiser step with a constant decay, as ModelEmaV3 in the official code.
    The copy stays in eval mode, so its BatchNorm layers use the averaged running statistics.
    """

    def __init__(self, model: nn.Module, decay: float) -> None:
        if not 0.0 < decay < 1.0:
            raise ValueError("EMA decay must be in (0, 1)")
        self.decay = decay
        self.module = copy.deepcopy(model).eval()
        for parameter in self.module.parameters():
            parameter.requires_grad_(False)

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        """Move the average towards `model` (pass the unwrapped module, not a DDP wrapper)."""
        ema_state = self.module.state_dict()
        for name, value in model.state_dict().items():
            target = ema_state[name]
            if target.is_floating_point():
                target.lerp_(value.to(target.dtype), 1.0 - self.decay)
            else:
                target.copy_(value)

    def state_dict(self) -> dict[str, torch.Tensor]:
        return self.module.state_dict()

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        self.module.load_state_dict(state)
