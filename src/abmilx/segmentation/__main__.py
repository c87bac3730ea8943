"""CLI: python -m abmilx.segmentation segment --slide PATH --slide-id ID --dataset D [--mpp F]
[--geojson PATH] [--overrides JSON] --out-prefix PREFIX --settings JSON [--threads N]
python -m abmilx.segmentation segment-shard --slides JSON --dataset D --out-dir DIR
--manifest PATH --settings JSON --code DIGEST [--threads N]

``--overrides`` (the slide sheet's ``segmentation`` column) is a JSON object of settings that
replace those of ``--settings`` for this slide; empty means none. ``--geojson`` empty means none.
``segment-shard`` (rule segment_tissue) segments a shard of slides, ``--threads`` at a time,
each into DIR/<slide_id>.*, skipping those already made from the same inputs, and writes the
shard manifest when all are done (abmilx.shards).
"""

from __future__ import annotations

import argparse
import sys
from functools import partial

import cv2

from abmilx.arguments import add_shard_arguments, json_object, optional_mpp, run_shard
from abmilx.segmentation.segment import segment_shard_slide, segment_slide
from abmilx.segmentation.settings import SegmentationSettings
from abmilx.slides import SlideError


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m abmilx.segmentation")
    commands = parser.add_subparsers(dest="command", required=True)
    segment = commands.add_parser("segment", help="segment the tissue of one slide")
    segment.add_argument("--slide", required=True, help="slide file")
    segment.add_argument("--slide-id", required=True)
    segment.add_argument("--dataset", required=True)
    segment.add_argument("--mpp", type=optional_mpp, default=None, help="level-0 µm/px override")
    segment.add_argument("--geojson", default=None, help="user tissue polygons (level-0 px)")
    segment.add_argument("--out-prefix", required=True, help="writes PREFIX.{json,geojson,...}")
    segment.add_argument(
        "--settings", required=True, help="JSON object: the segmentation block (all of it), strict"
    )
    segment.add_argument(
        "--overrides", default="", help="JSON object of this slide's settings (sheet column)"
    )
    segment.add_argument("--threads", type=int, default=1)
    shard = commands.add_parser("segment-shard", help="segment a shard of slides (the workflow)")
    add_shard_arguments(shard)
    args = parser.parse_args(argv)
    if args.command == "segment-shard":
        return run_shard(
            parser,
            args,
            "segmentation",
            partial(segment_shard_slide, out_dir=args.out_dir, dataset=args.dataset),
        )
    given = json_object(parser, args.settings)
    # strict is a property of the run, not of a slide: --settings only, never --overrides.
    strict = bool(given.pop("strict", False))
    overrides = json_object(parser, args.overrides, "--overrides") if args.overrides.strip() else {}
    try:
        settings = SegmentationSettings.from_settings(given, "--settings")
        settings = settings.updated(overrides, "--overrides")
    except ValueError as error:  # an unknown or missing key, a value out of range
        parser.error(str(error))
    cv2.setNumThreads(args.threads)
    try:
        record = segment_slide(
            args.slide,
            args.out_prefix,
            settings,
            slide_id=args.slide_id,
            dataset=args.dataset,
            mpp=args.mpp,
            geojson=args.geojson or None,
            strict=strict,
            overridden=sorted(overrides),
        )
    except SlideError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    print(f"{args.slide_id}: {record['status']} {record['reason']}".rstrip(), file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
