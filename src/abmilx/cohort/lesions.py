"""Label-dependent lesions: where they go (foci inside tissue) and what they look like.

Foci are irregular blobs whose total area is the requested share of tissue; the focus mask is
the lesion ground truth. Inside a focus the morphology depends on the task and label, sized in
µm so it reads the same at 1-2 µm/px (64-px patches):

- ``solid_nests`` (subtyping class 0 / IDC): round nests of large, crowded, dark nuclei;
- ``single_file`` (subtyping class 1 / ILC): pale lilac stroma (hue shift towards haematoxylin)
  crossed by thin chains of small cells;
- ``graded_glands`` (grading 1-5): glands that get smaller, denser, darker and lose their lumen
  with the grade (5 = solid sheets);
- ``metastasis`` (diagnosis tumor): clusters of large pale nuclei in pink cytoplasm, standing out
  of dense lymphoid tissue;
- survival: the graded glands of :func:`survival_grade`, more aggressive with a larger burden, so
  both what a patch shows and how many patches show it carry the hazard.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from abmilx.cohort.stain import od_code
from abmilx.cohort.texture import SCALE, SHIFT, draw_gland, draw_nuclei, random_points_in

FOCUS_GRID_UM = 8.0  # grid on which focus centres are chosen


@dataclass(frozen=True)
class NestStyle:
    """Geometry (µm) and optical densities of one kind of cell nest."""

    radius_um: tuple[float, float]
    lumen_share: float  # lumen radius / nest radius
    gap_um: float  # stroma between neighbouring nests
    nucleus_um: float  # nucleus radius
    spacing_um: float  # nucleus centre spacing (crowding)
    nucleus_od: float
    cytoplasm_od: tuple[float, float]  # (haematoxylin, eosin)


IDC_NESTS = NestStyle((22, 45), 0.0, 4, 4.2, 8.5, 1.8, (0.45, 0.30))
METASTASIS_NESTS = NestStyle((14, 30), 0.0, 2, 4.8, 9.5, 0.95, (0.10, 0.85))


# Grade 1-3: small, uniform, ever more crowded glands; 4: fused glands with small lumina;
# 5: solid sheets. Nuclei grow and darken with the grade.
GRADE_STYLES = {
    1: NestStyle((12, 18), 0.45, 8, 2.8, 7.0, 1.40, (0.30, 0.40)),
    2: NestStyle((12, 18), 0.40, 5, 3.0, 7.0, 1.50, (0.32, 0.38)),
    3: NestStyle((10, 16), 0.30, 3, 3.2, 7.5, 1.60, (0.35, 0.36)),
    4: NestStyle((18, 30), 0.15, 3, 3.6, 8.0, 1.70, (0.40, 0.33)),
    5: NestStyle((30, 50), 0.00, 2, 4.2, 8.5, 1.85, (0.45, 0.30)),
}


# Least area (µm²) of one metastasis: about 1.5 demo patches (64 µm at 1 µm/px), so a tumor
# slide always holds a patch that is mostly tumor (CAMELYON micro-metastases, but visible).
METASTASIS_MIN_UM2 = 6000.0
# Survival lesion share at which the morphology steps up from grade 2 to 3, 4 and 5.
SURVIVAL_GRADE_EDGES = (0.06, 0.10, 0.16)


def survival_grade(fraction: float) -> int:
    """Glandular grade (2-5) of a survival slide's lesions: it rises with the burden."""
    return 2 + int(np.searchsorted(SURVIVAL_GRADE_EDGES, fraction, side="right"))


def _focus_polygon(cx: float, cy: float, radius: float, rng: np.random.Generator) -> np.ndarray:
    """Irregular closed outline: a circle modulated by a few random low harmonics."""
    theta = np.linspace(0, 2 * np.pi, 64, endpoint=False)
    wobble = np.ones_like(theta)
    for k in (2, 3, 5):
        wobble += rng.uniform(0.0, 0.14) * np.cos(k * theta + rng.uniform(0, 2 * np.pi))
    xs = cx + radius * wobble * np.cos(theta)
    ys = cy + radius * wobble * np.sin(theta)
    return np.rint(np.stack([xs, ys], axis=1) * SCALE).astype(np.int32)


def place_foci(
    tissue: np.ndarray,
    mpp: float,
    fraction: float,
    n_foci: int,
    rng: np.random.Generator,
) -> tuple[np.ndarray, list[tuple[int, int, int, int]]]:
    """Lesion mask (bool, level 0, inside tissue) covering ``fraction`` of the tissue in
    ``n_foci`` blobs, and the bounding box (x0, y0, x1, y1) of each blob."""
    lesion = np.zeros(tissue.shape, dtype=np.uint8)
    tissue_px = int(tissue.sum())
    if fraction <= 0 or n_foci <= 0 or tissue_px == 0:
        return lesion.astype(bool), []
    factor = max(1, round(FOCUS_GRID_UM / mpp))
    coarse = cv2.resize(
        tissue.astype(np.uint8),
        (max(1, tissue.shape[1] // factor), max(1, tissue.shape[0] // factor)),
        interpolation=cv2.INTER_AREA,
    )
    depth = cv2.distanceTransform(np.pad(coarse, 1), cv2.DIST_L2, 5)[1:-1, 1:-1] * factor
    radii = np.sqrt(fraction * tissue_px / n_foci / np.pi) * rng.uniform(0.8, 1.2, n_foci)
    radii *= np.sqrt(fraction * tissue_px / np.pi / np.sum(radii**2))  # exact total area
    centres = []
    for radius in radii:
        if depth.max() <= 0:
            break  # no tissue left away from earlier foci (only on tiny test slides)
        deep = np.argwhere(depth >= min(1.1 * radius, depth.max()))
        y, x = deep[rng.integers(len(deep))]
        cx, cy = (x + 0.5) * factor, (y + 0.5) * factor
        centres.append((cx, cy))
        # Keep later foci apart from this one.
        cv2.circle(depth, (int(x), int(y)), int(2.2 * radius / factor) + 1, 0, -1)
    outlines = [_focus_polygon(cx, cy, r, rng) for (cx, cy), r in zip(centres, radii, strict=False)]
    cv2.fillPoly(lesion, outlines, 1, cv2.LINE_8, SHIFT)
    lesion = lesion.astype(bool) & tissue
    boxes = []
    for outline in outlines:
        x, y, w, h = cv2.boundingRect(outline // SCALE)
        x0, y0 = max(0, x - 1), max(0, y - 1)
        x1, y1 = min(tissue.shape[1], x + w + 2), min(tissue.shape[0], y + h + 2)
        boxes.append((x0, y0, x1, y1))
    return lesion, boxes


def _pack_nests(
    mask: np.ndarray, style: NestStyle, mpp: float, rng: np.random.Generator
) -> list[tuple[float, float, float]]:
    """Non-overlapping nests (x, y, radius in px) whose centres lie in ``mask``."""
    low, high = (r / mpp for r in style.radius_um)
    gap = style.gap_um / mpp
    area = mask.sum()
    xs, ys = random_points_in(mask, max(20, int(8 * area / (np.pi * low * low))), rng)
    # Distance to the focus border: nests stay whole inside the focus (shrunk if needed).
    room = cv2.distanceTransform(mask.astype(np.uint8), cv2.DIST_L2, 5)
    nests: list[tuple[float, float, float]] = []
    for x, y in zip(xs.tolist(), ys.tolist(), strict=True):
        radius = min(rng.uniform(low, high), float(room[int(y), int(x)]))
        if radius >= 0.6 * low and all(
            (x - u) ** 2 + (y - v) ** 2 >= (radius + r + gap) ** 2 for u, v, r in nests
        ):
            nests.append((x, y, radius))
    return nests


def solid_nests(
    h_map: np.ndarray,
    e_map: np.ndarray,
    mask: np.ndarray,
    mpp: float,
    rng: np.random.Generator,
    style: NestStyle = IDC_NESTS,
) -> None:
    """Fill a focus with nests of ``style`` separated by thin stroma."""
    for x, y, radius in _pack_nests(mask, style, mpp, rng):
        draw_gland(
            h_map,
            e_map,
            (x, y),
            radius,
            lumen_radius=style.lumen_share * radius,
            nucleus_radius=style.nucleus_um / mpp,
            spacing=style.spacing_um / mpp,
            nucleus_od=style.nucleus_od,
            cytoplasm_od=style.cytoplasm_od,
            rng=rng,
        )


def single_file(
    h_map: np.ndarray, e_map: np.ndarray, mask: np.ndarray, mpp: float, rng: np.random.Generator
) -> None:
    """Pale, lilac stroma with single-file chains of small dark cells (lobular pattern)."""
    e_map[mask] = (e_map[mask] * 0.4).astype(np.uint8)
    h_map[mask] = od_code(0.16)
    step = 6.0 / mpp  # centre distance of cells along a chain
    n_chains = max(1, int(mask.sum() * mpp * mpp / 500))  # one chain per ~500 µm²
    starts_x, starts_y = random_points_in(mask, n_chains, rng)
    xs, ys = [], []
    for x, y in zip(starts_x.tolist(), starts_y.tolist(), strict=True):
        heading = rng.uniform(0, 2 * np.pi)
        turns = np.cumsum(rng.normal(0.0, 0.18, int(rng.integers(6, 16))))
        xs.append(x + np.cumsum(step * np.cos(heading + turns)))
        ys.append(y + np.cumsum(step * np.sin(heading + turns)))
    xs, ys = np.concatenate(xs), np.concatenate(ys)
    height, width = mask.shape
    inside = (xs >= 0) & (ys >= 0) & (xs < width) & (ys < height)
    xs, ys = xs[inside], ys[inside]
    inside = mask[ys.astype(int), xs.astype(int)]
    xs, ys = xs[inside], ys[inside]
    n = len(xs)
    radius = rng.uniform(2.2, 2.8, n) / mpp
    values = np.array([od_code(v) for v in rng.uniform(1.3, 1.6, n)], dtype=int)
    draw_nuclei(h_map, xs, ys, (radius, radius * 0.8), values, rng.uniform(0, 180, n))


def draw_lesions(
    h_map: np.ndarray,
    e_map: np.ndarray,
    tissue: np.ndarray,
    mpp: float,
    task: str,
    label_index: int,
    fraction: float,
    rng: np.random.Generator,
) -> np.ndarray:
    """Place foci for a slide and draw the label's morphology into the maps (in place).

    Returns the lesion mask (bool, level 0). ``label_index`` is the class index (grade for
    grading; ignored for survival).
    """
    n_foci = {
        "subtyping": int(rng.integers(1, 4)),
        "grading": 1 + label_index // 2,
        "survival": int(rng.integers(1, 5)),
        "diagnosis": int(rng.integers(1, 3)),
    }[task]
    if task == "diagnosis":  # fewer, larger metastases when the burden is small
        lesion_um2 = fraction * float(tissue.sum()) * mpp * mpp
        n_foci = int(np.clip(lesion_um2 // METASTASIS_MIN_UM2, 1, n_foci))
    lesion, boxes = place_foci(tissue, mpp, fraction, n_foci, rng)
    for x0, y0, x1, y1 in boxes:
        mask = lesion[y0:y1, x0:x1]
        h_crop, e_crop = h_map[y0:y1, x0:x1].copy(), e_map[y0:y1, x0:x1].copy()
        h_crop[mask] = 0  # the lesion replaces the cells that were there
        if task == "subtyping" and label_index == 1:
            single_file(h_crop, e_crop, mask, mpp, rng)
        elif task == "grading":
            solid_nests(h_crop, e_crop, mask, mpp, rng, GRADE_STYLES[label_index])
        elif task == "survival":
            solid_nests(h_crop, e_crop, mask, mpp, rng, GRADE_STYLES[survival_grade(fraction)])
        elif task == "diagnosis":
            e_crop[mask] = od_code(0.45)
            solid_nests(h_crop, e_crop, mask, mpp, rng, METASTASIS_NESTS)
        else:
            solid_nests(h_crop, e_crop, mask, mpp, rng, IDC_NESTS)
        h_map[y0:y1, x0:x1][mask] = h_crop[mask]
        e_map[y0:y1, x0:x1][mask] = e_crop[mask]
    return lesion
