"""Patch inclusion rules (tissue fraction, CLAM's four points) and refused scales, on hand-made
polygons and a real drawn slide."""

from __future__ import annotations

import numpy as np
import pytest

from abmilx.cohort.slidefile import write_slide
from abmilx.config import schema_defaults
from abmilx.segmentation.segment import segment_slide
from abmilx.segmentation.settings import SegmentationSettings
from abmilx.tiling.grid import ScalePlan, include_patches
from abmilx.tiling.settings import TilingSettings
from abmilx.tiling.tile import tile_slide

# 3 x 3 patches of 100 level-0 px: patch (column, row) covers [100 c, 100 c + 100) x [100 r, ...)
PLAN = ScalePlan("main", 1.0, 100, 0, 1.0, 100.0, 100, 100.0)

TILING = schema_defaults("tiling")


def square(x0: float, y0: float, x1: float, y1: float) -> np.ndarray:
    return np.array([[x0, y0], [x1, y0], [x1, y1], [x0, y1]], dtype=np.float64)


POLYGONS = [
    [square(0, 0, 40, 40)],  # patch (0, 0): 16 % tissue around check point (25, 25)
    [square(100, 100, 200, 200), square(140, 140, 160, 160)],  # patch (1, 1): centre in a hole
    [square(245, 200, 255, 300)],  # patch (2, 2): a strip through the centre, between the points
    [square(100, 0, 200, 55), square(110, 10, 130, 30)],  # patch (1, 0): a hole on a check point
]


def kept(rule: str) -> set[tuple[int, int]]:
    keep = include_patches(POLYGONS, PLAN, 3, 3, rule, min_tissue_fraction=0.5)
    return {(int(i % 3), int(i // 3)) for i in np.flatnonzero(keep)}


def test_four_point_rule_by_hand():
    # (0, 0): check point (25, 25) inside; (1, 1): every check point inside but the centre is in
    # a hole; (2, 2): points (225 | 275, 225 | 275) all miss the strip; (1, 0): (125, 25) is in
    # the hole but (175, 25) is not, and the centre (150, 50) is outside the hole
    assert kept("four_point") == {(0, 0), (1, 0)}
    # tissue fraction: (0, 0) 0.16, (1, 1) 0.96, (2, 2) 0.10, (1, 0) 0.55 - 0.04
    assert kept("tissue_fraction") == {(1, 1), (1, 0)}


def test_unknown_rule_is_refused():
    with pytest.raises(ValueError, match="four_point"):
        include_patches(POLYGONS, PLAN, 3, 3, "centre", min_tissue_fraction=0.5)


@pytest.fixture(scope="module")
def segmented(tmp_path_factory):
    """An ellipse of tissue (H&E-like colours) on glass at 0.5 µm/px."""
    root = tmp_path_factory.mktemp("inclusion")
    y, x = np.mgrid[0:600, 0:800]
    inside = ((x - 400) / 300.0) ** 2 + ((y - 300) / 210.0) ** 2 < 1
    image = np.full((600, 800, 3), 236, np.uint8)
    image[inside] = (200, 130, 185)
    slide = write_slide(root / "e.svs", image, mpp=0.5, slide_format="aperio")
    settings = schema_defaults("segmentation") | {
        "working_mpp": 2.0, "min_tissue_area_um2": 1000.0, "min_hole_area_um2": 500.0
    }  # fmt: skip
    prefix = root / "seg"
    assert (
        segment_slide(
            slide,
            prefix,
            slide_id="e",
            dataset="d",
            settings=SegmentationSettings.from_settings(settings),
        )["status"]
        == "ok"
    )
    return slide, prefix, root


def test_four_point_keeps_more_border_patches_on_a_slide(segmented):
    slide, prefix, root = segmented
    counts = {}
    for rule in ("tissue_fraction", "four_point"):
        record = tile_slide(
            slide,
            prefix,
            root / f"{rule}.lmdb",
            root / f"{rule}.json",
            slide_id="e",
            dataset="d",
            settings=TilingSettings.from_settings(
                TILING | {"scales": {"main": 1.0}, "patch_size": 32, "inclusion": rule}
            ),
        )
        assert record["tiling"]["inclusion"] == rule
        counts[rule] = record["patches"]["main"]
    assert counts["tissue_fraction"] < counts["four_point"] < 1.5 * counts["tissue_fraction"]


def test_scale_finer_than_level0_fails_the_slide(segmented):
    slide, prefix, root = segmented
    record = tile_slide(
        slide,
        prefix,
        root / "fine.lmdb",
        root / "fine.json",
        slide_id="e",
        dataset="d",
        settings=TilingSettings.from_settings(
            TILING | {"scales": {"main": 1.0, "fine": 0.25}, "patch_size": 32}
        ),
    )
    assert record["status"] == "failed" and record["patches"] == {"main": 0, "fine": 0}
    assert "'fine' at 0.25 µm/px is finer than the slide's level 0 (0.5 µm/px" in record["reason"]
