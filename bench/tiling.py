"""Tiling end to end per slide, beside the decode-once-plus-encode limit of the same work.

Writes two synthetic 40x aperio slides (0.25 µm/px, levels 1/4/16, a tissue ellipse on white
glass): one with 240-px JPEG tiles, as most real Aperio scans have, and one with 256-px tiles.
On each it runs the per-slide commands exactly as the workflow's rules do (``python -m
abmilx.segmentation segment``, then ``python -m abmilx.tiling tile``; process start-up
included), once per scale alone, once with all four scales and once with the config's own
scales (``default``: 10x and 5x, the paper's non-PANDA setting), with the config's defaults
(``--working-mpp`` changes the segmentation view's resolution).

Beside each run, the limit of that work on one core: decoding every source tile that a stored
patch touches, once per slide (scales on one level share their tiles), plus JPEG-encoding every
stored patch at the store's quality. ``pass s`` is the time to read the raw bytes of the patches
that are passed through (256-px tiles at their own resolution: no decode, no encode), which is
why those runs can beat the limit.

Times are CPU seconds (user + sys) on one core: of the commands' processes, and of this process
for the limit. On a shared, busy machine wall time also counts the wait for a core, so CPU time
is the per-core figure that holds; the commands' wall time is printed too (``wall s``).
Columns: ``seg s`` and ``tile s`` the two commands, ``e2e s`` their sum, ``work s`` the same
tiling called in this process (no start-up, no segmentation), ``limit s`` = ``decode s`` +
``encode s``, ``e2e/limit`` (goal <= 1.5), ``work/limit``, ``shrink s`` the 2x shrink of each
tile of a scale read at twice its size (20x from 40x, 5x from 10x: work the tiler does that the
limit does not count), ``work/all`` = work / (limit + shrink), and patches per second end to end
and at the limit. Everything runs on one thread (``--threads 1``, like the rules).

The default slide (32,768 px square, about 9,300 patches at 40x) is small next to a real one, yet
large enough that the per-slide fixed costs (two interpreter start-ups and the segmentation, about
0.9 s of CPU) weigh little at 40x and 20x; a scale alone that reads the 10x level has a limit of a
fraction of a second, which the fixed costs alone exceed on any slide: the segmentation of the
4 µm/px view grows with the slide like that limit, at about twice its cost.

Run: ``python bench/tiling.py [--size 32768]`` or ``python -m bench``.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

import abmilx
from abmilx.cohort.slidefile import write_slide
from abmilx.config import ConfigError, validate_config
from abmilx.patches.store import PatchStore, encode_jpeg
from abmilx.slides import Slide
from abmilx.tiling.grid import plan_scale
from abmilx.tiling.settings import TilingSettings
from abmilx.tiling.tile import tile_slide

SLIDE_MPP = 0.25
SCALES = {"40x": 0.25, "20x": 0.5, "10x": 1.0, "5x": 2.0}
RUNS = {**{name: {name: mpp} for name, mpp in SCALES.items()}, "all": SCALES, "default": None}
TILE_SIZES = (240, 256)
GOAL = 1.5  # end to end within this factor of the limit
_BLOCK = 2048  # side of the texture block the slide is tiled with


def texture(size: int, seed: int = 0) -> np.ndarray:
    """H&E-like texture with fine detail, so JPEG costs are realistic."""
    rng = np.random.default_rng(seed)
    small = rng.random((size // 16, size // 16, 3)).astype(np.float32)
    field = cv2.resize(small, (size, size), interpolation=cv2.INTER_CUBIC)
    base = np.array([215, 140, 185], np.float32) - field * np.array([90, 70, 30], np.float32)
    noise = rng.normal(0, 12, (size, size, 3)).astype(np.float32)
    return np.clip(base + noise, 0, 255).astype(np.uint8)


def slide_image(size: int) -> np.ndarray:
    """Tissue texture inside an ellipse (about 56% of the slide), near-white glass outside."""
    block = texture(min(size, _BLOCK))
    reps = -(-size // block.shape[0])
    image = np.tile(block, (reps, reps, 1))[:size, :size]
    x = ((np.arange(size) - size / 2) / (0.45 * size)) ** 2
    for top in range(0, size, _BLOCK):  # in bands: a whole-slide mask would double the memory
        y = ((np.arange(top, min(size, top + _BLOCK)) - size / 2) / (0.4 * size)) ** 2
        image[top : top + len(y)][y[:, None] + x[None, :] > 1] = 242
    return image


def _cpu_children() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _command(name: str, args: list[str]) -> tuple[float, float]:
    """``(cpu s, wall s)`` of ``python -m abmilx.<name> ...`` run as the rules run it."""
    env = dict(os.environ, OMP_NUM_THREADS="1")
    env["PYTHONPATH"] = os.pathsep.join(
        [str(Path(abmilx.__file__).parents[1]), env.get("PYTHONPATH", "")]
    )
    cpu, start = _cpu_children(), time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", f"abmilx.{name}", *args], env=env, capture_output=True, text=True
    )
    wall = time.perf_counter() - start
    if done.returncode != 0:
        raise RuntimeError(f"abmilx.{name} failed:\n{done.stderr}")
    return _cpu_children() - cpu, wall


def run_slide(slide: Path, out: Path, config: dict, scales: dict[str, float]) -> dict:
    """Both per-slide commands on ``slide`` with ``scales``, then the tiling in this process."""
    prefix = out / "seg"
    segment = _command(
        "segmentation",
        ["segment", "--slide", str(slide), "--slide-id", "s", "--dataset", "bench", "--mpp", "",
         "--out-prefix", str(prefix),
         "--settings", json.dumps({**config["segmentation"], "strict": False})],
    )  # fmt: skip
    tiling = {**config["tiling"], "scales": scales, "strict": False}
    tile = _command(
        "tiling",
        ["tile", "--slide", str(slide), "--slide-id", "s", "--dataset", "bench", "--mpp", "",
         "--segmentation", str(prefix), "--out-store", str(out / "s.lmdb"),
         "--out-qc", str(out / "s.json"), "--settings", json.dumps(tiling), "--threads", "1"],
    )  # fmt: skip
    start = time.process_time()  # no start-up, no segmentation
    tile_slide(
        slide,
        prefix,
        out / "again.lmdb",
        out / "again.json",
        slide_id="s",
        dataset="bench",
        settings=TilingSettings.from_settings(
            {key: tiling[key] for key in tiling if key != "strict"}
        ),
    )
    return {"segment_s": segment[0], "tile_s": tile[0], "work_s": time.process_time() - start,
            "e2e_wall_s": segment[1] + tile[1]}  # fmt: skip


def limit(slide_path: Path, store_path: Path, qc_path: Path, quality: int) -> dict:
    """Seconds to decode every tile the stored patches touch (once) and encode every patch;
    apart (``shrink_s``, not in the limit), shrinking 2x once each tile of a scale read at twice
    its size, as the tiler does (20x from 40x, 5x from 10x)."""
    record = json.loads(qc_path.read_text())
    touched: dict[int, set] = {}
    halved: dict[int, set] = {}
    patches, passed = [], []
    with Slide(slide_path) as slide, PatchStore(store_path) as store:
        for scale, plan_record in record["tiling"]["scales"].items():
            plan = plan_scale(slide, scale, plan_record["mpp"], plan_record["patch_size"],
                              record["tiling"]["level_tolerance"])  # fmt: skip
            tiles = slide.jpeg_tiles(plan.level)
            positions = store.coords("s", scale) // round(slide.downsamples[plan.level])
            if plan_record["reader"] == "passthrough":
                passed += [(tiles, x // tiles.tile_width, y // tiles.tile_height)
                           for x, y in positions.tolist()]  # fmt: skip
            keys = set()
            for x, y in positions.tolist():
                end_x, end_y = x + plan.read_size - 1, y + plan.read_size - 1
                keys.update((c, r) for c in range(x // tiles.tile_width, end_x // tiles.tile_width + 1)
                            for r in range(y // tiles.tile_height, end_y // tiles.tile_height + 1))  # fmt: skip
            touched.setdefault(plan.level, set()).update(keys)
            if plan_record["reader"] == "jpeg_tiles" and plan.read_size == 2 * plan.patch_size:
                halved.setdefault(plan.level, set()).update(keys)
            patches.append(store.read("s", scale, range(store.count("s", scale))))
        decode = shrink = 0.0
        for level, keys in touched.items():
            tiles = slide.jpeg_tiles(level)
            half = np.empty((tiles.tile_height // 2, tiles.tile_width // 2, 3), np.uint8)
            for column, row in sorted(keys, key=lambda k: (k[1], k[0])):
                start = time.process_time()
                pixels = tiles.tile(column, row)
                decode += time.process_time() - start
                if pixels is not None and (column, row) in halved.get(level, ()):
                    start = time.process_time()
                    cv2.resize(pixels, half.shape[1::-1], half, interpolation=cv2.INTER_AREA)
                    shrink += time.process_time() - start
        start = time.process_time()
        for tiles, column, row in passed:
            tiles.data(column, row)
        raw = time.process_time() - start
    start = time.process_time()
    for scale_patches in patches:
        for patch in scale_patches:
            encode_jpeg(patch, quality)
    encode = time.process_time() - start
    return {"decode_s": decode, "encode_s": encode, "limit_s": decode + encode, "raw_s": raw,
            "shrink_s": shrink}  # fmt: skip


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--size", type=int, default=32768, help="slide side in level-0 px (memory: 3 bytes/px)"
    )
    parser.add_argument(
        "--runs",
        default=",".join(RUNS),
        help=f"comma-separated, of {', '.join(RUNS)} ('default': the config's own scales)",
    )
    parser.add_argument(
        "--working-mpp",
        type=float,
        default=None,
        help="segmentation view µm/px (default: the config's; CLAM segments at about 16)",
    )
    args = parser.parse_args(argv)
    unknown = sorted(set(args.runs.split(",")) - set(RUNS))
    if unknown:
        parser.error(f"--runs: unknown {unknown}; known: {list(RUNS)}")
    cv2.setNumThreads(1)
    segmentation = {} if args.working_mpp is None else {"working_mpp": args.working_mpp}
    try:  # the schema checks --working-mpp before minutes of slide writing
        dataset = {"task": "subtyping", "classes": ["a", "b"], "synthetic": {}}
        config = validate_config({"datasets": {"bench": dataset}, "segmentation": segmentation})
    except ConfigError as error:
        parser.error(f"--working-mpp: {error}")
    runs = {name: RUNS[name] or config["tiling"]["scales"] for name in args.runs.split(",")}
    results: dict[str, dict] = {}
    print(f"slide {args.size}x{args.size} px at {SLIDE_MPP} µm/px, levels 1/4/16, "
          f"patch {config['tiling']['patch_size']} px, segmentation view "
          f"{config['segmentation']['working_mpp']:g} µm/px, one core")  # fmt: skip
    header = (f"{'tiles':>5} {'scales':>7} {'patches':>7} {'seg s':>6} {'tile s':>6} "
              f"{'e2e s':>6} {'wall s':>6} {'work s':>6} {'decode s':>8} {'encode s':>8} {'limit s':>7} "
              f"{'pass s':>6} {'shrink s':>8} {'e2e/limit':>9} {'work/limit':>10} {'work/all':>8} "
              f"{'e2e/s':>6} {'limit/s':>7}"
              f"  e2e/limit < {GOAL:g}  reader")  # fmt: skip
    print(header, flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        image = slide_image(args.size)
        slides = {
            tile: write_slide(root / f"t{tile}.svs", image, mpp=SLIDE_MPP, tile=tile)
            for tile in TILE_SIZES
        }
        del image  # 3 GB at the default size
        for tile, slide in slides.items():
            for run, scales in runs.items():
                out = root / f"t{tile}-{run}"
                out.mkdir()
                times = run_slide(slide, out, config, scales)
                bound = limit(slide, out / "s.lmdb", out / "s.json", config["tiling"]["jpeg_quality"])  # fmt: skip
                record = json.loads((out / "s.json").read_text())
                count = sum(record["patches"].values())
                e2e = times["segment_s"] + times["tile_s"]
                readers = sorted({s["reader"] for s in record["tiling"]["scales"].values()})
                row = {**times, **bound, "e2e_s": e2e, "patches": count, "readers": readers,
                       "ratio": e2e / bound["limit_s"]}  # fmt: skip
                results[f"{tile}/{run}"] = row
                shutil.rmtree(out)  # stores of a 40x run take hundreds of MB
                print(f"{tile:>5} {run:>7} {count:>7} {times['segment_s']:>6.2f} "
                      f"{times['tile_s']:>6.2f} {e2e:>6.2f} {times['e2e_wall_s']:>6.2f} "
                      f"{times['work_s']:>6.2f} "
                      f"{bound['decode_s']:>8.2f} {bound['encode_s']:>8.2f} "
                      f"{bound['limit_s']:>7.2f} {bound['raw_s']:>6.2f} {bound['shrink_s']:>8.2f} "
                      f"{row['ratio']:>9.2f} {times['work_s'] / bound['limit_s']:>10.2f} "
                      f"{times['work_s'] / (bound['limit_s'] + bound['shrink_s']):>8.2f} "
                      f"{count / e2e:>6.0f} "
                      f"{count / bound['limit_s']:>7.0f}  "
                      f"{'OK' if row['ratio'] < GOAL else 'MISSED':<14} {','.join(readers)}",
                      flush=True)  # fmt: skip
    return results


if __name__ == "__main__":
    main()
