"""Copy rendered report files from their per-item cache into the published folder.

Each figure (or table) is rendered by its own job into its own cache folder
(``results/.figures/<name>/``), so a change reruns only what it touches. Two rules publish from
there: one copies a single item into ``results/<folder>/`` (target ``results/figures/<name>.png``),
the other copies every item (target ``results/figures``, a ``directory()`` output). A folder that
only single items were copied into is not the complete folder, yet Snakemake would take it for up
to date: it dates a directory by its ``.snakemake_timestamp``, else by its own mtime, and it does
not rebuild a missing intermediate whose consumer looks current. So ``--part`` drops the timestamp
file and dates the folder 1 s after the epoch (0 would read as "no date"): every cache folder is
newer, and the next build of the whole folder copies again. The cache entries are folders because
Snakemake compares small input *files* by checksum before date, and an unchanged figure would
then keep a partly published folder current.
"""

from __future__ import annotations

import argparse
import os
import shutil
from collections.abc import Sequence
from pathlib import Path

TIMESTAMP = ".snakemake_timestamp"
OUTDATED = 1  # seconds since the epoch


def publish(sources: Sequence[str | Path], out_dir: str | Path, part: bool) -> list[Path]:
    """Copy the files of each cache folder in ``sources`` (hidden ones left out) into
    ``out_dir`` under their names; ``part``: date ``out_dir`` as outdated."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    copied = []
    for source in map(Path, sources):
        files = sorted(f for f in source.iterdir() if f.is_file() and not f.name.startswith("."))
        if not files:
            raise FileNotFoundError(f"{source}: nothing to publish")
        for file in files:
            shutil.copyfile(file, out_dir / file.name)
            copied.append(out_dir / file.name)
    if part:
        (out_dir / TIMESTAMP).unlink(missing_ok=True)
        os.utime(out_dir, (OUTDATED, OUTDATED))
    return copied


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m abmilx.report.publish", description=__doc__)
    parser.add_argument("sources", nargs="*", help="cache folders, one per item")
    parser.add_argument("--out-dir", required=True, help="the published folder")
    parser.add_argument(
        "--part", action="store_true", help="only some items: date the folder as outdated"
    )
    args = parser.parse_args(argv)
    for path in publish(args.sources, args.out_dir, args.part):
        print(path)


if __name__ == "__main__":
    main()
