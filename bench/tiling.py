"""Tiling throughput per scale beside the decode-bound limit of the same slide.

Writes a synthetic aperio slide (tissue-like texture everywhere, 0.25 µm/px, levels 1/4/16),
tiles it with :func:`abmilx.tiling.tile.tile_slide` one scale at a time, and compares the patch
rate with reading the raw JPEG tiles of the level that scale reads and decoding them (the most
any reader of this file can do). Rates are per core (one thread) unless stated.

Columns: ``openslide/s`` is ``tile_slide`` with ``fast_read=False`` (one ``read_region`` per
patch); ``tile/s`` with the raw-tile fast path, end to end (per-slide set-up included, which
weighs on scales with few patches) on 1 and N threads; ``loop/s`` the steady per-patch rate of
the fast path (read, resize, JPEG encode; no store); ``decode-bound/s`` the limit;
``bound/loop`` how far the loop is from it (goal: <= 2).

Run: ``.venv/bin/python bench/tiling.py [--size 4096] [--threads 2]``
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
import tifffile

from abmilx.cohort.slidefile import write_slide
from abmilx.segmentation.geometry import polygons_to_geojson
from abmilx.slides import Slide
from abmilx.tiling.grid import grid_positions, grid_shape, plan_scale
from abmilx.tiling.read import PatchReader
from abmilx.tiling.store import encode_jpeg
from abmilx.tiling.tile import tile_slide

SLIDE_MPP = 0.25
SCALES = {"40x": 0.25, "20x": 0.5, "10x": 1.0, "5x": 2.0}


def texture(size: int, seed: int = 0) -> np.ndarray:
    """H&E-like texture with fine detail, so JPEG costs are realistic."""
    rng = np.random.default_rng(seed)
    small = rng.random((size // 16, size // 16, 3)).astype(np.float32)
    field = cv2.resize(small, (size, size), interpolation=cv2.INTER_CUBIC)
    base = np.array([215, 140, 185], np.float32) - field * np.array([90, 70, 30], np.float32)
    noise = rng.normal(0, 12, (size, size, 3)).astype(np.float32)
    return np.clip(base + noise, 0, 255).astype(np.uint8)


def write_segmentation(prefix: Path, size: int) -> None:
    """A segmentation record and GeoJSON that call the whole slide tissue."""
    square = [np.array([[0, 0], [size, 0], [size, size], [0, size]], np.float64)]
    Path(f"{prefix}.geojson").write_text(json.dumps(polygons_to_geojson([square])))
    Path(f"{prefix}.json").write_text(json.dumps({"status": "ok", "reason": ""}))


def decode_rate(slide_path: Path, level: int, seconds: float = 2.0) -> float:
    """Level pixels per second from reading raw JPEG tiles and decoding them (one thread)."""
    with tifffile.TiffFile(slide_path) as tif:
        page = next(p for p in tif.pages if p.is_tiled and p.imagewidth == _level_width(tif, level))
        pixels, start = 0, time.perf_counter()
        while time.perf_counter() - start < seconds:
            segments = tif.filehandle.read_segments(page.dataoffsets, page.databytecounts)
            for data, index in segments:
                decoded = page.decode(data, index, jpegtables=page.jpegtables)[0]
                pixels += decoded.shape[1] * decoded.shape[2]
        return pixels / (time.perf_counter() - start)


def loop_rate(slide_path: Path, name: str, mpp: float, patch_size: int, seconds: float = 1.0):
    """Patches per second of the fast path's inner loop: read, resize and encode (one thread)."""
    with Slide(slide_path) as slide:
        plan = plan_scale(slide, name, mpp, patch_size)
        positions = grid_positions(plan, *grid_shape(plan, *slide.level_dimensions(plan.level)))
        reader = PatchReader(slide, plan)
        units = reader.units(positions)
        count, start = 0, time.perf_counter()
        while time.perf_counter() - start < seconds:
            for unit in units:
                for patch in reader.read_unit(positions[unit]):
                    encode_jpeg(patch, 80)
                count += len(unit)
        return count / (time.perf_counter() - start), reader.method


def _level_width(tif: tifffile.TiffFile, level: int) -> int:
    widths = sorted({p.imagewidth for p in tif.pages if p.is_tiled}, reverse=True)
    return widths[level]


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=8192, help="slide side in level-0 px")
    parser.add_argument("--patch-size", type=int, default=256)
    parser.add_argument("--threads", type=int, default=2, help="also measure with this many")
    args = parser.parse_args(argv)
    cv2.setNumThreads(1)
    results: dict[str, dict] = {}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        slide_path = write_slide(root / "bench.svs", texture(args.size), mpp=SLIDE_MPP)
        prefix = root / "seg"
        write_segmentation(prefix, args.size)
        with Slide(slide_path) as slide:
            plans = {
                name: plan_scale(slide, name, mpp, args.patch_size) for name, mpp in SCALES.items()
            }
        print(f"slide {args.size}x{args.size} px at {SLIDE_MPP} µm/px, patch {args.patch_size} px")
        header = f"{'scale':>5} {'µm/px':>6} {'level':>5} {'read':>5} {'patches':>7} "
        header += f"{'openslide/s':>11} {'tile/s':>7} {'tile/s x' + str(args.threads):>10} "
        header += f"{'loop/s':>7} {'decode-bound/s':>14} {'bound/loop':>10}"
        print(header)
        for name, plan in plans.items():
            rates = {}
            count = 0
            for label, threads, fast in (
                ("openslide", 1, False), ("fast", 1, True), ("fast_threads", args.threads, True),
            ):  # fmt: skip
                store = root / f"{name}-{label}.lmdb"
                start = time.perf_counter()
                record = tile_slide(
                    slide_path,
                    prefix,
                    store,
                    root / f"{name}.json",
                    slide_id="bench",
                    dataset="bench",
                    scales={name: plan.mpp},
                    patch_size=args.patch_size,
                    fast_read=fast,
                    threads=threads,
                )
                elapsed = time.perf_counter() - start
                count = record["patches"][name]
                rates[label] = count / elapsed
                store.unlink()
            loop, method = loop_rate(slide_path, name, plan.mpp, args.patch_size)
            decoded_pixels = decode_rate(slide_path, plan.level)
            decode_bound = decoded_pixels / plan.read_size**2
            results[name] = {
                "mpp": plan.mpp, "level": plan.level, "read_size": plan.read_size,
                "patches": count, "reader": method, "openslide_per_core": rates["openslide"],
                "per_core": rates["fast"], f"threads_{args.threads}": rates["fast_threads"],
                "loop_per_core": loop, "decode_bound_per_core": decode_bound,
            }  # fmt: skip
            print(
                f"{name:>5} {plan.mpp:>6} {plan.level:>5} {plan.read_size:>5} {count:>7} "
                f"{rates['openslide']:>11.0f} {rates['fast']:>7.0f} {rates['fast_threads']:>10.0f} "
                f"{loop:>7.0f} {decode_bound:>14.0f} {decode_bound / loop:>10.2f}"
            )
    return results


if __name__ == "__main__":
    main()
