"""Segmentation and tiling against the generator's ground truth on real synthetic slides."""

import json

import numpy as np
import pytest

from abmilx.cohort import load_truth, plan_cohort, synthesize_slide
from abmilx.config import schema_defaults
from abmilx.geometry import rasterize_polygons, read_geojson
from abmilx.patches.store import PatchStore
from abmilx.segmentation.segment import segment_slide
from abmilx.segmentation.settings import SegmentationSettings
from abmilx.tiling.settings import TilingSettings
from abmilx.tiling.tile import tile_slide

DEMO_SEGMENTATION = schema_defaults("segmentation") | {
    "min_tissue_area_um2": 20000,
    "min_hole_area_um2": 4000,
}


@pytest.fixture(scope="module")
def cohort(tmp_path_factory):
    """Ten slides of every format and task look (pen marks, debris, lesions), 1.0 x 0.8 mm."""
    root = tmp_path_factory.mktemp("cohort")
    # The earlier 4 % lesion burden: at the demo's 12 % a debris speck lying on dark IDC nests is
    # partly kept as tissue (22 % of one speck on SUB-0002), a limit docs/configuration.md
    # names.
    plan = plan_cohort(
        "seg", "subtyping", 10, 8, seed=5, class_weights=[0.5, 0.5], lesion_fraction=0.04
    )
    slides = []
    for row in plan.to_dict("records"):
        slide, truth = root / row["file"], root / f"{row['file']}.npz"
        synthesize_slide(row, slide, truth, width_um=1000, height_um=800, pen_probability=0.6)
        slides.append((row, slide, truth))
    return root, slides


def test_segmentation_matches_ground_truth_on_every_slide(cohort):
    root, slides = cohort
    pen_slides = 0
    for row, slide, truth_file in slides:
        prefix = root / f"{row['slide_id']}-seg"
        mpp = None if np.isnan(row["mpp_override"]) else row["mpp_override"]
        record = segment_slide(
            slide,
            prefix,
            slide_id=row["slide_id"],
            dataset="seg",
            mpp=mpp,
            settings=SegmentationSettings.from_settings(DEMO_SEGMENTATION),
        )
        assert record["status"] == "ok", record
        truth = load_truth(truth_file)
        height, width = truth["tissue"].shape
        cell = truth["downsample"]
        found = rasterize_polygons(
            read_geojson(f"{prefix}.geojson"), width, height, (cell, cell), 2
        ).astype(bool)
        tissue = truth["tissue"]
        iou = (found & tissue).sum() / (found | tissue).sum()
        assert iou >= 0.9, (row["slide_id"], iou)
        artefact = truth["artefact"]
        if artefact.sum() > 50:
            pen_slides += 1
            assert (found & artefact).sum() / artefact.sum() < 0.05, row["slide_id"]
    assert pen_slides >= 2, "the cohort should exercise pen marks and debris"


def test_forty_x_slide_tiles_the_expected_count_at_four_scales(tmp_path):
    plan = plan_cohort(
        "t40", "subtyping", 2, 2, seed=3, format_fractions={"generic": 1.0}, generic_mpps=(0.25,)
    )
    row = plan.iloc[0].to_dict()
    assert row["mpp"] == 0.25
    slide, truth_file = tmp_path / row["file"], tmp_path / "truth.npz"
    synthesize_slide(row, slide, truth_file, width_um=600, height_um=480, downsamples=(1, 4, 16))
    prefix = tmp_path / "seg"
    assert (
        segment_slide(
            slide,
            prefix,
            slide_id="s",
            dataset="t40",
            settings=SegmentationSettings.from_settings(DEMO_SEGMENTATION),
        )["status"]
        == "ok"
    )
    scales = {"40x": 0.25, "20x": 0.5, "10x": 1.0, "5x": 2.0}
    record = tile_slide(
        slide,
        prefix,
        tmp_path / "s.lmdb",
        tmp_path / "s.json",
        slide_id="s",
        dataset="t40",
        settings=TilingSettings.from_settings(
            schema_defaults("tiling") | {"scales": scales, "patch_size": 64}
        ),
    )
    truth = load_truth(truth_file)
    tissue, cell = truth["tissue"], truth["downsample"]
    with PatchStore(tmp_path / "s.lmdb") as store:
        for name, mpp in scales.items():
            side = round(64 * mpp / 0.25 / cell)  # patch footprint in truth pixels
            rows, columns = tissue.shape[0] // side, tissue.shape[1] // side
            blocks = tissue[: rows * side, : columns * side].reshape(rows, side, columns, side)
            expected = int((blocks.mean(axis=(1, 3)) >= 0.5).sum())
            counted = record["patches"][name]
            assert counted == store.count("s", name)
            # The tiler uses the segmentation, not the truth: boundary patches may differ.
            assert abs(counted - expected) <= max(2, 0.05 * expected), (name, counted, expected)
            assert json.loads((tmp_path / "s.json").read_text())["patches"][name] == counted
