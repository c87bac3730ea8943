"""Cellular-scale texture: stroma, nuclei and glands drawn into H/E concentration maps.

Everything is sized in µm and converted with the slide's mpp, so a slide scanned at 0.25 µm/px
shows the same tissue as one at 0.5 µm/px. Drawing uses cv2 primitives with sub-pixel precision
(``shift``) on uint8 maps; loops only run over lists of plain ints.
"""

from __future__ import annotations

import cv2
import numpy as np

from abmilx.cohort.stain import MAX_OD, od_code
from abmilx.cohort.tissue import smooth_noise

SHIFT = 2  # cv2 fixed-point bits: coordinates in quarter pixels
SCALE = 1 << SHIFT


def draw_nuclei(
    h_map: np.ndarray,
    xs: np.ndarray,
    ys: np.ndarray,
    axes: tuple[np.ndarray, np.ndarray],
    values: np.ndarray,
    angles: np.ndarray | None = None,
) -> None:
    """Draw filled elliptical nuclei (pixel units) into ``h_map`` in place, keeping the darker
    value where nuclei overlap."""
    if len(xs) == 0:
        return
    major, minor = axes
    angles = np.zeros(len(xs)) if angles is None else angles
    layer = np.zeros_like(h_map)
    rows = zip(
        np.rint(xs * SCALE).astype(int).tolist(),
        np.rint(ys * SCALE).astype(int).tolist(),
        np.maximum(np.rint(major * SCALE), SCALE).astype(int).tolist(),
        np.maximum(np.rint(minor * SCALE), SCALE).astype(int).tolist(),
        np.asarray(angles, dtype=float).tolist(),
        np.asarray(values).astype(int).tolist(),
        strict=True,
    )
    for x, y, a, b, angle, value in rows:
        cv2.ellipse(layer, (x, y), (a, b), angle, 0, 360, value, -1, cv2.LINE_8, SHIFT)
    np.maximum(h_map, layer, out=h_map)


def jittered_grid(
    x0: float, y0: float, x1: float, y1: float, spacing: float, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Points of a hexagonal grid over a box, each jittered by a quarter spacing (crowded cells)."""
    ys = np.arange(y0, y1, spacing * 0.87)
    rows = [np.arange(x0 + (i % 2) * spacing / 2, x1, spacing) for i in range(len(ys))]
    px = np.concatenate(rows) if rows else np.zeros(0)
    py = np.concatenate([np.full(len(r), y) for r, y in zip(rows, ys, strict=True)]) if rows else px
    px = px + rng.uniform(-0.25, 0.25, len(px)) * spacing
    py = py + rng.uniform(-0.25, 0.25, len(py)) * spacing
    return px, py


def draw_gland(
    h_map: np.ndarray,
    e_map: np.ndarray,
    centre: tuple[float, float],
    radius: float,
    lumen_radius: float,
    nucleus_radius: float,
    spacing: float,
    nucleus_od: float,
    cytoplasm_od: tuple[float, float],
    rng: np.random.Generator,
    lumen_od: float = 0.22,
) -> None:
    """A round cell nest (pixel units): cytoplasm disc, optional pale lumen, crowded nuclei in the
    ring between lumen and rim. ``lumen_radius`` 0 gives a solid nest; the lumen holds pale pink
    secretion (``lumen_od`` eosin), so it reads as tissue, not as a hole."""
    cx, cy = centre
    c = (round(cx * SCALE), round(cy * SCALE))
    cv2.circle(e_map, c, round(radius * SCALE), od_code(cytoplasm_od[1]), -1, cv2.LINE_8, SHIFT)
    cv2.circle(h_map, c, round(radius * SCALE), od_code(cytoplasm_od[0]), -1, cv2.LINE_8, SHIFT)
    if lumen_radius > 0:
        lumen = round(lumen_radius * SCALE)
        cv2.circle(e_map, c, lumen, od_code(lumen_od), -1, cv2.LINE_8, SHIFT)
        cv2.circle(h_map, c, lumen, 0, -1, cv2.LINE_8, SHIFT)
    xs, ys = jittered_grid(cx - radius, cy - radius, cx + radius, cy + radius, spacing, rng)
    dist = np.hypot(xs - cx, ys - cy)
    inside = (dist <= radius - 0.6 * nucleus_radius) & (dist >= lumen_radius + nucleus_radius)
    xs, ys = xs[inside], ys[inside]
    size = nucleus_radius * rng.uniform(0.85, 1.15, len(xs))
    values = np.array([od_code(nucleus_od * f) for f in rng.uniform(0.85, 1.15, len(xs))])
    draw_nuclei(
        h_map,
        xs,
        ys,
        (size, size * rng.uniform(0.75, 1.0, len(xs))),
        values,
        rng.uniform(0, 180, len(xs)),
    )


def random_points_in(
    mask: np.ndarray, count: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """About ``count`` uniform points inside ``mask`` (rejection sampling over the whole image)."""
    height, width = mask.shape
    fraction = max(mask.mean(), 1e-6)
    n = int(count / fraction)
    xs = rng.uniform(0, width, n)
    ys = rng.uniform(0, height, n)
    keep = mask[ys.astype(int), xs.astype(int)]
    return xs[keep], ys[keep]


def stroma(tissue: np.ndarray, mpp: float, rng: np.random.Generator, e_od: float) -> np.ndarray:
    """Eosin map of fibrous stroma: slow density variation and wavy collagen streaks."""
    height, width = tissue.shape
    half = (max(2, height // 2), max(2, width // 2))  # fibres are > 2 px wide: half-res is enough
    step = 2 * mpp
    density = smooth_noise(half, 80 / step, rng)
    along_x = cv2.resize(
        rng.standard_normal(
            (max(2, round(half[0] * step / 3)), max(2, round(half[1] * step / 40)))
        ).astype(np.float32),
        (half[1], half[0]),
        interpolation=cv2.INTER_LINEAR,
    )
    along_y = cv2.resize(
        rng.standard_normal(
            (max(2, round(half[0] * step / 40)), max(2, round(half[1] * step / 3)))
        ).astype(np.float32),
        (half[1], half[0]),
        interpolation=cv2.INTER_LINEAR,
    )
    mix = 1.0 / (1.0 + np.exp(-2.0 * smooth_noise(half, 150 / step, rng)))
    fibres = mix * along_x + (1.0 - mix) * along_y
    level = od_code(e_od) * (1.0 + 0.18 * density + 0.22 * fibres)
    # Quantise at half resolution, upsample the uint8 map: a quarter of the float work.
    half_map = np.clip(level, 20, 255).astype(np.uint8)
    e_map = cv2.resize(half_map, (width, height), interpolation=cv2.INTER_LINEAR)
    e_map[~tissue] = 0
    return e_map


def stromal_nuclei(
    h_map: np.ndarray,
    tissue: np.ndarray,
    mpp: float,
    rng: np.random.Generator,
    per_mm2: float,
    lymphocyte_share: float,
) -> None:
    """Scattered spindle fibroblast nuclei and small round lymphocytes across the tissue."""
    area_mm2 = tissue.mean() * tissue.size * (mpp * 1e-3) ** 2
    xs, ys = random_points_in(tissue, round(per_mm2 * area_mm2), rng)
    n = len(xs)
    lymph = rng.uniform(size=n) < lymphocyte_share
    major = np.where(lymph, rng.uniform(2.3, 3.2, n), rng.uniform(4.0, 6.5, n)) / mpp
    minor = np.where(lymph, major * rng.uniform(0.85, 1.0, n), rng.uniform(1.2, 2.0, n) / mpp)
    od = np.where(lymph, rng.uniform(1.3, 1.7, n), rng.uniform(0.9, 1.3, n))
    values = np.rint(od / MAX_OD * 255).astype(int)
    draw_nuclei(h_map, xs, ys, (major, minor), values, rng.uniform(0, 180, n))


def normal_ducts(
    h_map: np.ndarray,
    e_map: np.ndarray,
    tissue: np.ndarray,
    mpp: float,
    rng: np.random.Generator,
    per_mm2: float,
) -> None:
    """Benign ducts: an open lumen lined by one layer of small regular nuclei."""
    area_mm2 = tissue.mean() * tissue.size * (mpp * 1e-3) ** 2
    xs, ys = random_points_in(tissue, round(per_mm2 * area_mm2), rng)
    for x, y in zip(xs.tolist(), ys.tolist(), strict=True):
        radius = rng.uniform(18, 32) / mpp
        draw_gland(
            h_map,
            e_map,
            (x, y),
            radius,
            lumen_radius=radius - 8 / mpp,
            nucleus_radius=2.6 / mpp,
            spacing=7 / mpp,
            nucleus_od=1.1,
            cytoplasm_od=(0.12, 0.55),
            rng=rng,
        )
