"""The `train` command shared by the two trainers: same arguments but for where bags come from."""

from __future__ import annotations

import argparse
import json
import logging
from collections.abc import Callable


def train_command(
    prog: str,
    summary: str,
    source: tuple[str, str],
    train: Callable[..., object],
    argv: list[str] | None = None,
    kinds: tuple[str, ...] = (),
) -> None:
    """Parse ``train --<source> ... --settings JSON`` and call ``train(source, splits, fold, ...)``.

    With `kinds`, ``--kind`` (default the first) chooses among run kinds that read the same
    source and is passed on as ``train(..., kind=...)``.
    """
    flag, source_help = source
    parser = argparse.ArgumentParser(prog=prog)
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser("train", help=summary)
    run.add_argument(flag, dest="source", required=True, help=source_help)
    run.add_argument("--splits", required=True, help="split file results/splits/<dataset>.csv")
    run.add_argument("--fold", type=int, required=True)
    run.add_argument("--out-dir", required=True)
    run.add_argument("--settings", default="{}", help="JSON object of train() keyword arguments")
    run.add_argument("--threads", type=int, default=1)
    if kinds:
        run.add_argument("--kind", choices=kinds, default=kinds[0], help="run kind")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    train(
        args.source,
        args.splits,
        args.fold,
        args.out_dir,
        threads=args.threads,
        **({"kind": args.kind} if kinds else {}),
        **json.loads(args.settings),
    )
