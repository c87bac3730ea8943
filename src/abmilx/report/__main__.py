"""CLI of the report stage: ``python -m abmilx.report qc|tables`` (figures: one module per kind,
``python -m abmilx.report.figures.<kind>``)."""

from __future__ import annotations

import argparse
import json

from abmilx.report.qc import write_qc_table
from abmilx.report.tables import write_tables


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m abmilx.report", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    qc = commands.add_parser("qc", help="results/qc/slides.tsv from per-slide QC records")
    qc.add_argument("--records", nargs="*", default=[], help="per-slide tiling QC JSON files")
    qc.add_argument("--out", required=True)
    tables = commands.add_parser("tables", help="paper tables from metrics.json files")
    tables.add_argument("--metrics", nargs="*", default=[])
    tables.add_argument("--out-dir", required=True)
    tables.add_argument("--settings", required=True, help="JSON: datasets and experiments")
    tables.add_argument("--qc", help="results/qc/slides.tsv, summarised per dataset")
    tables.add_argument(
        "--tables", default="{}", help="JSON: declared tables (abmilx.report.tables.plan_tables)"
    )
    args = parser.parse_args(argv)

    if args.command == "qc":
        table = write_qc_table(args.records, args.out)
        print(table["status"].value_counts().to_string())
    else:
        table = write_tables(
            args.metrics, args.out_dir, json.loads(args.settings), args.qc, json.loads(args.tables)
        )
        print(f"{len(table)} rows written to {args.out_dir}")


if __name__ == "__main__":
    main()
