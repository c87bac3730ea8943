"""CLI of the report stage: ``python -m abmilx.report qc|tables|table|coverage`` (figures: one module per kind,
``python -m abmilx.report.figures.<kind>``)."""

from __future__ import annotations

import argparse
import json

from abmilx.report.coverage import decode, summary_line, write_coverage
from abmilx.report.qc import write_qc_table
from abmilx.report.summary import write_summary
from abmilx.report.tables import (
    attention_by_run,
    load_runs,
    write_declared_tables,
    write_tables,
)
from abmilx.shards import listed_files


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m abmilx.report", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    qc = commands.add_parser("qc", help="results/qc/slides.tsv from per-slide QC records")
    qc.add_argument("--records", nargs="*", default=[], help="per-slide tiling QC JSON files")
    qc.add_argument("--shards", nargs="*", default=[], help="tiling shard manifests listing them")
    qc.add_argument("--out", required=True)
    tables = commands.add_parser("tables", help="paper tables from metrics.json files")
    tables.add_argument("--metrics", nargs="*", default=[])
    tables.add_argument("--out-dir", required=True)
    tables.add_argument("--settings", required=True, help="JSON: datasets and experiments")
    tables.add_argument("--qc", help="results/qc/slides.tsv, summarised per dataset")
    tables.add_argument(
        "--declared", nargs="*", default=[], help="cache folders of the declared tables to copy"
    )
    tables.add_argument("--summary", help="results/summary.md: headline metrics per dataset")
    table = commands.add_parser("table", help="one declared table from metrics.json files")
    table.add_argument("--name", required=True)
    table.add_argument("--plan", required=True, help="JSON: abmilx.report.tables.plan_tables")
    table.add_argument("--metrics", nargs="*", default=[])
    table.add_argument("--attention", nargs="*", default=[], help="attention.npz for sparsity")
    table.add_argument("--n-boot", type=int, default=1000)
    table.add_argument("--seed", type=int, default=0)
    table.add_argument("--out-dir", required=True)
    coverage = commands.add_parser("coverage", help="coverage.csv and coverage.md")
    coverage.add_argument("--ledger", required=True, help="JSON: abmilx.report.coverage.encode")
    coverage.add_argument("--out-dir", required=True)
    args = parser.parse_args(argv)

    if args.command == "qc":
        records = [*args.records, *listed_files(args.shards, "record")]
        table = write_qc_table(records, args.out)
        print(table["status"].value_counts().to_string())
    elif args.command == "tables":
        table = write_tables(
            args.metrics, args.out_dir, json.loads(args.settings), args.qc, args.declared
        )
        print(f"{len(table)} rows written to {args.out_dir}")
        if args.summary:
            settings = json.loads(args.settings)
            print(f"summary: {write_summary(load_runs(args.metrics), settings, args.summary)}")
    elif args.command == "coverage":
        ledger = decode(json.loads(args.ledger))
        write_coverage(ledger, args.out_dir)
        print(summary_line(ledger))
    else:
        cells = write_declared_tables(
            load_runs(args.metrics),
            {args.name: json.loads(args.plan)},
            args.out_dir,
            attention_by_run(args.attention),
            args.n_boot,
            args.seed,
        )
        print(f"{len(cells[args.name])} cells of {args.name} written to {args.out_dir}")


if __name__ == "__main__":
    main()
