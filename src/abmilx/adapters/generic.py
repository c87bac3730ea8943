"""Any label CSV/TSV whose columns the user names: `columns: {slide_id: ..., label: ...}`.

The table is slide-level when `slide_id` is mapped (its values are file stems, a slide suffix
is ignored), else case-level, and then `case_pattern` (a regex on the file stem; group 1, or the
whole match, is the case id) says which case each slide file belongs to.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from pathlib import Path

from abmilx.adapters.common import (
    Adapted,
    Issue,
    Table,
    find_slides,
    is_missing,
    match_by_key,
    strip_slide_suffix,
)
from abmilx.adapters.tcga_survival import DAYS_PER_MONTH
from abmilx.sheets import TASKS, Problem, SheetError

OUR_COLUMNS = ("slide_id", "case_id", "label", "split", "time", "event", "mpp")
TIME_UNITS = {"months": 1.0, "days": 1.0 / DAYS_PER_MONTH}
SPLITS = ("train", "val", "test")


def _check_options(columns, task, time_unit, case_pattern) -> None:
    unknown = sorted(set(columns) - set(OUR_COLUMNS))
    if unknown:
        raise ValueError(f"columns: unknown key(s) {unknown}; known: {list(OUR_COLUMNS)}")
    if task not in TASKS:
        raise ValueError(f"task must be one of {TASKS}, got {task!r}")
    if time_unit not in TIME_UNITS:
        raise ValueError(f"time_unit must be one of {list(TIME_UNITS)}, got {time_unit!r}")
    needed = ("label",) if task == "classification" else ("case_id", "time", "event")
    missing = [c for c in needed if c not in columns]
    if "slide_id" not in columns and "case_id" not in columns:
        missing.append("slide_id or case_id")
    if missing:
        raise ValueError(f"columns must map {missing} for task {task}")
    if "slide_id" not in columns and case_pattern is None:
        raise ValueError("a case-level table (no slide_id column) needs case_pattern")
    if "mpp" in columns and "slide_id" not in columns:
        raise ValueError("an mpp column needs a slide_id column (mpp is per slide)")


def _survival(row: dict, columns: Mapping[str, str], scale: float) -> tuple[float, int] | str:
    """(months, event) of a row, or the reason it is excluded."""
    raw_time, raw_event = row[columns["time"]], row[columns["event"]]
    if is_missing(raw_time) or is_missing(raw_event):
        return "time or event is missing"
    try:
        time, event = float(raw_time) * scale, float(raw_event)
    except ValueError:
        return f"time {raw_time!r} or event {raw_event!r} is not a number"
    if event not in (0.0, 1.0):
        return f"event must be 0 or 1, got {raw_event!r}"
    if not math.isfinite(time) or time <= 0:
        return f"survival time {raw_time!r} is not positive"
    return round(time, 4), int(event)


def build(
    *,
    labels: str | Path,
    slide_dir: str | Path | Sequence[str | Path],
    columns: Mapping[str, str],
    task: str = "classification",
    classes: Sequence[str] | None = None,
    label_map: Mapping[str, str] | None = None,
    case_pattern: str | None = None,
    time_unit: str = "months",
) -> Adapted:
    """Map a user table to our sheets. `label_map` renames raw labels; with `classes`, rows
    whose (renamed) label is not a class are excluded and reported. Survival time is in
    `time_unit` (months or days) and becomes months."""
    _check_options(columns, task, time_unit, case_pattern)
    table = Table(labels)
    for ours, theirs in columns.items():
        table.find((theirs,), ours)
    classes = tuple(str(c) for c in classes) if classes is not None else None
    slide_level = "slide_id" in columns
    survival = task == "survival"

    adapted = Adapted(task, classes, ())
    records: dict[str, dict] = {}
    excluded: dict[str, str] = {}
    case_of_slide: dict[str, str] = {}
    mpp_of_slide: dict[str, float] = {}
    problems = []
    for line, row in table:
        slide_id = strip_slide_suffix(row[columns["slide_id"]]) if slide_level else None
        case_id = row[columns["case_id"]] if "case_id" in columns else slide_id
        if not case_id:
            problems.append(Problem(table.name, line, columns.get("case_id"), "id is missing"))
            continue
        key = case_id if survival else slide_id or case_id
        record = {"line": line, "case_id": case_id}
        if survival:
            outcome = _survival(row, columns, TIME_UNITS[time_unit])
            if not isinstance(outcome, str):
                record["time"], record["event"] = outcome
        else:
            raw = row[columns["label"]]
            record["label"] = (label_map or {}).get(raw, raw)
            outcome = record
            if is_missing(raw):
                outcome = "label is missing"
            elif classes is not None and record["label"] not in classes:
                outcome = f"label {record['label']!r} is not one of {list(classes)}"
        if "split" in columns:
            record["split"] = row[columns["split"]].lower()
            if record["split"] not in SPLITS:
                problems.append(
                    Problem(
                        table.name,
                        line,
                        columns["split"],
                        f"split must be one of {SPLITS}, got {row[columns['split']]!r}",
                    )
                )
        if slide_id is not None:
            case_of_slide[slide_id] = case_id
        if "mpp" in columns and not is_missing(row[columns["mpp"]]):
            try:
                mpp_of_slide[slide_id] = float(row[columns["mpp"]])
            except ValueError:
                problems.append(Problem(table.name, line, columns["mpp"], "mpp is not a number"))
        if isinstance(outcome, str):
            excluded[key] = outcome
            adapted.excluded.append(Issue(key, outcome, table.name, line))
            continue
        previous = records.get(key)
        if previous is None:
            records[key] = record
        elif {k: v for k, v in previous.items() if k != "line"} != {
            k: v for k, v in record.items() if k != "line"
        }:
            problems.append(
                Problem(table.name, line, None, f"{key!r} disagrees with line {previous['line']}")
            )
    if problems:
        raise SheetError(problems)

    optional = ("split",) if "split" in columns else ()
    if survival:
        adapted.label_columns = ("case_id", "time", "event")
    elif slide_level:
        adapted.label_columns = ("slide_id", "case_id", "label", *optional)
    else:
        adapted.label_columns = ("case_id", "label", *optional)

    slides = find_slides(slide_dir)
    if slide_level:
        key_of = case_of_slide.get if survival else (lambda s: s)
    else:
        pattern = re.compile(case_pattern)

        def key_of(slide_id: str) -> str | None:
            match = pattern.search(slide_id)
            return None if match is None else match[1] if pattern.groups else match[0]

    for slide_id, path in sorted(slides.items()):
        if key_of(slide_id) is None:
            reason = "not in the label table" if slide_level else "case_pattern does not match"
            adapted.unmatched_slides.append(Issue(slide_id, reason, str(path)))
    level = "slide" if slide_level and not survival else "case"
    match_by_key(adapted, slides, records, key_of, table.name, level, excluded)
    for slide in adapted.slides:
        slide["mpp"] = mpp_of_slide.get(slide["slide_id"])
    return adapted
