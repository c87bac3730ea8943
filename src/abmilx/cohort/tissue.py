"""Tissue masks: 1-3 irregular pieces with holes, built on a coarse grid and upsampled smoothly.

The mask returned here is, by construction, exactly the tissue that gets rendered, so it is the
ground truth that segmentation is scored against.
"""

from __future__ import annotations

import cv2
import numpy as np

# Physical scales (µm) of the coarse grid and of the shape features.
COARSE_UM = 16.0
MIN_PIECE_AREA_UM2 = 20_000.0  # fragments smaller than this are dropped
MIN_HOLE_AREA_UM2 = 10_000.0  # holes smaller than this are filled


def smooth_noise(shape: tuple[int, int], feature_px: float, rng: np.random.Generator) -> np.ndarray:
    """Zero-mean, unit-variance smooth random field whose blobs are about ``feature_px`` wide."""
    height, width = shape
    grid = (max(2, round(height / feature_px) + 2), max(2, round(width / feature_px) + 2))
    coarse = rng.standard_normal(grid).astype(np.float32)
    field = cv2.resize(coarse, (width, height), interpolation=cv2.INTER_CUBIC)
    return (field - field.mean()) / (field.std() + 1e-6)


def _coarse_mask(
    shape: tuple[int, int], coverage: float, n_pieces: int, rng: np.random.Generator
) -> np.ndarray:
    """Tissue on the coarse grid (bool): noisy ellipses, thresholded to the wanted coverage."""
    height, width = shape
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float32)
    field = np.full(shape, -np.inf, dtype=np.float32)
    # Pieces side by side along the long axis, each in its own slot, so they stay separate.
    horizontal = width >= height
    for index in range(n_pieces):
        slot = (index + 0.5 + rng.uniform(-0.12, 0.12)) / n_pieces
        along = slot * (width if horizontal else height)
        across = rng.uniform(0.4, 0.6) * (height if horizontal else width)
        cx, cy = (along, across) if horizontal else (across, along)
        slot_len = (width if horizontal else height) / n_pieces
        a = 0.42 * slot_len * rng.uniform(0.8, 1.0)
        b = 0.40 * (height if horizontal else width) * rng.uniform(0.7, 1.0)
        rx, ry = (a, b) if horizontal else (b, a)
        angle = rng.uniform(-0.3, 0.3)
        cos, sin = np.cos(angle), np.sin(angle)
        u = ((xs - cx) * cos + (ys - cy) * sin) / rx
        v = (-(xs - cx) * sin + (ys - cy) * cos) / ry
        field = np.maximum(field, 1.0 - (u * u + v * v))
    border = 0.35 * smooth_noise(shape, 12, rng) + 0.15 * smooth_noise(shape, 4, rng)
    field = field + border
    holes = smooth_noise(shape, 5, rng)
    field = np.where(holes > 2.0, -1.0, field)  # a few crisp holes inside the pieces
    threshold = np.quantile(field, 1.0 - coverage)
    return field > threshold


def _clean(mask: np.ndarray, cell_um2: float) -> np.ndarray:
    """Drop tiny fragments and fill tiny holes (below the physical area limits)."""
    mask = mask.astype(np.uint8)
    _, labels, stats, _ = cv2.connectedComponentsWithStats(mask, connectivity=8)
    keep = stats[:, cv2.CC_STAT_AREA] * cell_um2 >= MIN_PIECE_AREA_UM2
    keep[0] = False
    mask = keep[labels].astype(np.uint8)
    background = 1 - mask
    _, labels, stats, _ = cv2.connectedComponentsWithStats(background, connectivity=4)
    small = stats[:, cv2.CC_STAT_AREA] * cell_um2 < MIN_HOLE_AREA_UM2
    small[labels[0, 0]] = False  # never fill the slide background itself
    return (mask.astype(bool) | small[labels]).astype(bool)


def tissue_mask(
    shape: tuple[int, int],
    mpp: float,
    rng: np.random.Generator,
    *,
    coverage: float,
    n_pieces: int,
) -> np.ndarray:
    """Level-0 tissue mask (bool, ``shape`` = (height, width)) covering about ``coverage``."""
    height, width = shape
    coarse_shape = (max(8, round(height * mpp / COARSE_UM)), max(8, round(width * mpp / COARSE_UM)))
    coarse = _coarse_mask(coarse_shape, coverage, n_pieces, rng)
    coarse = _clean(coarse, cell_um2=COARSE_UM * COARSE_UM)
    # Blur before upsampling so borders are smooth curves, not 16 µm stair steps.
    soft = cv2.GaussianBlur(coarse.astype(np.float32), (0, 0), 1.0)
    full = cv2.resize(soft, (width, height), interpolation=cv2.INTER_LINEAR)
    return full > 0.5
