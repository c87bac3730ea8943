"""Patch grids at an exact µm/px: level choice, grid positions, tissue fractions, reads.

A scale's patch covers ``patch_size * target_mpp / slide_mpp`` level-0 pixels (its footprint).
The grid is laid out in the pixels of the level that is read (the coarsest level at least as
fine as the target), so every read is aligned to that level; steps equal the footprint
(non-overlapping) and only patches wholly inside the slide are kept.

Which grid patches are kept (``inclusion``): ``tissue_fraction`` (default) keeps a patch when at
least ``min_tissue_fraction`` of its footprint is inside the tissue polygons; ``four_point`` is
CLAM's rule (``four_pt``, with which the paper's patches were made): a patch is kept when any of
four check points, its centre moved by a quarter of the patch along both diagonals, lies inside
a polygon's outer ring, and its centre is not inside one of that polygon's holes.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from abmilx.geometry import Polygon, grid_points_inside, rasterize_polygons
from abmilx.slides import Slide, resize_to

# A patch's tissue fraction is measured on FRACTION_CELLS x FRACTION_CELLS cells, each sampled
# FRACTION_SUPERSAMPLE x FRACTION_SUPERSAMPLE times: 32 x 32 samples per patch.
FRACTION_CELLS = 16
FRACTION_SUPERSAMPLE = 2
INCLUSION_RULES = ("tissue_fraction", "four_point")


@dataclass(frozen=True)
class ScalePlan:
    """How one scale is read from one slide."""

    name: str
    mpp: float  # target µm/px
    patch_size: int
    level: int
    level_mpp: float
    step_level: float  # footprint in level pixels (float: exact factor)
    read_size: int  # level pixels read per patch side (footprint rounded)
    extent_level0: float  # footprint in level-0 pixels

    def as_record(self) -> dict:
        return asdict(self)


def plan_scale(
    slide: Slide, name: str, target_mpp: float, patch_size: int, level_tolerance: float
) -> ScalePlan:
    """How scale ``name`` is read; :class:`SlideError` when it is finer than level 0."""
    slide.check_scale(target_mpp, f"scale '{name}' at")
    level = slide.level_for_mpp(target_mpp, tolerance=level_tolerance)
    level_mpp = slide.level_mpp(level)
    step_level = patch_size * target_mpp / level_mpp
    return ScalePlan(
        name=name,
        mpp=float(target_mpp),
        patch_size=patch_size,
        level=level,
        level_mpp=level_mpp,
        step_level=step_level,
        read_size=max(1, round(step_level)),
        extent_level0=patch_size * target_mpp / slide.mpp,
    )


def grid_shape(plan: ScalePlan, level_width: int, level_height: int) -> tuple[int, int]:
    """``(rows, columns)`` of patches wholly inside a level of the given size."""

    def count(length: int) -> int:
        n = max(0, int(length // plan.step_level) + 1)
        while n > 0 and round((n - 1) * plan.step_level) + plan.read_size > length:
            n -= 1
        return n

    return count(level_height), count(level_width)


def grid_positions(plan: ScalePlan, rows: int, columns: int) -> np.ndarray:
    """``(rows * columns, 2)`` level-pixel ``(x, y)`` of every grid patch, row-major."""
    xs = np.round(np.arange(columns) * plan.step_level).astype(np.int64)
    ys = np.round(np.arange(rows) * plan.step_level).astype(np.int64)
    grid_x, grid_y = np.meshgrid(xs, ys)
    return np.stack([grid_x.ravel(), grid_y.ravel()], axis=1)


def tissue_fractions(
    polygons: list[Polygon], plan: ScalePlan, rows: int, columns: int
) -> np.ndarray:
    """Fraction of each grid patch's footprint inside the polygons, ``(rows * columns,)``."""
    if rows == 0 or columns == 0:
        return np.zeros(0)
    cell = plan.extent_level0 / FRACTION_CELLS
    coverage = rasterize_polygons(
        polygons,
        columns * FRACTION_CELLS,
        rows * FRACTION_CELLS,
        (cell, cell),
        FRACTION_SUPERSAMPLE,
    )
    blocks = coverage.reshape(rows, FRACTION_CELLS, columns, FRACTION_CELLS)
    return blocks.mean(axis=(1, 3), dtype=np.float64).ravel()


def four_point_inside(
    polygons: list[Polygon], plan: ScalePlan, rows: int, columns: int
) -> np.ndarray:
    """CLAM's four-point rule for each grid patch, ``(rows * columns,)`` bool (module doc)."""
    keep = np.zeros((rows, columns), dtype=bool)
    extent = plan.extent_level0
    centre, shift = extent / 2, extent / 4
    for outer, *holes in polygons:
        inside = np.zeros_like(keep)
        for dx, dy in ((-shift, -shift), (shift, shift), (shift, -shift), (-shift, shift)):
            inside |= grid_points_inside(outer, (centre + dx, centre + dy), extent, rows, columns)
        for hole in holes:
            inside &= ~grid_points_inside(hole, (centre, centre), extent, rows, columns)
        keep |= inside
    return keep.ravel()


def include_patches(
    polygons: list[Polygon],
    plan: ScalePlan,
    rows: int,
    columns: int,
    inclusion: str,
    min_tissue_fraction: float,
) -> np.ndarray:
    """Which grid patches to keep, ``(rows * columns,)`` bool, by the ``inclusion`` rule."""
    if inclusion == "tissue_fraction":
        return tissue_fractions(polygons, plan, rows, columns) >= min_tissue_fraction
    if inclusion == "four_point":
        return four_point_inside(polygons, plan, rows, columns)
    raise ValueError(f"inclusion must be one of {INCLUSION_RULES}, got {inclusion!r}")


def level0_coords(slide: Slide, plan: ScalePlan, positions: np.ndarray) -> np.ndarray:
    """Level-0 ``(x, y)`` of level-pixel positions (int64)."""
    return np.round(positions * slide.downsamples[plan.level]).astype(np.int64)


def read_patch(slide: Slide, plan: ScalePlan, x: int, y: int) -> np.ndarray:
    """The ``patch_size`` RGB patch whose top-left level pixel is ``(x, y)``."""
    region = slide.read_level(plan.level, x, y, plan.read_size, plan.read_size)
    return resize_to(region, plan.patch_size, plan.patch_size)
