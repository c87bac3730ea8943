"""CLI: python -m abmilx.pretrain --store PATH --out-dir DIR --dataset NAME --settings JSON"""

from __future__ import annotations

import argparse
import json
import logging

from abmilx.pretrain.simclr import pretrain


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m abmilx.pretrain", description=__doc__)
    parser.add_argument("--store", required=True, help="packed patch store of the cohort")
    parser.add_argument("--dataset", required=True, help="name of that cohort (for the record)")
    parser.add_argument("--out-dir", required=True, help="encoder.pt, record.json, train_log.csv")
    parser.add_argument("--settings", default="{}", help="JSON object of pretrain() keywords")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    pretrain(
        args.store, args.out_dir, args.dataset, threads=args.threads, **json.loads(args.settings)
    )


if __name__ == "__main__":
    main()
