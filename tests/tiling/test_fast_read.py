"""Raw JPEG tile reads: same pixels as OpenSlide, used only where they can be, fallbacks."""

from __future__ import annotations

import struct

import cv2
import numpy as np
import pytest
import tifffile

from abmilx.cohort.slidefile import write_slide
from abmilx.slides import Slide
from abmilx.tiling.grid import grid_positions, grid_shape, plan_scale
from abmilx.tiling.read import PatchReader
from abmilx.tiling.store import PatchStore
from abmilx.tiling.tile import tile_slide

MPP = 0.5
# (patch size, target µm/px): level-0 reads smaller than a tile (64), 2x2 tiles (512),
# unaligned (96 px steps over 256 px tiles), level 1 (2.0 and 4.0 µm/px), a fractional step.
CASES = [(64, 0.5), (64, 1.0), (256, 1.0), (64, 0.75), (64, 2.0), (64, 4.0), (64, 0.9)]


def textured(height: int = 1024, width: int = 1536, seed: int = 5) -> np.ndarray:
    rng = np.random.default_rng(seed)
    small = rng.random((height // 8, width // 8, 3)).astype(np.float32)
    field = cv2.resize(small, (width, height), interpolation=cv2.INTER_CUBIC)
    base = np.array([215, 140, 185], np.float32) - field * np.array([90, 70, 30], np.float32)
    noise = rng.normal(0, 10, (height, width, 3)).astype(np.float32)
    return np.clip(base + noise, 0, 255).astype(np.uint8)


@pytest.fixture(scope="module")
def slides(tmp_path_factory):
    root = tmp_path_factory.mktemp("fast")
    image = textured()
    return {
        fmt: write_slide(root / f"s.{fmt}.svs", image, mpp=MPP, slide_format=fmt)
        for fmt in ("aperio", "generic")
    }


def all_patches(reader: PatchReader, positions: np.ndarray) -> np.ndarray:
    units = reader.units(positions)
    order = np.concatenate(units)
    assert sorted(order.tolist()) == list(range(len(positions)))  # each patch exactly once
    out = np.empty((len(positions), reader.plan.patch_size, reader.plan.patch_size, 3), np.uint8)
    for unit in units:
        out[unit] = reader.read_unit(positions[unit])
    return out


@pytest.mark.parametrize("fmt", ["aperio", "generic"])
@pytest.mark.parametrize(("patch_size", "mpp"), CASES)
def test_tile_reads_match_openslide(slides, fmt, patch_size, mpp):
    with Slide(slides[fmt]) as slide:
        plan = plan_scale(slide, "s", mpp, patch_size)
        positions = grid_positions(plan, *grid_shape(plan, *slide.level_dimensions(plan.level)))
        assert len(positions) >= 4
        fast, reference = PatchReader(slide, plan), PatchReader(slide, plan, fast=False)
        assert fast.method == "jpeg_tiles" and reference.method == "openslide"
        difference = np.abs(
            all_patches(fast, positions).astype(int) - all_patches(reference, positions)
        )
        assert difference.max() <= 2, (fmt, patch_size, mpp, difference.max())


def test_store_is_the_same_either_way(slides, tmp_path):
    prefix = tmp_path / "seg"
    square = [[0, 0], [1536, 0], [1536, 1024], [0, 1024], [0, 0]]
    prefix.with_suffix(".geojson").write_text(
        '{"type": "FeatureCollection", "features": [{"type": "Feature", "properties": {}, '
        f'"geometry": {{"type": "Polygon", "coordinates": [{square}]}}}}]}}'
    )
    prefix.with_suffix(".json").write_text('{"status": "ok", "reason": ""}')
    patches, readers = [], []
    for fast in (True, False):
        store = tmp_path / f"{fast}.lmdb"
        record = tile_slide(slides["aperio"], prefix, store, tmp_path / f"{fast}.json",
                            slide_id="s", dataset="d", scales={"main": 1.0, "low": 2.0},
                            patch_size=64, jpeg_quality=90, fast_read=fast, threads=2)  # fmt: skip
        readers.append({k: v["reader"] for k, v in record["tiling"]["scales"].items()})
        with PatchStore(store) as opened:
            assert opened.count("s", "main") == 96 and opened.count("s", "low") == 24
            patches.append(opened.read("s", "main", range(96)).astype(int))
    assert readers == [dict.fromkeys(("main", "low"), m) for m in ("jpeg_tiles", "openslide")]
    assert np.abs(patches[0] - patches[1]).max() <= 2


def test_non_jpeg_tiff_falls_back_to_openslide(tmp_path):
    path = tmp_path / "zlib.tif"
    image = textured(512, 512)
    with tifffile.TiffWriter(path) as tif:
        tif.write(image, photometric="rgb", compression="zlib", tile=(256, 256),
                  resolution=(1e4 / MPP, 1e4 / MPP), resolutionunit="CENTIMETER")  # fmt: skip
    with Slide(path) as slide:
        assert slide.info.vendor == "generic-tiff"
        plan = plan_scale(slide, "s", MPP, 64)
        reader = PatchReader(slide, plan)
        assert reader.method == "openslide" and "not JPEG" in reader.reason
        patch = reader.read_unit(np.array([[64, 128]]))[0]
    np.testing.assert_array_equal(patch, image[128:192, 64:128])


def test_missing_tile_is_read_through_openslide(slides, tmp_path):
    """A tile with byte count 0 (skipped by the scanner): OpenSlide draws it, white."""
    path = tmp_path / "holed.svs"
    path.write_bytes(slides["generic"].read_bytes())
    with tifffile.TiffFile(path) as tif:
        tag = tif.pages[0].tags["TileByteCounts"]
        assert tag.dtype == 4 and tag.count == 24  # LONG, 6 x 4 tiles of 256 px
        offset = tag.valueoffset
    with open(path, "r+b") as handle:
        handle.seek(offset + 4 * 7)  # tile (column 1, row 1)
        handle.write(struct.pack("<I", 0))
    with Slide(path) as slide:
        plan = plan_scale(slide, "s", MPP, 256)
        reader = PatchReader(slide, plan)
        assert reader.method == "jpeg_tiles"
        assert reader.tiles.tile(1, 1) is None
        holed, beside = reader.read_unit(np.array([[256, 256], [512, 256]]))
        expected = PatchReader(slide, plan, fast=False).read_unit(np.array([[512, 256]]))[0]
    assert (holed == 255).all()
    np.testing.assert_array_equal(beside, expected)
