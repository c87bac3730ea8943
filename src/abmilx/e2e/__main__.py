"""CLI: python -m abmilx.e2e train --store PATH --splits CSV --fold K --out-dir DIR
--settings JSON --threads N   (launch with torchrun for DDP)"""

from __future__ import annotations

import argparse
import json
import logging

from abmilx.e2e.train import train


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m abmilx.e2e")
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser("train", help="train encoder + MIL end to end")
    run.add_argument("--store", required=True, help="packed patch store (LMDB)")
    run.add_argument("--splits", required=True, help="split file results/splits/<dataset>.csv")
    run.add_argument("--fold", type=int, required=True)
    run.add_argument("--out-dir", required=True)
    run.add_argument("--settings", default="{}", help="JSON object of train() keyword arguments")
    run.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    train(
        args.store,
        args.splits,
        args.fold,
        args.out_dir,
        threads=args.threads,
        **json.loads(args.settings),
    )


if __name__ == "__main__":
    main()
