"""CLI: python -m abmilx.features extract --store PATH --out-dir DIR --settings JSON --threads N
    [--shard I-of-N --slides-per-job S --first=ID --last=ID | --slides ID ...]
python -m abmilx.features combine --out-dir DIR --slides-per-job S --shards N
python -m abmilx.features import-h5 --qc-dir DIR --out-dir DIR --settings JSON"""

from __future__ import annotations

import argparse
import json
import logging


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m abmilx.features")
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser("extract", help="encode every patch of a patch store")
    run.add_argument("--store", required=True, help="packed patch store (LMDB)")
    run.add_argument("--out-dir", required=True, help="directory for <slide_id>.pt files")
    run.add_argument("--settings", default="{}", help="JSON object of extract() keyword arguments")
    run.add_argument("--threads", type=int, default=1)
    run.add_argument(
        "--slides", nargs="+", help="rebuild these slides' files only (lost intermediates)"
    )
    run.add_argument(
        "--shard", help="encode this shard of the sorted slide ids (<index>-of-<count>)"
    )
    run.add_argument("--slides-per-job", type=int, help="the size of a shard")
    run.add_argument("--first", help="the shard's first slide id (of the dataset's, sorted)")
    run.add_argument("--last", help="the shard's last slide id")
    combine = commands.add_parser("combine", help="join shard manifests into the dataset's")
    combine.add_argument("--out-dir", required=True, help="the feature folder of the shards")
    combine.add_argument("--slides-per-job", type=int, required=True, help="the shards' size")
    combine.add_argument("--shards", type=int, required=True, help="how many shards there are")
    h5 = commands.add_parser("import-h5", help="read CLAM/TRIDENT HDF5 feature files")
    h5.add_argument("--qc-dir", required=True, help="tiling QC records (<slide_id>.json)")
    h5.add_argument("--out-dir", required=True, help="directory for <slide_id>.pt files")
    h5.add_argument("--settings", default="{}", help="JSON object of import_h5() keywords")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    if args.command == "extract":
        from abmilx.features.extract import extract

        extract(
            args.store,
            args.out_dir,
            threads=args.threads,
            slides=args.slides,
            shard=args.shard,
            slides_per_job=args.slides_per_job,
            first=args.first,
            last=args.last,
            **json.loads(args.settings),
        )
    elif args.command == "combine":
        from abmilx.features.shards import combine_shards

        logging.getLogger(__name__).info(
            "%s", combine_shards(args.out_dir, args.slides_per_job, args.shards)
        )
    else:
        from abmilx.features.h5 import import_h5

        import_h5(args.out_dir, qc_dir=args.qc_dir, **json.loads(args.settings))


if __name__ == "__main__":
    main()
