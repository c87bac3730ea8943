"""Command line: ``python -m abmilx.cohort plan|slide|sheets``.

Every command recomputes the plan from ``--settings`` (the config's cohort block as JSON), so
one Snakemake job per slide can run in parallel without sharing state. ``slide`` runs once per
slide and never imports pandas (the other commands do, in their branch).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import cv2

from abmilx.cohort.settings import plan_from_settings, slide_plan, split_settings
from abmilx.cohort.synthesize import synthesize_slide


def _settings(text: str) -> dict:
    try:
        settings = json.loads(text)
    except json.JSONDecodeError as error:
        raise SystemExit(f"--settings is not valid JSON: {error}") from error
    if not isinstance(settings, dict):
        raise SystemExit("--settings must be a JSON object")
    return settings


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m abmilx.cohort", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    for name, help_text in (
        ("plan", "write the cohort plan as CSV"),
        ("slide", "render one slide and its ground truth"),
        ("sheets", "write slides.csv and labels.csv"),
    ):
        command = commands.add_parser(name, help=help_text)
        command.add_argument("--dataset", required=True, help="dataset name")
        command.add_argument("--settings", required=True, type=_settings, help="JSON object")
        command.add_argument("--threads", type=int, default=1, help="OpenCV threads")
    commands.choices["plan"].add_argument("--out", type=Path, help="CSV path (default stdout)")
    slide = commands.choices["slide"]
    slide.add_argument("--slide-id", required=True)
    slide.add_argument("--out", required=True, type=Path, help="slide file (.svs or .tif)")
    slide.add_argument("--truth", required=True, type=Path, help="ground-truth .npz")
    commands.choices["sheets"].add_argument("--out-dir", required=True, type=Path)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    cv2.setNumThreads(args.threads)
    try:
        if args.command == "plan":
            plan = plan_from_settings(args.dataset, args.settings)
            plan.to_csv(args.out if args.out else sys.stdout, index=False)
        elif args.command == "sheets":
            from abmilx.cohort.sheets import write_sheets

            write_sheets(plan_from_settings(args.dataset, args.settings), args.out_dir)
        else:
            row = slide_plan(args.dataset, args.settings, args.slide_id)
            if args.out.suffix != Path(row["file"]).suffix:
                raise ValueError(
                    f"slide {args.slide_id} is {row['slide_format']}: its file must end in "
                    f"{Path(row['file']).suffix}, got {args.out}"
                )
            _, render_kw = split_settings(args.settings)
            synthesize_slide(row, args.out, args.truth, **render_kw)
    except (ValueError, KeyError) as error:
        print(f"abmilx.cohort {args.command} --dataset {args.dataset}: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
