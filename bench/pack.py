"""Joining a dataset's per-slide patch stores: an index of them vs a packed copy.

Generates per-slide stores of real JPEG patches (H&E-like texture at the paper's 256 px, a pool
of distinct patches cycled over the slides), then times `index_stores` (what rule pack_tiles
writes by default) and `pack_stores` (config ``tiling.pack: copy``) on the same stores, reports
the disk each needs, and the training-read throughput from each: `MrisBags` items (the E2E
training dataset: MRIS sampling of ``--n-patches`` patches per bag, read and decoded) over
random slides, index and copy taking turns so that a change in the machine's load weighs on
both. The index reader keeps at most ``--max-open`` per-slide stores open, fewer than there are
slides, so the read path includes closing and reopening stores as a 10,000-slide cohort would.

Warm reads: everything fits in this machine's page cache (the stores are far smaller than its
memory), as on any machine whose memory exceeds the patches. Cold reads: the page cache of
these files only (``posix_fadvise`` DONTNEED) is emptied before each cold pass; that reads from
this machine's disk, whatever it is, and is printed, not held to a limit.

Run: ``python -m bench.pack [--slides 120] [--patches 300] [--bags 16] [--rounds 3]``
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

from abmilx.e2e.data import MrisBags
from abmilx.patches.store import (
    MAX_OPEN_STORES,
    PatchStore,
    PatchStoreWriter,
    encode_jpeg,
    index_stores,
    pack_stores,
)
from abmilx.training.bags import Bag
from bench.common import verdict
from bench.tiling import texture

READ_LIMIT = 0.9  # index read rate >= 90 % of the packed copy's
PATCH_SIZE, SCALES, POOL = 256, {"main": 1.0, "low": 2.0}, 64


def write_slide_stores(folder: Path, n_slides: int, n_main: int, seed: int = 0) -> list[Path]:
    """``n_slides`` per-slide stores of ``n_main`` main and ``n_main // 4`` low patches."""
    field = texture(PATCH_SIZE * 8, seed)
    rng = np.random.default_rng(seed)
    corners = rng.integers(0, 7 * PATCH_SIZE, size=(POOL, 2))
    pool = [encode_jpeg(field[y : y + PATCH_SIZE, x : x + PATCH_SIZE], 80) for x, y in corners]
    counts = {"main": n_main, "low": max(1, n_main // 4)}
    paths = []
    for i in range(n_slides):
        path = folder / f"slide{i:05d}.lmdb"
        with PatchStoreWriter(
            path,
            patch_size=PATCH_SIZE,
            jpeg_quality=80,
            scales=SCALES,
            expected_patches=sum(counts.values()),
        ) as writer:
            for scale, n in counts.items():
                coords = np.stack([np.arange(n) * PATCH_SIZE, np.full(n, i)], axis=1)
                jpegs = (pool[(i * 7 + k) % POOL] for k in range(n))
                writer.add_slide(f"slide{i:05d}", scale, coords, jpegs)
        paths.append(path)
    return paths


def drop_page_cache(paths: list[Path]) -> None:
    """Evict these files' clean pages from the page cache (no other file is touched)."""
    for path in paths:
        fd = os.open(path, os.O_RDONLY)
        try:
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)


def read_rate(
    store: Path, slide_ids: list[str], args: argparse.Namespace, bags: int, seed: int
) -> float:
    """Patches per second of `bags` MrisBags items of random slides, read from a fresh reader."""
    n_patches = args.n_patches
    all_bags = [Bag(slide_id, (slide_id,), 0) for slide_id in slide_ids]
    dataset = MrisBags(store, all_bags, n_patches, 4, {"main": "main", "low": "low"}, seed)
    dataset._store = PatchStore(store, max_open=args.max_open)  # as a worker opens it
    order = np.random.default_rng(seed).integers(0, len(all_bags), size=bags)
    start = time.perf_counter()
    for index in order.tolist():
        item = dataset[index]
        assert item["images"].shape[0] == n_patches
    seconds = time.perf_counter() - start
    dataset.store.close()
    return bags * n_patches / seconds


def megabytes(paths: list[Path]) -> float:
    return sum(path.stat().st_size for path in paths) / 1e6


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--slides", type=int, default=120, help="per-slide stores")
    parser.add_argument("--patches", type=int, default=300, help="main-scale patches per slide")
    parser.add_argument("--n-patches", type=int, default=512, help="patches per bag (paper 512)")
    parser.add_argument("--bags", type=int, default=16, help="bags read per pass")
    parser.add_argument("--rounds", type=int, default=3, help="warm passes of each")
    parser.add_argument("--max-open", type=int, default=MAX_OPEN_STORES // 2)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="abmilx-pack-") as tmp:
        root = Path(tmp)
        stores = write_slide_stores(root / "slides", args.slides, args.patches)
        index, packed = root / "patches.lmdb", root / "packed.lmdb"
        index_s = []
        for _ in range(3):
            index.unlink(missing_ok=True)
            start = time.perf_counter()
            index_stores(stores, index)
            index_s.append(time.perf_counter() - start)
        start = time.perf_counter()
        pack_stores(stores, packed)
        copy_s = time.perf_counter() - start
        slide_ids = PatchStore(index).slide_ids
        patches = sum(sum(c.values()) for c in PatchStore(index).meta["slides"].values())
        stores_mb, index_mb, packed_mb = megabytes(stores), megabytes([index]), megabytes([packed])
        memory_gb = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 1e9

        rates: dict[str, list[float]] = {"index": [], "copy": []}
        for round_ in range(args.rounds + 1):  # the first pass warms the cache, not counted
            for name, path in (("index", index), ("copy", packed)):
                rate = read_rate(path, slide_ids, args, args.bags, seed=round_)
                if round_:
                    rates[name].append(rate)
        cold: dict[str, float] = {}
        for name, path in (("copy", packed), ("index", index)):
            drop_page_cache([*stores, index, packed])
            cold[name] = read_rate(path, slide_ids, args, args.bags // 2, seed=99)
    warm = {name: statistics.median(values) for name, values in rates.items()}
    ratio = warm["index"] / warm["copy"]
    print(
        f"  {args.slides} per-slide stores, {patches} patches of {PATCH_SIZE} px "
        f"({stores_mb:.0f} MB), this machine's memory {memory_gb:.0f} GB: the warm reads come "
        "from the page cache (a store larger than memory cannot be made here)"
    )
    print(
        f"  build: index {min(index_s):.3f} s (best of 3), copy {copy_s:.2f} s "
        f"({copy_s / min(index_s):.0f}x the index)"
    )
    print(
        f"  disk: per-slide stores {stores_mb:.0f} MB + index {index_mb:.2f} MB "
        f"= {stores_mb + index_mb:.0f} MB; + packed copy {packed_mb:.0f} MB "
        f"= {stores_mb + packed_mb:.0f} MB"
    )
    print(
        f"  training reads (MrisBags, {args.n_patches} patches per bag, {args.bags} bags of random "
        f"slides per pass, median of {args.rounds}; index keeps <= {args.max_open} stores open): "
        f"index {warm['index']:.0f} patches/s, copy {warm['copy']:.0f} patches/s"
    )
    print(
        f"  cold page cache, one pass of {args.bags // 2} bags (not held to a limit): "
        f"index {cold['index']:.0f} patches/s, copy {cold['copy']:.0f} patches/s"
    )
    verdict("index read rate / packed read rate", ratio, READ_LIMIT, at_least=True)
    return {
        "index_s": min(index_s),
        "copy_s": copy_s,
        "stores_mb": stores_mb,
        "index_mb": index_mb,
        "packed_mb": packed_mb,
        "index_patches_per_s": warm["index"],
        "copy_patches_per_s": warm["copy"],
        "cold": cold,
        "ratio": ratio,
    }


if __name__ == "__main__":
    main()
