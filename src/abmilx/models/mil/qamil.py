"""QAMIL: one learnable query (CLS) cross-attending to the instances (ViTMIL with "ca")."""

from __future__ import annotations

from ..registry import register_mil
from .vitmil import TransformerMIL


@register_mil("qamil")
def qamil(in_dim: int, n_classes: int, **options) -> TransformerMIL:
    return TransformerMIL(in_dim, n_classes, **{"attn_type": "ca", "n_layers": 1, **options})
