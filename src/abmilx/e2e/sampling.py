"""Multi-scale random instance sampling (MRIS, reference §3).

Per slide (or case) and per step, N patches: N_low = N // r from the low-magnification scale and
N - N_low from the main scale, uniform without replacement; a bag with fewer patches keeps all
of them and is padded with duplicates drawn uniformly, so every bag has exactly N patches and
slides batch without masks.
"""

from __future__ import annotations

import numpy as np


def mris_counts(n_patches: int, scale_ratio: float | None) -> tuple[int, int]:
    """(n_low, n_main) for a total of `n_patches`; no low scale when scale_ratio is 0 or None."""
    if n_patches < 1:
        raise ValueError("n_patches must be >= 1")
    n_low = int(n_patches // scale_ratio) if scale_ratio else 0
    return n_low, n_patches - n_low


def sample_indices(n_available: int, n_wanted: int, rng: np.random.Generator) -> np.ndarray:
    """`n_wanted` indices into range(n_available): a uniform subset, or all plus uniform duplicates."""
    if n_wanted == 0:
        return np.zeros(0, dtype=np.int64)
    if n_available <= 0:
        raise ValueError("cannot sample from an empty set of patches")
    if n_available >= n_wanted:
        return rng.choice(n_available, size=n_wanted, replace=False).astype(np.int64)
    duplicates = rng.integers(0, n_available, size=n_wanted - n_available)
    return np.concatenate([rng.permutation(n_available), duplicates]).astype(np.int64)


def sample_pooled(
    counts: list[int], n_wanted: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Sample from the patches of several slides pooled together (a survival case).

    Returns (slide position, patch index) arrays of length `n_wanted`.
    """
    offsets = np.concatenate([[0], np.cumsum(counts)])
    picks = sample_indices(int(offsets[-1]), n_wanted, rng)
    slide = np.searchsorted(offsets, picks, side="right") - 1
    return slide.astype(np.int64), picks - offsets[slide]
