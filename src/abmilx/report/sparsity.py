"""Attention sparsity (the paper's Sec. 3.3 table), computed from a run's saved test attention.

The paper gives no formula and the official code none either; this is the project's definition
(docs/method.md, Sparsity), printed with the table (:data:`DEFINITION`):

1. per slide, the final attention over all N test patches, averaged over heads;
2. min-max normalised to [0, 1];
3. a patch is *activated* when its normalised attention exceeds τ = 0.5;
4. sparsity = 1 - #activated / N, averaged over slides (higher = sparser).

A slide whose attention is constant has no patch standing out: every patch counts as activated
(sparsity 0). The interval is a bootstrap over slides, like the metrics' over cases.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path

import numpy as np

THRESHOLD = 0.5
DEFINITION = (
    "Sparsity (the paper's Sec. 3.3 names it without a formula; this workflow defines it): "
    "per test slide, the attention over all N patches, "
    f"averaged over heads and min-max normalised to [0, 1]; a patch is activated when it exceeds "
    f"τ = {THRESHOLD}; sparsity = 100 · (1 − #activated / N), averaged over slides, with a "
    "bootstrap over slides for the interval. Higher is sparser."
)


def slide_sparsity(attention: np.ndarray, threshold: float = THRESHOLD) -> float:
    """Fraction of a slide's patches not activated; ``attention`` is (N,) or (heads, N)."""
    weights = np.asarray(attention, dtype=np.float64)
    if weights.ndim == 2:
        weights = weights.mean(axis=0)
    if weights.ndim != 1 or weights.size == 0:
        raise ValueError(f"attention must be (N,) or (heads, N) with N > 0, got {attention.shape}")
    if not np.isfinite(weights).all():
        raise ValueError("attention has non-finite values")
    low, high = weights.min(), weights.max()
    if high - low <= 0:
        return 0.0
    activated = (weights - low) / (high - low) > threshold
    return float(1.0 - activated.mean())


def attention_of(path: str | Path) -> dict[str, np.ndarray]:
    """{slide_id: (heads, N) attention} of an evaluation's attention.npz (coords left out)."""
    with np.load(path) as archive:
        return {
            key.removesuffix("/attention"): archive[key]
            for key in archive.files
            if key.endswith("/attention")
        }


def sparsity_summary(
    attention_files: Iterable[str | Path], n_boot: int, seed: int
) -> Mapping[str, float] | None:
    """Mean slide sparsity over the folds' test slides with a 95 % bootstrap interval over slides
    (keys as the metrics' summaries); None when the model saved no attention."""
    values = np.array(
        [slide_sparsity(a) for path in attention_files for a in attention_of(path).values()]
    )
    if values.size == 0:
        return None
    rng = np.random.default_rng(seed)
    means = values[rng.integers(0, values.size, size=(n_boot, values.size))].mean(axis=1)
    return {
        "point": float(values.mean()),
        "mean": float(means.mean()),
        "ci_low": float(np.percentile(means, 2.5)),
        "ci_high": float(np.percentile(means, 97.5)),
        "std": float(means.std()),
        "n": int(values.size),
        "n_boot": n_boot,
    }
