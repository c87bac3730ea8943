"""CLI: python -m abmilx.adapters NAME --out-dir DIR --settings JSON.

Writes DIR/slides.csv, DIR/labels.csv and DIR/report.json; left-out slides and label rows are
logged as warnings and listed in the report. Exit status 2 on a bad input, naming file, line
and column.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Sequence

from abmilx.adapters import ADAPTERS, adapt
from abmilx.sheets import SheetError


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m abmilx.adapters", description=__doc__)
    parser.add_argument("name", choices=sorted(ADAPTERS), help="dataset adapter")
    parser.add_argument("--out-dir", required=True, help="folder for slides.csv, labels.csv")
    parser.add_argument("--settings", default="{}", help="JSON object of the adapter's options")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        settings = json.loads(args.settings)
    except json.JSONDecodeError as error:
        parser.error(f"--settings is not valid JSON: {error}")
    if not isinstance(settings, dict):
        parser.error("--settings must be a JSON object")
    try:
        slides, labels, report = adapt(args.name, args.out_dir, **settings)
    except (SheetError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(json.dumps({"slides": str(slides), "labels": str(labels), "n_slides": report.n_slides,
                      "n_cases": report.n_cases, "counts": report.counts}))  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
