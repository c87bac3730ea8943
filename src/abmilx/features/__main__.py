"""CLI: python -m abmilx.features extract --store PATH --out-dir DIR --settings JSON --threads N
python -m abmilx.features import-h5 --qc-dir DIR --out-dir DIR --settings JSON"""

from __future__ import annotations

import argparse
import json
import logging

from abmilx.features.extract import extract
from abmilx.features.h5 import import_h5


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
    h5 = commands.add_parser("import-h5", help="read CLAM/TRIDENT HDF5 feature files")
    h5.add_argument("--qc-dir", required=True, help="tiling QC records (<slide_id>.json)")
    h5.add_argument("--out-dir", required=True, help="directory for <slide_id>.pt files")
    h5.add_argument("--settings", default="{}", help="JSON object of import_h5() keywords")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    if args.command == "extract":
        extract(
            args.store,
            args.out_dir,
            threads=args.threads,
            slides=args.slides,
            **json.loads(args.settings),
        )
    else:
        import_h5(args.out_dir, qc_dir=args.qc_dir, **json.loads(args.settings))


if __name__ == "__main__":
    main()
