"""Tissue mask of a thumbnail: saturation threshold with guards against ink, debris and black.

CLAM-style (saturation of a median-blurred thumbnail, threshold, morphological closing, area
filters), with every size given in µm or µm² so the result does not depend on the pyramid.
Guards, applied per pixel before the area filters:

- black background (outside the scan) and black ink: dark (HSV V below ``black_value_max``) AND
  unsaturated (chroma, max - min of R, G, B, below ``black_ink_chroma_max``). Dense
  haematoxylin is as dark but strongly coloured (e.g. RGB (77, 35, 77), chroma 42): by
  Beer-Lambert a stain gets more saturated as it gets darker, ink stays grey. Chroma rather than
  HSV saturation, which is unstable near black (RGB (3, 0, 5) has saturation 255). Transparent
  pixels arrive as white from :mod:`abmilx.slides` and fail the saturation test;
- grey ink (black ink thinly applied): unsaturated (S below ``gray_ink_saturation_max``) yet
  darker than pale tissue (V below ``gray_ink_value_max``); H&E is never both;
- green and blue ink: hue inside one of ``pen_hue_ranges_deg`` with saturation at least
  ``pen_min_saturation`` (H&E is pink to purple, 280°-360° and 0°-20°, outside these ranges);
  the excluded area is widened by ``pen_margin_um`` to drop the ink's faint fringe;
- dark debris: a connected piece whose median value is below ``debris_value_max`` and whose area
  is below ``debris_max_area_um2`` is dropped whole.

Red ink cannot be told from eosin by colour and is not handled.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import cv2
import numpy as np

from abmilx.segmentation.settings import SegmentationSettings

# An Otsu threshold on a nearly blank thumbnail splits JPEG noise; never go below this.
OTSU_FLOOR = 8


@dataclass(frozen=True)
class TissueMask:
    mask: np.ndarray  # bool, thumbnail size
    threshold: int  # saturation threshold actually used
    excluded: np.ndarray  # bool, pixels rejected as ink / black


def _odd(n: float) -> int:
    n = max(1, round(n))
    return n if n % 2 else n + 1


def _disk(diameter_px: float) -> np.ndarray:
    size = _odd(diameter_px)
    return cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (size, size))


def _remove_small_components(mask: np.ndarray, min_area_px: float, connectivity: int) -> np.ndarray:
    count, labels, stats, _ = cv2.connectedComponentsWithStats(
        mask.astype(np.uint8), connectivity=connectivity
    )
    keep = np.zeros(count, dtype=bool)
    keep[1:] = stats[1:, cv2.CC_STAT_AREA] >= min_area_px
    return keep[labels]


def _fill_small_holes(mask: np.ndarray, min_hole_area_px: float) -> np.ndarray:
    """Fill background pieces enclosed by tissue that are smaller than ``min_hole_area_px``."""
    background = ~mask
    count, labels, stats, _ = cv2.connectedComponentsWithStats(
        background.astype(np.uint8), connectivity=4
    )
    border = np.unique(np.concatenate([labels[0], labels[-1], labels[:, 0], labels[:, -1]]))
    small = np.zeros(count, dtype=bool)
    small[1:] = stats[1:, cv2.CC_STAT_AREA] < min_hole_area_px
    small[border] = False
    small[0] = False
    return mask | small[labels]


def label_medians(values: np.ndarray, labels: np.ndarray, which: np.ndarray) -> np.ndarray:
    """Median of ``values`` over each label in ``which`` (each present in ``labels``), the mean
    of the two middle values for an even count, like ``scipy.ndimage.median`` (whose import
    alone cost a per-slide start-up about 0.15 s)."""
    slot = np.full(int(labels.max()) + 1, -1, dtype=np.int64)
    slot[which] = np.arange(len(which))
    group = slot[labels.ravel()]
    inside = group >= 0
    group, picked = group[inside], values.ravel()[inside].astype(np.float64)
    picked = picked[np.lexsort((picked, group))]
    counts = np.bincount(group, minlength=len(which))
    starts = np.cumsum(counts) - counts
    return (picked[starts + (counts - 1) // 2] + picked[starts + counts // 2]) / 2


def _drop_dark_debris(
    mask: np.ndarray, value: np.ndarray, value_max: float, max_area_px: float
) -> np.ndarray:
    """Drop small pieces whose median value is dark (the median ignores blended edges)."""
    count, labels, stats, _ = cv2.connectedComponentsWithStats(
        mask.astype(np.uint8), connectivity=8
    )
    small = np.flatnonzero(stats[:, cv2.CC_STAT_AREA] < max_area_px)
    small = small[small > 0]
    if small.size == 0:
        return mask
    medians = label_medians(value, labels, small)
    debris = np.zeros(count, dtype=bool)
    debris[small[medians < value_max]] = True
    return mask & ~debris[labels]


def _hue_mask(hue_half_degrees: np.ndarray, ranges_deg: Sequence[Sequence[float]]) -> np.ndarray:
    hue_deg = hue_half_degrees.astype(np.float32) * 2.0  # OpenCV stores hue / 2 in uint8
    inside = np.zeros(hue_deg.shape, dtype=bool)
    for low, high in ranges_deg:
        inside |= (hue_deg >= low) & (hue_deg <= high)
    return inside


def tissue_mask(rgb: np.ndarray, *, mpp: float, settings: SegmentationSettings) -> TissueMask:
    """Tissue mask of ``rgb`` (``(H, W, 3)`` uint8 thumbnail at ``mpp`` µm/px) with the
    config's ``segmentation`` settings (those that are not about reading the slide)."""
    if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
        raise ValueError(f"thumbnail must be (H, W, 3) uint8 RGB, got {rgb.shape} {rgb.dtype}")
    pixel_area_um2 = mpp * mpp
    blurred = (
        cv2.medianBlur(rgb, _odd(settings.median_kernel)) if settings.median_kernel > 1 else rgb
    )
    hue, saturation, value = cv2.split(cv2.cvtColor(blurred, cv2.COLOR_RGB2HSV))
    if settings.saturation_threshold == "otsu":
        otsu, _ = cv2.threshold(saturation, 0, 255, cv2.THRESH_BINARY + cv2.THRESH_OTSU)
        threshold = max(int(otsu), OTSU_FLOOR)
    else:  # an int in 0..254 (SegmentationSettings checks it)
        threshold = settings.saturation_threshold
    ink = _hue_mask(hue, settings.pen_hue_ranges_deg) & (saturation >= settings.pen_min_saturation)
    gray_ink = (saturation < settings.gray_ink_saturation_max) & (
        value < settings.gray_ink_value_max
    )
    red, green, blue = cv2.split(blurred)
    chroma = value - cv2.min(cv2.min(red, green), blue)  # V is the max of R, G, B
    black = (value < settings.black_value_max) & (chroma < settings.black_ink_chroma_max)
    excluded = black | gray_ink | ink
    if settings.pen_margin_um > 0 and excluded.any():
        excluded = (
            cv2.dilate(excluded.astype(np.uint8), _disk(2 * settings.pen_margin_um / mpp)) > 0
        )
    mask = (saturation > threshold) & ~excluded
    if settings.closing_um > 0:
        kernel = _disk(settings.closing_um / mpp)
        mask = cv2.morphologyEx(mask.astype(np.uint8), cv2.MORPH_CLOSE, kernel) > 0
        mask &= ~excluded
    mask = _drop_dark_debris(
        mask, value, settings.debris_value_max, settings.debris_max_area_um2 / pixel_area_um2
    )
    mask = _fill_small_holes(mask, settings.min_hole_area_um2 / pixel_area_um2) & ~excluded
    mask = _remove_small_components(
        mask, settings.min_tissue_area_um2 / pixel_area_um2, connectivity=8
    )
    return TissueMask(mask=mask, threshold=threshold, excluded=excluded)
