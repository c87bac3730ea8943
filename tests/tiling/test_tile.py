"""Tiling: patch counts from the drawn mask, pixels, empty stores for bad slides, CLI and pack."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest

from abmilx.cohort.slidefile import write_slide
from abmilx.config import schema_defaults
from abmilx.patches.store import PatchStore
from abmilx.segmentation.segment import segment_slide
from abmilx.segmentation.settings import SegmentationSettings
from abmilx.slides import Slide, SlideError
from abmilx.tiling.__main__ import main
from abmilx.tiling.grid import grid_positions, grid_shape, plan_scale, tissue_fractions
from abmilx.tiling.settings import TilingSettings
from abmilx.tiling.tile import tile_slide

cv2.setNumThreads(1)
MPP = 0.5
PATCH = 64
SCALES = {"main": 1.0, "low": 2.0}  # footprints 128 and 256 level-0 px
SEGMENT = schema_defaults("segmentation") | {
    "working_mpp": 2.0, "saturation_threshold": 20, "median_kernel": 3, "closing_um": 4.0,
    "min_tissue_area_um2": 1000.0, "min_hole_area_um2": 500.0,
}  # fmt: skip
TILE = schema_defaults("tiling") | {"scales": SCALES, "patch_size": PATCH, "jpeg_quality": 95}


def drawn_tissue() -> tuple[np.ndarray, np.ndarray]:
    """Tissue rectangle with a hole. Edges sit at 1/8 to 3/8 of a patch, so every patch's
    tissue fraction is at least 0.11 away from 0.5 at both scales."""
    rng = np.random.default_rng(3)
    truth = np.zeros((900, 1200), dtype=bool)
    truth[96:672, 160:864] = True
    truth[272:496, 400:624] = False
    image = np.clip(rng.normal(236, 3, (900, 1200, 3)), 0, 255).astype(np.uint8)
    y, x = np.mgrid[0:900, 0:1200]
    tint = np.stack([200 + 20 * np.sin(x / 37.0), 120 + 25 * np.cos(y / 29.0), 180 + 0 * x], -1)
    image[truth] = np.clip(tint[truth], 0, 255).astype(np.uint8)
    return image, truth


def expected_coords(truth: np.ndarray, footprint: int, min_fraction: float) -> set[tuple[int, int]]:
    """Brute force on the drawn mask: whole patches inside the slide, fraction rule."""
    height, width = truth.shape
    return {
        (x, y)
        for y in range(0, height - footprint + 1, footprint)
        for x in range(0, width - footprint + 1, footprint)
        if truth[y : y + footprint, x : x + footprint].mean() >= min_fraction
    }


@pytest.fixture(scope="module")
def segmented(tmp_path_factory):
    root = tmp_path_factory.mktemp("tiling")
    image, truth = drawn_tissue()
    slide = write_slide(root / "s1.svs", image, mpp=MPP, slide_format="aperio")
    prefix = root / "seg" / "s1"
    assert (
        segment_slide(
            slide,
            prefix,
            slide_id="s1",
            dataset="d",
            settings=SegmentationSettings.from_settings(SEGMENT),
        )["status"]
        == "ok"
    )
    return slide, prefix, image, truth


def test_patch_counts_coords_and_pixels(segmented, tmp_path):
    slide, prefix, image, truth = segmented
    store_path, qc_path = tmp_path / "s1.lmdb", tmp_path / "s1.json"
    record = tile_slide(
        slide,
        prefix,
        store_path,
        qc_path,
        slide_id="s1",
        dataset="d",
        settings=TilingSettings.from_settings(TILE),
    )
    store = PatchStore(store_path)
    for scale, mpp in SCALES.items():
        footprint = round(PATCH * mpp / MPP)
        expected = expected_coords(truth, footprint, 0.5)
        coords = store.coords("s1", scale)
        assert {tuple(c) for c in coords.tolist()} == expected, scale
        assert len(coords) == len(expected) == record["patches"][scale] == store.count("s1", scale)
        assert store.extent_level0("s1", scale) == footprint
    assert record["patches"] == {"main": 20, "low": 6}
    assert record["status"] == "ok"
    assert json.loads(qc_path.read_text()) == record
    assert record["tiling"]["scales"]["low"]["level"] == 1  # 2.0 µm/px read directly
    meta = store.meta
    assert meta["scales"] == {"main": {"mpp": 1.0}, "low": {"mpp": 2.0}}
    assert meta["slide_mpp"] == {"s1": 0.5} and meta["jpeg_quality"] == 95
    # decoded pixels are the slide region resized to the patch size
    for scale in SCALES:
        footprint = round(PATCH * SCALES[scale] / MPP)
        patches = store.read("s1", scale, range(store.count("s1", scale)))
        for patch, (x, y) in zip(patches, store.coords("s1", scale), strict=True):
            region = image[y : y + footprint, x : x + footprint]
            truth_patch = cv2.resize(region, (PATCH, PATCH), interpolation=cv2.INTER_AREA)
            assert np.abs(patch.astype(int) - truth_patch.astype(int)).mean() < 4.0
    store.close()


def test_threads_give_identical_store(segmented, tmp_path):
    slide, prefix, _, _ = segmented
    contents = []
    for threads in (1, 2):
        path = tmp_path / f"t{threads}.lmdb"
        tile_slide(
            slide,
            prefix,
            path,
            tmp_path / f"t{threads}.json",
            slide_id="s1",
            dataset="d",
            threads=threads,
            settings=TilingSettings.from_settings(TILE),
        )
        store = PatchStore(path)
        contents.append(
            [store.read_jpeg("s1", "main", i) for i in range(store.count("s1", "main"))]
        )
        store.close()
    assert contents[0] == contents[1]


def test_failed_slide_gives_empty_store_and_status(tmp_path):
    bad = tmp_path / "bad.svs"
    bad.write_text("not a slide")
    prefix = tmp_path / "seg" / "bad"
    segment_slide(
        bad,
        prefix,
        slide_id="bad",
        dataset="d",
        settings=SegmentationSettings.from_settings(SEGMENT),
    )
    store_path = tmp_path / "bad.lmdb"
    record = tile_slide(
        bad,
        prefix,
        store_path,
        tmp_path / "bad.json",
        slide_id="bad",
        dataset="d",
        settings=TilingSettings.from_settings(TILE),
    )
    assert record["status"] == "failed" and "not a slide file" in record["reason"]
    assert record["patches"] == {"main": 0, "low": 0}
    with PatchStore(store_path) as store:
        assert store.meta["slides"] == {"bad": {"main": 0, "low": 0}}
        assert store.coords("bad", "main").shape == (0, 2)
    with pytest.raises(SlideError, match="slide bad: failed"):
        tile_slide(
            bad,
            prefix,
            tmp_path / "strict.lmdb",
            tmp_path / "strict.json",
            slide_id="bad",
            dataset="d",
            strict=True,
            settings=TilingSettings.from_settings(TILE),
        )
    # a failed job leaves no file that looks finished (profiles/slurm keeps a failed job's files)
    assert not (tmp_path / "strict.lmdb").exists() and not (tmp_path / "strict.json").exists()


def test_tissue_smaller_than_a_patch_is_no_tissue(segmented, tmp_path):
    slide, prefix, _, _ = segmented
    record = tile_slide(
        slide,
        prefix,
        tmp_path / "x.lmdb",
        tmp_path / "x.json",
        slide_id="s1",
        dataset="d",
        settings=TilingSettings.from_settings({**TILE, "patch_size": 512}),
    )
    assert record["status"] == "no_tissue" and "no patch" in record["reason"]
    assert PatchStore(tmp_path / "x.lmdb").meta["slides"]["s1"] == {"main": 0, "low": 0}


def test_cli_tile_and_pack(segmented, tmp_path, capsys):
    slide, prefix, _, _ = segmented
    stores = []
    for slide_id, path in (("s1", slide), ("broken", tmp_path / "broken.svs")):
        if slide_id == "broken":
            path.write_bytes(b"")
            segment_slide(
                path,
                tmp_path / "broken",
                slide_id=slide_id,
                dataset="d",
                settings=SegmentationSettings.from_settings(SEGMENT),
            )
        seg = prefix if slide_id == "s1" else tmp_path / "broken"
        store = tmp_path / "slides" / f"{slide_id}.lmdb"
        args = ["tile", "--slide", str(path), "--slide-id", slide_id, "--dataset", "d",
                "--mpp", "", "--segmentation", str(seg), "--out-store", str(store),
                "--out-qc", str(store.with_suffix(".json")), "--settings", json.dumps(TILE),
                "--threads", "2"]  # fmt: skip
        assert main(args) == 0
        stores.append(str(store))
    assert "broken: failed" in capsys.readouterr().err
    for mode in ("index", "copy"):
        packed = tmp_path / f"patches-{mode}.lmdb"
        assert main(["pack", "--mode", mode, "--stores", *stores, "--out", str(packed)]) == 0
        with PatchStore(packed) as store:
            assert store.is_index == (mode == "index")
            assert store.slide_ids == ["s1"]
            assert store.count("s1", "main") == 20
    strict = json.dumps({**TILE, "strict": True})
    assert main([*args[:-3], strict, "--threads", "1"]) == 1
    assert "slide broken" in capsys.readouterr().err


def test_grid_with_fractional_footprint(segmented):
    slide, _, _, _ = segmented
    with Slide(slide, mpp_override=0.45) as opened:  # footprint 142.2 level-0 px at 1.0 µm/px
        plan = plan_scale(opened, "main", 1.0, PATCH, 0.0)
        assert plan.extent_level0 == pytest.approx(142.222, abs=1e-3) and plan.read_size == 142
        rows, columns = grid_shape(plan, 1200, 900)
        assert (rows, columns) == (6, 8)  # round(7 * 142.2) + 142 = 1137 <= 1200 < 1280
        positions = grid_positions(plan, rows, columns)
        assert positions[:3, 0].tolist() == [0, 142, 284] and positions[-1].tolist() == [996, 711]
        square = [np.array([[0, 0], [142.222 * 2, 0], [142.222 * 2, 900], [0, 900]])]
        fractions = tissue_fractions([square], plan, rows, columns).reshape(rows, columns)
        assert (fractions[:, :2] == 1).all() and (fractions[:, 2:] == 0).all()
