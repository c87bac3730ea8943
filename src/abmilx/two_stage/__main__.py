"""CLI: python -m abmilx.two_stage train --features-dir DIR --splits CSV --fold K --out-dir DIR
--settings JSON --threads N"""

from __future__ import annotations

import argparse
import json
import logging

from abmilx.two_stage.train import train


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m abmilx.two_stage")
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser("train", help="train a MIL model on offline features")
    run.add_argument("--features-dir", required=True)
    run.add_argument("--splits", required=True, help="split file results/splits/<dataset>.csv")
    run.add_argument("--fold", type=int, required=True)
    run.add_argument("--out-dir", required=True)
    run.add_argument("--settings", default="{}", help="JSON object of train() keyword arguments")
    run.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    train(
        args.features_dir,
        args.splits,
        args.fold,
        args.out_dir,
        threads=args.threads,
        **json.loads(args.settings),
    )


if __name__ == "__main__":
    main()
