"""Name -> constructor registries for patch encoders and MIL aggregators (timm style).

Configs refer to models by name only, so every architecture registers itself once here and
callers build it through `create_encoder` / `create_mil` with keyword options from the config.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

from torch import nn

ModelFactory = TypeVar("ModelFactory", bound=Callable[..., nn.Module])

_ENCODERS: dict[str, Callable[..., nn.Module]] = {}
_ENCODER_FAMILIES: dict[str, Callable[..., nn.Module]] = {}
_MILS: dict[str, Callable[..., nn.Module]] = {}


def _register(table: dict[str, Callable[..., nn.Module]], kind: str, name: str):
    def decorator(factory: ModelFactory) -> ModelFactory:
        if name in table:
            raise ValueError(f"{kind} {name!r} is already registered")
        table[name] = factory
        return factory

    return decorator


def register_encoder(name: str):
    """Register `factory(weights="random", **options) -> nn.Module` under `name`."""
    return _register(_ENCODERS, "encoder", name)


def register_encoder_family(prefix: str):
    """Register `factory(name, weights="random", **options)` for every name starting with
    `prefix` (e.g. "timm:"), models that exist outside this package."""
    return _register(_ENCODER_FAMILIES, "encoder family", prefix)


def register_mil(name: str):
    """Register `factory(in_dim, n_classes, **options) -> nn.Module` under `name`."""
    return _register(_MILS, "MIL model", name)


def _lookup(table: dict[str, Callable[..., nn.Module]], kind: str, name: str):
    try:
        return table[name]
    except KeyError:
        raise ValueError(
            f"unknown {kind} {name!r}; available: {', '.join(sorted(table))}"
        ) from None


def create_encoder(name: str, weights: str = "random", **kw) -> nn.Module:
    """Build a patch encoder: forward (B,3,H,W) normalised RGB -> (B, out_dim)."""
    for prefix, factory in _ENCODER_FAMILIES.items():
        if name.startswith(prefix):
            return factory(name, weights=weights, **kw)
    return _lookup(_ENCODERS, "encoder", name)(weights=weights, **kw)


def create_mil(name: str, in_dim: int, n_classes: int, **kw) -> nn.Module:
    """Build a MIL model: forward (B,N,in_dim) [, coords] -> MILOutput."""
    return _lookup(_MILS, "MIL model", name)(in_dim, n_classes, **kw)


def mil_factory(name: str) -> Callable[..., nn.Module]:
    """The registered factory of a MIL model (its signature types the model's options)."""
    return _lookup(_MILS, "MIL model", name)


def list_encoders() -> list[str]:
    return sorted(_ENCODERS)


def list_mils() -> list[str]:
    return sorted(_MILS)
