"""Instance sampling of the E2E training bags (the `sampling` setting).

- mris (paper Sec. 3.1): per slide (or case) and per step, N patches: N_low = N // r from the
  low-magnification scale and N - N_low from the main scale, uniform without replacement; a
  bag with fewer patches keeps all of them and is padded with duplicates drawn uniformly, so
  every bag has exactly N patches and slides batch without masks.
- random: the same at the main scale only (the paper's "Random Sampling", "w/o MS").
- regional: as mris, but each scale's draw is stratified over a G x G grid of the slide by the
  patches' real level-0 coordinates (`sample_regional_pooled`), as the paper describes; the
  official code's version is broken (docs/method.md).
- attention: the EMA teacher scores every main-scale patch and its heads vote (`vote_top_k`).
"""

from __future__ import annotations

import numpy as np

ATTENTION_NEEDS_EMA = (
    "sampling 'attention' scores the patches with the EMA teacher: set ema to a decay "
    "(e.g. 0.9997), not null"
)


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
    return split_pooled(counts, sample_indices(int(sum(counts)), n_wanted, rng))


def split_pooled(counts: list[int], picks: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Pooled indices (slides' patches concatenated in order) -> (slide position, patch index)."""
    offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    picks = np.asarray(picks, dtype=np.int64)
    slide = np.searchsorted(offsets, picks, side="right") - 1
    return slide.astype(np.int64), picks - offsets[slide]


def region_labels(coords: np.ndarray, regions: int) -> np.ndarray:
    """Region (row-major in 0..G^2-1, G = `regions`) of each patch of one slide.

    The bounding box of the patches' level-0 corners (x, y) is cut into G x G equal cells,
    half-open, so every patch falls in exactly one cell and the last row and column include
    the box's far edge.
    """
    coords = np.asarray(coords, dtype=np.int64).reshape(-1, 2)
    if not len(coords):
        return np.zeros(0, dtype=np.int64)
    low = coords.min(axis=0)
    extent = coords.max(axis=0) - low + 1
    cell = (coords - low) * regions // extent  # (n, 2) column, row in [0, G)
    return cell[:, 1] * regions + cell[:, 0]


def sample_stratified(
    groups: np.ndarray, n_groups: int, n_wanted: int, rng: np.random.Generator
) -> np.ndarray:
    """`n_wanted` indices into `groups` (the group of each patch): n_wanted // n_groups drawn
    uniformly without replacement inside every group (all of a smaller one), then the rest —
    the remainder of the division plus what empty or small groups could not give — uniformly
    without replacement from the patches not drawn yet; when even those run out, duplicates
    drawn uniformly from all patches (as `sample_indices`)."""
    groups = np.asarray(groups, dtype=np.int64)
    if len(groups) == 0:
        raise ValueError("cannot sample from an empty set of patches")
    quota = n_wanted // n_groups
    drawn = [np.zeros(0, dtype=np.int64)]
    if quota:
        for group in range(n_groups):
            members = np.flatnonzero(groups == group)
            if len(members):
                drawn.append(rng.choice(members, size=min(quota, len(members)), replace=False))
    chosen = np.concatenate(drawn)
    rest = np.setdiff1d(np.arange(len(groups)), chosen)
    missing = n_wanted - len(chosen)
    if len(rest) >= missing:
        extra = rest[rng.choice(len(rest), size=missing, replace=False)]
    else:
        extra = np.concatenate([rest, rng.integers(0, len(groups), size=missing - len(rest))])
    return np.concatenate([chosen, extra]).astype(np.int64)


def sample_regional_pooled(
    coords: list[np.ndarray], n_wanted: int, regions: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Regional random sampling over the slides of a bag; (slide position, patch index) arrays.

    Each slide gets its own G x G grid (`region_labels`; level-0 coordinates of different
    slides are not comparable), so a case of S slides has S * G^2 regions, each asked for
    n_wanted // (S * G^2) patches, topped up at random as `sample_stratified` says.
    """
    n_regions = regions * regions
    groups = np.concatenate(
        [region_labels(c, regions) + position * n_regions for position, c in enumerate(coords)]
    )
    picks = sample_stratified(groups, len(coords) * n_regions, n_wanted, rng)
    return split_pooled([len(c) for c in coords], picks)


def vote_top_k(attention: np.ndarray, k: int) -> np.ndarray:
    """The min(k, N) instances an attention-sampling teacher keeps, best first.

    `attention` is (H, N) per-head attention (or (N,) for one head). Every head nominates its
    top k (ties to the lower index), each nomination is a vote, and the k instances with most
    votes are kept, ties broken by the mean attention over heads, then by index. With one head
    this is exactly its top k (the official msa_fusion='vote').
    """
    attention = np.atleast_2d(np.asarray(attention, dtype=np.float64))
    n = attention.shape[1]
    nominated = np.argsort(-attention, axis=1, kind="stable")[:, :k]
    votes = np.bincount(nominated.ravel(), minlength=n)
    order = np.lexsort((np.arange(n), -attention.mean(axis=0), -votes))
    return order[: min(k, n)].astype(np.int64)
