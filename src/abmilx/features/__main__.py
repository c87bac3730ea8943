"""CLI: python -m abmilx.features extract --store PATH --out-dir DIR --settings JSON --threads N"""

from __future__ import annotations

import argparse
import json
import logging

from abmilx.features.extract import extract


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m abmilx.features")
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser("extract", help="encode every patch of a patch store")
    run.add_argument("--store", required=True, help="packed patch store (LMDB)")
    run.add_argument("--out-dir", required=True, help="directory for <slide_id>.pt files")
    run.add_argument("--settings", default="{}", help="JSON object of extract() keyword arguments")
    run.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    extract(args.store, args.out_dir, threads=args.threads, **json.loads(args.settings))


if __name__ == "__main__":
    main()
