"""Slide and label sheets of a synthetic cohort, in the format of docs/architecture.md."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

SLIDE_DIR = "slides"  # slide files live in <sheet dir>/slides/


def slide_sheet(plan: pd.DataFrame) -> pd.DataFrame:
    """``slide_id, case_id, path, mpp``: path relative to the sheet, mpp only for overrides."""
    return pd.DataFrame(
        {
            "slide_id": plan["slide_id"],
            "case_id": plan["case_id"],
            "path": [f"{SLIDE_DIR}/{name}" for name in plan["file"]],
            "mpp": plan["mpp_override"],
        }
    )


def label_sheet(plan: pd.DataFrame) -> pd.DataFrame:
    """Classification: ``slide_id, case_id, label``; survival: one ``case_id, time, event`` per
    case; an unlabelled (pretraining) cohort: ``slide_id, case_id``."""
    if plan["label"].isna().all() and plan["time"].isna().all():
        return plan[["slide_id", "case_id"]].reset_index(drop=True)
    tasks = set(plan["task"])
    if len(tasks) != 1:
        raise ValueError(f"a cohort plan holds one task, found {sorted(tasks)}")
    if tasks == {"survival"}:
        cases = plan.drop_duplicates("case_id")[["case_id", "time", "event"]]
        return cases.astype({"event": int}).reset_index(drop=True)
    return plan[["slide_id", "case_id", "label"]].reset_index(drop=True)


def write_sheets(plan: pd.DataFrame, out_dir: str | Path) -> tuple[Path, Path]:
    """Write ``slides.csv`` and ``labels.csv`` into ``out_dir``; returns both paths."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    slides_path, labels_path = out_dir / "slides.csv", out_dir / "labels.csv"
    slide_sheet(plan).to_csv(slides_path, index=False)
    label_sheet(plan).to_csv(labels_path, index=False)
    return slides_path, labels_path
