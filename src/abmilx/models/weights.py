"""Loading pretrained weights without ever falling back to random initialisation silently."""

from __future__ import annotations

import warnings
from collections.abc import Iterable, Mapping
from pathlib import Path

import torch
from torch import nn

from abmilx.integrity import load_torch_file

CHECKPOINT_PREFIXES = ("module.", "encoder.", "resnet.")
"""Wrappers that training code commonly adds in front of encoder keys (DDP, E2E model, ...)."""


class WeightsUnavailableError(RuntimeError):
    """Requested pretrained weights cannot be obtained (missing file, no network, bad hash)."""


def strip_prefixes(
    state_dict: Mapping[str, torch.Tensor], prefixes: Iterable[str] = CHECKPOINT_PREFIXES
):
    """Remove any chain of known wrapper prefixes (e.g. `module.encoder.`) from every key."""
    prefixes = tuple(prefixes)
    stripped = {}
    for key, value in state_dict.items():
        changed = True
        while changed:
            changed = False
            for prefix in prefixes:
                if key.startswith(prefix):
                    key = key[len(prefix) :]
                    changed = True
        stripped[key] = value
    return stripped


def read_checkpoint(path: str | Path) -> dict[str, torch.Tensor]:
    """Read a state dict from a local file; unwrap `{"state_dict"|"model": ...}` containers."""
    path = Path(path)
    if not path.is_file():
        raise WeightsUnavailableError(
            f"checkpoint file {path} does not exist; give the path of a local checkpoint, "
            "or choose weights: imagenet or weights: random"
        )
    checkpoint = load_torch_file(path, weights_only=True)
    for container_key in ("state_dict", "model"):
        if isinstance(checkpoint, dict) and isinstance(checkpoint.get(container_key), dict):
            checkpoint = checkpoint[container_key]
    if not isinstance(checkpoint, dict):
        raise WeightsUnavailableError(f"checkpoint {path} does not contain a state dict")
    return checkpoint


def load_matching(
    module: nn.Module,
    state_dict: Mapping[str, torch.Tensor],
    source: str,
    ignore_unexpected: tuple[str, ...] = (),
) -> dict[str, list[str]]:
    """Load `state_dict` non-strictly and warn about missing/unexpected keys.

    Keys starting with `ignore_unexpected` (parts the architecture drops on purpose, such as
    layer4 of a truncated ResNet) are discarded quietly. Raises when nothing matched, because
    a model left entirely at random init under a "pretrained" name is the failure to avoid.
    """
    state_dict = {k: v for k, v in state_dict.items() if not k.startswith(ignore_unexpected)}
    result = module.load_state_dict(state_dict, strict=False)
    expected = set(module.state_dict())
    if not expected & set(state_dict):
        raise WeightsUnavailableError(
            f"no parameter of {type(module).__name__} was found in {source}; "
            f"first keys there: {sorted(state_dict)[:5]}"
        )
    report = {"missing": list(result.missing_keys), "unexpected": list(result.unexpected_keys)}
    if report["missing"] or report["unexpected"]:
        warnings.warn(
            f"loading {source}: {len(report['missing'])} missing keys {report['missing'][:5]}, "
            f"{len(report['unexpected'])} unexpected keys {report['unexpected'][:5]}",
            stacklevel=3,
        )
    return report
