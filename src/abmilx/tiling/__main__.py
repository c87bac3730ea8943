"""CLI:
python -m abmilx.tiling tile --slide PATH --slide-id ID --dataset D [--mpp F] --segmentation PREFIX
    --out-store PATH.lmdb --out-qc PATH.json --settings JSON --threads N
python -m abmilx.tiling tile-shard --slides JSON --dataset D --segmentation-dir DIR --out-dir DIR
    --manifest PATH --settings JSON --code DIGEST [--threads N]
python -m abmilx.tiling pack (--stores S1.lmdb S2.lmdb ... | --shards M1.json ...) --out PATH.lmdb
    --mode index|copy|move

``tile-shard`` (rule tile_slide) tiles a shard of slides, ``--threads`` at a time, each into
DIR/<slide_id>.{lmdb,json}, skipping those already made from the same inputs, and writes the
shard manifest when all are done (abmilx.shards). ``pack --shards`` joins the stores that tiling
shard manifests list; ``--mode move`` packs a copy and removes the per-slide stores.
"""

from __future__ import annotations

import argparse
import logging
import sys
from functools import partial
from pathlib import Path

import cv2

from abmilx.arguments import add_shard_arguments, json_object, optional_mpp, run_shard
from abmilx.patches.store import PACK_MODES
from abmilx.shards import listed_files
from abmilx.slides import SlideError
from abmilx.tiling.settings import TilingSettings
from abmilx.tiling.tile import tile_shard_slide, tile_slide


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m abmilx.tiling")
    commands = parser.add_subparsers(dest="command", required=True)
    tile = commands.add_parser("tile", help="tile one slide into its patch store")
    tile.add_argument("--slide", required=True, help="slide file")
    tile.add_argument("--slide-id", required=True)
    tile.add_argument("--dataset", required=True)
    tile.add_argument("--mpp", type=optional_mpp, default=None, help="level-0 µm/px override")
    tile.add_argument("--segmentation", required=True, help="segmentation output prefix")
    tile.add_argument("--out-store", required=True, help="per-slide patch store (.lmdb)")
    tile.add_argument("--out-qc", required=True, help="per-slide QC record (.json)")
    tile.add_argument(
        "--settings", required=True, help="JSON object: the tiling block (all of it), strict"
    )
    tile.add_argument("--threads", type=int, default=1)
    shard = commands.add_parser("tile-shard", help="tile a shard of slides (the workflow)")
    add_shard_arguments(shard)
    shard.add_argument("--segmentation-dir", required=True, help="the slides' segmentation")
    pack = commands.add_parser("pack", help="join per-slide stores: an index of them, or a copy")
    stores = pack.add_mutually_exclusive_group(required=True)
    stores.add_argument("--stores", nargs="+", help="per-slide stores (.lmdb)")
    stores.add_argument("--shards", nargs="+", help="tiling shard manifests listing them")
    pack.add_argument("--out", required=True)
    pack.add_argument(
        "--mode",
        choices=sorted([*PACK_MODES, "move"]),
        required=True,
        help="index: a small file naming the per-slide stores; copy: one store of all patches;"
        " move: copy, then remove the per-slide stores",
    )
    args = parser.parse_args(argv)
    if args.command == "pack":
        return pack_command(args)
    if args.command == "tile-shard":
        work = partial(
            tile_shard_slide,
            segmentation_dir=args.segmentation_dir,
            out_dir=args.out_dir,
            dataset=args.dataset,
        )
        return run_shard(parser, args, "tiling", work)
    given = json_object(parser, args.settings)
    strict = bool(given.pop("strict", False))
    try:
        settings = TilingSettings.from_settings(given, "--settings")
    except ValueError as error:  # an unknown or missing key, a value out of range
        parser.error(str(error))
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    cv2.setNumThreads(1)  # parallelism comes from the patch threads
    try:
        record = tile_slide(
            args.slide,
            args.segmentation,
            args.out_store,
            args.out_qc,
            settings,
            slide_id=args.slide_id,
            dataset=args.dataset,
            mpp=args.mpp,
            strict=strict,
            threads=args.threads,
        )
    except SlideError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    print(
        f"{args.slide_id}: {record['status']} {record['patches']} {record['reason']}".rstrip(),
        file=sys.stderr,
    )
    return 0


def pack_command(args: argparse.Namespace) -> int:
    stores = args.stores or listed_files(args.shards, "store")
    meta = PACK_MODES["index" if args.mode == "index" else "copy"](stores, args.out)
    if args.mode == "move":
        for store in stores:
            Path(store).unlink(missing_ok=True)
    done = "indexed" if args.mode == "index" else "packed"
    print(f"{done} {len(meta['slides'])} slides into {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
