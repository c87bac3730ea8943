"""Raw JPEG tile reads: OpenSlide's pixels, one decode per source tile, pass-through, fallbacks."""

from __future__ import annotations

import json
import struct
from collections import Counter

import cv2
import imagecodecs
import numpy as np
import pytest
import tifffile

from abmilx.cohort.slidefile import write_slide
from abmilx.config import schema_defaults
from abmilx.patches.store import PatchStore, decode_jpeg, encode_jpeg
from abmilx.slides import JpegTiles, Slide, SlideError
from abmilx.tiling.grid import grid_positions, grid_shape, plan_scale
from abmilx.tiling.read import LevelReader, ScaleJob, _region
from abmilx.tiling.settings import TilingSettings
from abmilx.tiling.tile import tile_slide

MPP = 0.5
QUALITY = 90
# (patch size, target µm/px): level-0 reads smaller than a tile (64), 2x2 tiles (512),
# unaligned (96 px steps), level 1 (2.0 and 4.0 µm/px), a fractional step.
CASES = [(64, 0.5), (64, 1.0), (256, 1.0), (64, 0.75), (64, 2.0), (64, 4.0), (64, 0.9)]
# slide name -> how it is written: write_slide's tile size, or a TIFF with shared JPEGTables
SLIDES = ["aperio", "generic", "aperio240", "tables240"]

TILING = schema_defaults("tiling")


def textured(height: int = 1024, width: int = 1536, seed: int = 5) -> np.ndarray:
    rng = np.random.default_rng(seed)
    small = rng.random((height // 8, width // 8, 3)).astype(np.float32)
    field = cv2.resize(small, (width, height), interpolation=cv2.INTER_CUBIC)
    base = np.array([215, 140, 185], np.float32) - field * np.array([90, 70, 30], np.float32)
    noise = rng.normal(0, 10, (height, width, 3)).astype(np.float32)
    return np.clip(base + noise, 0, 255).astype(np.uint8)


def split_tables(jpeg: bytes) -> tuple[bytes, bytes]:
    """``(tables, abbreviated tile)`` as a scanner stores them: DQT and DHT go to the shared
    JPEGTables, APPn markers are dropped (the TIFF photometric tag gives the colour space)."""
    tables, body, pos = [b"\xff\xd8"], [b"\xff\xd8"], 2
    while jpeg[pos : pos + 2] != b"\xff\xda":
        marker = jpeg[pos + 1]
        segment = jpeg[pos : pos + 2 + int.from_bytes(jpeg[pos + 2 : pos + 4], "big")]
        if marker in (0xDB, 0xC4):
            tables.append(segment)
        elif not 0xE0 <= marker <= 0xEF:
            body.append(segment)
        pos += len(segment)
    return b"".join(tables) + b"\xff\xd9", b"".join(body) + jpeg[pos:]


def write_tables_slide(path, image: np.ndarray, tile: int, photometric: str = "ycbcr"):
    """A one-level Aperio TIFF whose JPEG tiles share one JPEGTables tag, like real scans."""
    height, width = image.shape[:2]
    space = "RGB" if photometric == "rgb" else "YCBCR"
    tiles, tables = [], None
    for y in range(0, height, tile):
        for x in range(0, width, tile):
            block = np.zeros((tile, tile, 3), np.uint8)
            part = image[y : y + tile, x : x + tile]
            block[: part.shape[0], : part.shape[1]] = part
            data = imagecodecs.jpeg8_encode(
                block, level=85, colorspace="RGB", outcolorspace=space,
                subsampling=(2, 2) if space == "YCBCR" else (1, 1),
            )  # fmt: skip
            shared, body = split_tables(data)
            assert tables in (None, shared)
            tables = shared
            tiles.append(body)
    with tifffile.TiffWriter(path) as tif:
        tif.write(
            iter(tiles), shape=(height, width, 3), dtype=np.uint8, tile=(tile, tile),
            compression="jpeg", photometric=photometric, jpegtables=tables, metadata=None,
            subsampling=(2, 2) if space == "YCBCR" else (1, 1),
            compressionargs={"outcolorspace": space},
            description=f"Aperio Image Library v12.0.0 \r\n{width}x{height} ({tile}x{tile}) "
            f"JPEG/RGB Q=85|AppMag = 20|MPP = {MPP:.6f}",
            resolution=(1e4 / MPP, 1e4 / MPP), resolutionunit="CENTIMETER",
        )  # fmt: skip
    return path


@pytest.fixture(scope="module")
def slides(tmp_path_factory):
    root = tmp_path_factory.mktemp("fast")
    image = textured()
    return {
        "image": image,
        "aperio": write_slide(root / "a.svs", image, mpp=MPP),
        "generic": write_slide(root / "g.tif", image, mpp=MPP, slide_format="generic"),
        "aperio240": write_slide(root / "a240.svs", image, mpp=MPP, tile=240),
        "tables240": write_tables_slide(root / "t240.svs", image, 240),
        "tables256": write_tables_slide(root / "t256.svs", image, 256),
        "rgb256": write_tables_slide(root / "r256.svs", image, 256, "rgb"),
    }


def grid_job(slide: Slide, patch_size: int, mpp: float) -> ScaleJob:
    plan = plan_scale(slide, f"{patch_size}@{mpp}", mpp, patch_size, 0.0)
    return ScaleJob(
        plan, grid_positions(plan, *grid_shape(plan, *slide.level_dimensions(plan.level)))
    )


def stored(reader: LevelReader, jobs: list[ScaleJob]) -> dict[str, list]:
    """JPEG bytes per scale, checking that each scale comes out in index order."""
    out: dict[str, list] = {job.plan.name: [] for job in jobs}
    for (scale, index), data in reader.jpegs(jobs, QUALITY):
        assert index == len(out[scale])
        out[scale].append(data)
    return out


def openslide_patch(slide: Slide, job: ScaleJob, x: int, y: int) -> np.ndarray:
    plan = job.plan
    region = slide.read_level(plan.level, x, y, plan.read_size, plan.read_size)
    return cv2.resize(region, (plan.patch_size,) * 2, interpolation=cv2.INTER_AREA)


@pytest.mark.parametrize("name", SLIDES)
def test_stored_patches_are_openslide_reads(slides, name):
    """Aligned and misaligned grids, every scale of a level in one pass: each stored patch
    decodes to OpenSlide's read_region, resized, after the same JPEG round trip."""
    with Slide(slides[name]) as slide:
        by_level: dict[int, list[ScaleJob]] = {}
        for patch_size, mpp in CASES:
            job = grid_job(slide, patch_size, mpp)
            by_level.setdefault(job.plan.level, []).append(job)
        for level, jobs in by_level.items():
            reader = LevelReader(slide, level, [job.plan for job in jobs], passthrough=False)
            assert {m for m, _ in reader.methods.values()} == {"jpeg_tiles"}
            patches = stored(reader, jobs)
            for job in jobs:
                assert len(patches[job.plan.name]) == len(job.positions) >= 4
                for data, (x, y) in zip(
                    patches[job.plan.name], job.positions.tolist(), strict=True
                ):
                    expected = decode_jpeg(encode_jpeg(openslide_patch(slide, job, x, y), QUALITY))
                    difference = np.abs(decode_jpeg(data).astype(int) - expected)
                    assert difference.mean() < 0.5 and difference.max() <= 16, (job.plan, x, y)


@pytest.mark.parametrize("name", ["aperio", "tables256", "rgb256"])
def test_pass_through_keeps_the_tile_bytes(slides, name, monkeypatch):
    """A patch that is exactly one tile is stored as the tile's own JPEG (tables merged in,
    RGB marked): no decode, and it decodes to OpenSlide's pixels."""
    decodes = Counter()
    original = JpegTiles.tile
    monkeypatch.setattr(
        JpegTiles,
        "tile",
        lambda t, c, r, out=None: decodes.update([(c, r)]) or original(t, c, r, out),
    )
    with Slide(slides[name]) as slide:
        job = grid_job(slide, 256, MPP)
        reader = LevelReader(slide, 0, [job.plan])
        assert reader.methods == {job.plan.name: ("passthrough", "")}
        patches = stored(reader, [job])[job.plan.name]
        assert not decodes
        assert len(patches) == 24
        for data, (x, y) in zip(patches, job.positions.tolist(), strict=True):
            assert data == reader.tiles.standalone_jpeg(x // 256, y // 256)
            assert data[:2] == b"\xff\xd8" and data[-2:] == b"\xff\xd9"
            difference = np.abs(decode_jpeg(data).astype(int) - openslide_patch(slide, job, x, y))
            assert difference.max() <= 1, (name, x, y)


def test_one_decode_per_source_tile(slides, tmp_path, monkeypatch):
    """Patches across the edges of 240-px tiles at two scales of one level (one read as is, one
    shrunk 2x from it, like 40x and 20x from 40x) and a third on level 1, in worker threads:
    every tile that a kept patch touches is decoded exactly once, and no other tile."""
    decodes = Counter()
    original = JpegTiles.tile

    def counting(tiles, column, row, out=None):
        decodes.update([(tiles.page_index, column, row)])
        return original(tiles, column, row, out)

    monkeypatch.setattr(JpegTiles, "tile", counting)
    prefix = tmp_path / "seg"
    ring = [[100, 50], [1400, 120], [1300, 1000], [40, 900], [100, 50]]  # tilted: ragged rows
    prefix.with_suffix(".geojson").write_text(json.dumps({"type": "FeatureCollection", "features": [
        {"type": "Feature", "properties": {}, "geometry": {"type": "Polygon", "coordinates": [ring]}}
    ]}))  # fmt: skip
    prefix.with_suffix(".json").write_text('{"status": "ok", "reason": ""}')
    scales = {"fine": 0.5, "half": 1.0, "low": 2.0}
    record = tile_slide(
        slides["aperio240"],
        prefix,
        tmp_path / "s.lmdb",
        tmp_path / "s.json",
        slide_id="s",
        dataset="d",
        threads=2,
        settings=TilingSettings.from_settings(TILING | {"scales": scales, "patch_size": 64}),
    )
    assert record["patches"]["fine"] > 100 and record["patches"]["low"] > 4
    assert set(decodes.values()) == {1}
    touched = set()
    with PatchStore(tmp_path / "s.lmdb") as store, Slide(slides["aperio240"]) as slide:
        for scale, mpp in scales.items():
            plan = plan_scale(slide, scale, mpp, 64, 0.0)
            page = slide.jpeg_tiles(plan.level).page_index
            step = 240 * slide.downsamples[plan.level]  # tile side in level-0 px
            for x, y in store.coords("s", scale).tolist():
                end_x, end_y = x + plan.extent_level0 - 1, y + plan.extent_level0 - 1
                touched |= {(page, c, r) for c in range(int(x // step), int(end_x // step) + 1)
                            for r in range(int(y // step), int(end_y // step) + 1)}  # fmt: skip
    assert set(decodes) == touched


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
        record = tile_slide(
            slides["aperio"],
            prefix,
            store,
            tmp_path / f"{fast}.json",
            slide_id="s",
            dataset="d",
            threads=2,
            settings=TilingSettings.from_settings(
                TILING
                | {
                    "scales": {"main": 1.0, "low": 2.0},
                    "patch_size": 64,
                    "jpeg_quality": 90,
                    "fast_read": fast,
                }
            ),
        )
        readers.append({k: v["reader"] for k, v in record["tiling"]["scales"].items()})
        with PatchStore(store) as opened:
            assert opened.count("s", "main") == 96 and opened.count("s", "low") == 24
            patches.append(opened.read("s", "main", range(96)).astype(int))
    assert readers == [dict.fromkeys(("main", "low"), m) for m in ("jpeg_tiles", "openslide")]
    assert np.abs(patches[0] - patches[1]).max() <= 2


@pytest.mark.parametrize("name", ["aperio", "aperio240"])
def test_halved_tiles_give_the_patches_of_halved_regions(slides, name, monkeypatch):
    """A 2x scale cut from tiles each shrunk once (beside a scale read as is, on 256- and
    240-px tiles) stores the same bytes as shrinking each patch's region; an odd grid origin
    is not halved."""
    with Slide(slides[name]) as slide:
        jobs = [grid_job(slide, 64, 1.0), grid_job(slide, 64, 0.5)]
        odd = ScaleJob(jobs[0].plan, jobs[0].positions + 1)
        reader = LevelReader(slide, 0, [job.plan for job in jobs], passthrough=False)
        assert [reader._halves(job) for job in [*jobs, odd]] == [True, False, False]
        halved = stored(reader, jobs)
        monkeypatch.setattr(LevelReader, "_halves", lambda self, job: False)
        assert stored(reader, jobs) == halved


def test_non_jpeg_tiff_falls_back_to_openslide(tmp_path):
    path = tmp_path / "zlib.tif"
    image = textured(512, 512)
    with tifffile.TiffWriter(path) as tif:
        tif.write(image, photometric="rgb", compression="zlib", tile=(256, 256),
                  resolution=(1e4 / MPP, 1e4 / MPP), resolutionunit="CENTIMETER")  # fmt: skip
    with Slide(path) as slide:
        assert slide.info.vendor == "generic-tiff"
        job = ScaleJob(plan_scale(slide, "s", MPP, 64, 0.0), np.array([[64, 128]]))
        reader = LevelReader(slide, 0, [job.plan])
        method, reason = reader.methods["s"]
        assert method == "openslide" and "not JPEG" in reason
        data = stored(reader, [job])["s"][0]
    expected = decode_jpeg(encode_jpeg(image[128:192, 64:128], QUALITY))
    np.testing.assert_array_equal(decode_jpeg(data), expected)


def with_tile_count(source, path, count) -> None:
    """Copy ``source`` to ``path`` with the byte count of tile (column 1, row 1) set."""
    path.write_bytes(source.read_bytes())
    with tifffile.TiffFile(path) as tif:
        tag = tif.pages[0].tags["TileByteCounts"]
        assert tag.dtype == 4 and tag.count == 24  # LONG, 6 x 4 tiles of 256 px
        offset = tag.valueoffset
        count = count(tif.pages[0].databytecounts[7])
    with open(path, "r+b") as handle:
        handle.seek(offset + 4 * 7)
        handle.write(struct.pack("<I", count))


@pytest.mark.parametrize("passthrough", [False, True])
def test_missing_tile_is_read_through_openslide(slides, tmp_path, passthrough):
    """A tile with byte count 0 (skipped by the scanner): OpenSlide draws it, white."""
    path = tmp_path / "holed.svs"
    with_tile_count(slides["generic"], path, lambda count: 0)
    with Slide(path) as slide:
        job = ScaleJob(plan_scale(slide, "s", MPP, 256, 0.0), np.array([[256, 256], [512, 256]]))
        reader = LevelReader(slide, 0, [job.plan], passthrough=passthrough)
        assert reader.tiles.tile(1, 1) is None
        holed, beside = (decode_jpeg(d) for d in stored(reader, [job])["s"])
        expected = openslide_patch(slide, job, 512, 256)
    if not passthrough:  # cut from decoded tiles and encoded, not stored as it was
        expected = decode_jpeg(encode_jpeg(expected, QUALITY))
    assert (holed >= 254).all()
    assert np.abs(beside.astype(int) - expected).max() <= 1


@pytest.mark.parametrize("passthrough", [False, True])
def test_truncated_tile_is_reported_not_stored(slides, tmp_path, passthrough):
    """A tile cut short (no EOI): libjpeg would fill it in grey, OpenSlide reports it."""
    path = tmp_path / "cut.svs"
    with_tile_count(slides["generic"], path, lambda count: count // 2)
    with Slide(path) as slide:
        job = ScaleJob(plan_scale(slide, "s", MPP, 256, 0.0), np.array([[256, 256]]))
        reader = LevelReader(slide, 0, [job.plan], passthrough=passthrough)
        assert reader.tiles.tile(1, 1) is None and reader.tiles.standalone_jpeg(1, 1) is None
        with pytest.raises(SlideError, match=r"unreadable tile at level 0 near \(256, 256\)"):
            stored(reader, [job])


@pytest.mark.parametrize(
    ("x", "y", "factor"), [(480, 240, 2), (0, 96, 2), (240, 480, 4), (8, 0, 4), (1, 3, 2)]
)
def test_patch_cut_from_tiles_is_the_region(x, y, factor):
    """A region spanning several tiles, put together and shrunk: the image's own pixels."""
    rng = np.random.default_rng(factor)
    image = rng.integers(0, 256, (1200, 1200, 3), dtype=np.uint8)
    size, tile = 128 * factor, 240
    parts = [
        (c, r, image[r * tile : (r + 1) * tile, c * tile : (c + 1) * tile])
        for r in range(y // tile, (y + size - 1) // tile + 1)
        for c in range(x // tile, (x + size - 1) // tile + 1)
    ]
    assert len(parts) > 1
    region = _region(parts, x, y, size, tile, tile)
    np.testing.assert_array_equal(region, image[y : y + size, x : x + size])
    assert not any(np.shares_memory(region, pixels) for _, _, pixels in parts)


def test_patch_inside_one_tile_is_a_copy():
    """A patch inside one tile is copied out: the tile's memory is reused for a later row."""
    tile = np.arange(240 * 240 * 3, dtype=np.uint32).astype(np.uint8).reshape(240, 240, 3)
    region = _region([(1, 2, tile)], 250, 500, 64, 240, 240)
    np.testing.assert_array_equal(region, tile[20:84, 10:74])
    assert not np.shares_memory(region, tile)
