"""Copy rendered report files from their per-item cache into the published folder.

Each figure (or table) is rendered by its own job into a hidden cache (``results/.figures/``, ``results/.tables/``),
so a change reruns only what it touches. Two rules publish from there: one copies a single
item into ``results/<folder>/`` (target ``results/figures/<name>.png``), the other copies every
item (target ``results/figures``, a ``directory()`` output). A folder that only single items were
copied into is not the complete folder, yet Snakemake would take it as up to date (it dates a
directory by its ``.snakemake_timestamp``, else by its own mtime, and does not rebuild a missing
intermediate whose consumer looks current). So ``--part`` dates the folder to the epoch and drops
its timestamp file: the next build of the whole folder sees it as outdated and copies again.
"""

from __future__ import annotations

import argparse
import os
import shutil
from collections.abc import Sequence
from pathlib import Path

TIMESTAMP = ".snakemake_timestamp"


def publish(files: Sequence[str | Path], out_dir: str | Path, part: bool) -> list[Path]:
    """Copy ``files`` into ``out_dir`` under their names; ``part``: mark the folder incomplete."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    copied = []
    for file in files:
        target = out_dir / Path(file).name
        shutil.copyfile(file, target)
        copied.append(target)
    if part:
        (out_dir / TIMESTAMP).unlink(missing_ok=True)
        os.utime(out_dir, (0, 0))
    return copied


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m abmilx.report.publish", description=__doc__)
    parser.add_argument("files", nargs="*", help="rendered files in the cache")
    parser.add_argument("--out-dir", required=True, help="the published folder")
    parser.add_argument(
        "--part", action="store_true", help="only some items: date the folder as outdated"
    )
    args = parser.parse_args(argv)
    for path in publish(args.files, args.out_dir, args.part):
        print(path)


if __name__ == "__main__":
    main()
