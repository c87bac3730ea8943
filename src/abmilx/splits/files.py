"""Split stage I/O: sheets + per-slide QC records in, split CSV + sidecar JSON out."""

from __future__ import annotations

import argparse
import inspect
import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from abmilx.config import ConfigError, split_bins_from, top_level_default, validate_settings
from abmilx.integrity import read_json_object
from abmilx.sheets import join_labels, load_label_sheet, load_slide_sheet
from abmilx.splits.core import make_splits

log = logging.getLogger(__name__)
# The split settings (`split` block of a dataset): make_splits' keywords but the dataset's classes.
SPLIT_KEYS = {
    name
    for name, parameter in inspect.signature(make_splits).parameters.items()
    if parameter.kind is inspect.Parameter.KEYWORD_ONLY and name != "classes"
}


def read_qc_status(qc_dir: str | Path, slide_ids: Sequence[str]) -> dict[str, dict]:
    """Status and reason of each slide from `<qc_dir>/<slide_id>.json` (architecture.md)."""
    records = {}
    for slide_id in slide_ids:
        path = Path(qc_dir) / f"{slide_id}.json"
        if not path.is_file():
            raise FileNotFoundError(f"{path}: QC record of slide '{slide_id}' is missing")
        record = read_json_object(path)
        if "status" not in record:
            raise ValueError(f"{path}: QC record has no 'status' key")
        records[slide_id] = {"status": record["status"], "reason": record.get("reason", "")}
    return records


def _counts(splits: pd.DataFrame) -> dict:
    """Slides per fold, split and label, for the sidecar and the log."""
    counts: dict = {}
    for (fold, split, label), n in splits.groupby(["fold", "split", "label"]).size().items():
        counts.setdefault(str(fold), {}).setdefault(split, {})[str(label)] = int(n)
    return counts


def make_split_file(
    slides: str | Path,
    labels: str | Path,
    task: str,
    out: str | Path,
    qc_dir: str | Path | None = None,
    *,
    classes: Sequence[str] | None = None,
    strict: bool = False,
    **split: Any,
) -> pd.DataFrame:
    """Validate the sheets, drop slides whose QC status is not ok, split, write CSV + JSON.

    ``split`` are the keywords of :func:`abmilx.splits.core.make_splits` (the dataset's
    ``split`` block of the config).

    The sidecar `<out>.json` (same stem) records the settings, survival bin edges per fold,
    excluded slides with their QC reason, sheet warnings and slide counts per split and label.
    """
    if classes is not None:
        classes = [str(c) for c in classes]  # YAML may give grades as integers
    slide_sheet = load_slide_sheet(slides, check_files=False)
    label_sheet = load_label_sheet(labels, task, classes)
    table, warnings = join_labels(slide_sheet, label_sheet, task, strict=strict)

    excluded = []
    if qc_dir is not None:
        status = read_qc_status(qc_dir, table["slide_id"].tolist())
        bad = [s for s, record in status.items() if record["status"] != "ok"]
        for slide_id in bad:
            record = status[slide_id]
            excluded.append({"slide_id": slide_id, **record})
            log.warning(
                "excluded slide %s: QC status %s (%s)",
                slide_id,
                record["status"],
                record["reason"] or "no reason given",
            )
        if bad and strict:
            raise ValueError(f"strict: {len(bad)} slide(s) failed QC: {', '.join(bad[:10])}")
        table = table[~table["slide_id"].isin(bad)].reset_index(drop=True)
    if table.empty:
        raise ValueError(f"no labelled slide with QC status ok is left to split ({slides})")

    split_table, info = make_splits(table, task, classes=classes, **split)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    split_table.to_csv(out, index=False)
    settings = {"classes": classes, "strict": strict, **json.loads(json.dumps(split))}
    sidecar = {
        "slides": str(slides),
        "labels": str(labels),
        "settings": settings,
        **info,
        "excluded": excluded,
        "warnings": warnings,
        "counts": _counts(split_table),
    }
    out.with_suffix(".json").write_text(json.dumps(sidecar, indent=2) + "\n")
    log.info(
        "wrote %s: %d slides, %d cases, %d fold(s), %d excluded, %d warning(s)",
        out,
        split_table["slide_id"].nunique(),
        split_table["case_id"].nunique(),
        split_table["fold"].nunique(),
        len(excluded),
        len(warnings),
    )
    return split_table


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m abmilx.splits", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    make = commands.add_parser("make", help="write the split CSV of one dataset")
    make.add_argument("--slides", required=True, help="slide sheet CSV")
    make.add_argument("--labels", required=True, help="label sheet CSV")
    make.add_argument("--task", required=True, choices=("classification", "survival"))
    make.add_argument("--out", required=True, help="split CSV to write (+ sidecar .json)")
    make.add_argument("--settings", default="{}", help="JSON object of make_split_file options")
    make.add_argument("--qc-dir", default=None, help="directory of per-slide QC JSON records")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    given = json.loads(args.settings)
    if not isinstance(given, dict):
        parser.error("--settings must be a JSON object")
    dataset_keys = ("classes", "strict")
    known = {*SPLIT_KEYS, *dataset_keys}
    unknown = sorted(set(given) - known)
    if unknown:
        parser.error(f"unknown settings key(s) {unknown}; known: {sorted(known)}")
    # What --settings leaves out takes the config's defaults (the workflow's rule passes them all).
    try:
        settings = validate_settings(
            "split", {key: value for key, value in given.items() if key not in dataset_keys}
        )
    except ConfigError as error:
        parser.error(str(error))
    settings |= {key: given[key] for key in dataset_keys if key in given}
    if settings["seed"] is None:
        settings["seed"] = top_level_default("seed")
    settings["bins_from"] = split_bins_from(settings["bins_from"], top_level_default("protocol"))
    make_split_file(args.slides, args.labels, args.task, args.out, args.qc_dir, **settings)
