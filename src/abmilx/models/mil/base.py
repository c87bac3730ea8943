"""Pieces shared by all MIL aggregators: the output type, input handling, init, embedding."""

from __future__ import annotations

import inspect
from typing import NamedTuple

import torch
from torch import nn

ACTIVATIONS = {"relu": nn.ReLU, "gelu": nn.GELU, "leaky_relu": nn.LeakyReLU}
MIL_NORMS = ("none", "ln")


def call_mil(
    mil: nn.Module,
    x: torch.Tensor,
    *,
    coords: torch.Tensor | None = None,
    labels: torch.Tensor | None = None,
) -> MILOutput:
    """Run a MIL model, handing `labels` only to models whose forward takes them (aux losses)."""
    if labels is not None and "labels" in inspect.signature(mil.forward).parameters:
        return mil(x, coords=coords, labels=labels)
    return mil(x, coords=coords)


class MILOutput(NamedTuple):
    """What every MIL model returns.

    logits: (B, C) raw scores (classes, or hazard bins for survival).
    attention: (B, H, N) post-softmax instance weights per head, or None for models without.
    embedding: (B, D) slide representation that the classifier reads.
    aux_loss: scalar instance-level loss of models that have one (CLAM, DSMIL, DTFD), given
        only in training mode when the forward received `labels`; None otherwise. The
        trainer adds `aux_weight * aux_loss` to the bag loss (each model documents its
        paper's weighting).
    """

    logits: torch.Tensor
    attention: torch.Tensor | None
    embedding: torch.Tensor
    aux_loss: torch.Tensor | None = None


def as_bag_batch(x: torch.Tensor) -> torch.Tensor:
    """(N, d) -> (1, N, d) as a view (the caller's tensor is not modified); (B, N, d) as is."""
    if x.dim() == 2:
        return x.unsqueeze(0)
    if x.dim() != 3:
        raise ValueError(f"expected instances of shape (B, N, d) or (N, d), got {tuple(x.shape)}")
    return x


def make_activation(name: str) -> nn.Module:
    check_choice("act", name, tuple(ACTIVATIONS))
    return ACTIVATIONS[name]()


def check_choice(option: str, value, choices: tuple) -> None:
    if value not in choices:
        raise ValueError(f"{option} must be one of {choices}, got {value!r}")


def canonical_mil_norm(mil_norm: str | None) -> str:
    """Accept None as "none" so that YAML `null` and the string both work."""
    mil_norm = "none" if mil_norm is None else mil_norm
    check_choice("mil_norm", mil_norm, MIL_NORMS)
    return mil_norm


def init_linears_xavier(module: nn.Module) -> None:
    """xavier_normal_ weights and zero biases for every Linear, as the official MIL code does."""
    for layer in module.modules():
        if isinstance(layer, nn.Linear):
            nn.init.xavier_normal_(layer.weight)
            if layer.bias is not None:
                nn.init.zeros_(layer.bias)


class InstanceEmbedding(nn.Sequential):
    """[LayerNorm(in_dim)] -> Linear(in_dim -> out_dim) -> act -> Dropout, applied per instance.

    `mil_bias=False` removes the bias of both the LayerNorm and the Linear (the paper's
    bias-free E2E setting).
    """

    def __init__(
        self,
        in_dim: int,
        out_dim: int,
        act: str = "relu",
        dropout: float = 0.25,
        mil_norm: str | None = "none",
        mil_bias: bool = True,
    ):
        layers: list[nn.Module] = []
        if canonical_mil_norm(mil_norm) == "ln":
            layers.append(nn.LayerNorm(in_dim, bias=mil_bias))
        layers += [nn.Linear(in_dim, out_dim, bias=mil_bias), make_activation(act)]
        layers.append(nn.Dropout(dropout))
        super().__init__(*layers)


def training_labels(module: nn.Module, labels: torch.Tensor | None, batch: int):
    """Slide labels as a (B,) long tensor when an aux loss is due (training with labels), else
    None, so that eval and label-free calls never pay for instance losses."""
    if labels is None or not module.training:
        return None
    labels = torch.as_tensor(labels, dtype=torch.long).reshape(-1)
    if labels.numel() != batch:
        raise ValueError(f"expected {batch} labels, got {labels.numel()}")
    return labels
