"""Slide and label sheets: loading and validation before any compute.

The Snakefile calls these functions at parse time, so this module imports pandas (and the
config's naming rule) only and reads
the CSV itself with the `csv` module: that keeps the exact editor line number of every record
(header = line 1), which every error message names together with the file and the column.
"""

from __future__ import annotations

import csv
import json
import logging
import math
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from abmilx.config import name_problem
from abmilx.settings import BlockSettings

log = logging.getLogger(__name__)

TASKS = ("classification", "survival")
MAX_LISTED_PROBLEMS = 20
DELIMITER_NAMES = {",": "comma", ";": "semicolon", "\t": "tab", "|": "pipe"}
SPLIT_VALUES = ("train", "val", "test")
SPLIT_COLUMN = re.compile(r"split_(\d+)")
"""A given fold's split column of a label sheet (fold j: split_j)."""
CASE_LABEL_TASKS = ("subtyping", "grading")
"""Paper tasks whose label is a patient's property; a diagnosis (CAMELYON) is per slide."""


@dataclass(frozen=True)
class Problem:
    """One fault in a sheet: where it is and what is wrong."""

    file: str
    row: int | None
    column: str | None
    message: str

    def __str__(self) -> str:
        where = [self.file]
        if self.row is not None:
            where.append(f"line {self.row}")
        if self.column is not None:
            where.append(f"column '{self.column}'")
        return f"{', '.join(where)}: {self.message}"


class SheetError(ValueError):
    """Invalid slide or label sheet. `file`, `row` (editor line) and `column` locate the first
    fault; `problems` lists every fault found, so one run reports them all."""

    def __init__(self, problems: Sequence[Problem]):
        if not problems:
            raise ValueError("SheetError needs at least one problem")
        self.problems = list(problems)
        first = self.problems[0]
        self.file, self.row, self.column = first.file, first.row, first.column
        lines = [str(p) for p in self.problems[:MAX_LISTED_PROBLEMS]]
        if len(self.problems) > MAX_LISTED_PROBLEMS:
            lines.append(f"... and {len(self.problems) - MAX_LISTED_PROBLEMS} more problems")
        super().__init__("\n".join(lines))


class _Sheet:
    """A CSV read as strings, with the editor line number of every record."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.name = str(path)
        self.problems: list[Problem] = []
        if not self.path.is_file():
            raise SheetError([Problem(self.name, None, None, "sheet file does not exist")])
        delimiter = "\t" if self.path.suffix.lower() in (".tsv", ".tab") else ","
        with open(self.path, newline="", encoding="utf-8-sig") as handle:
            reader = csv.reader(handle, delimiter=delimiter)
            header = next(reader, None)
            if header is None:
                raise SheetError([Problem(self.name, 1, None, "sheet is empty (no header line)")])
            self.check_delimiter(header, delimiter)
            self.columns = [name.strip().lower() for name in header]
            self.rows: list[list[str]] = []
            self.lines: list[int] = []
            for record in reader:
                if not any(field.strip() for field in record):
                    continue  # blank line
                line = reader.line_num
                if len(record) > len(self.columns):
                    self.error(
                        line, None, f"{len(record)} fields but the header has {len(self.columns)}"
                    )
                    continue
                record = [field.strip() for field in record]
                record += [""] * (len(self.columns) - len(record))
                self.rows.append(record)
                self.lines.append(line)
        duplicated = {c for c in self.columns if self.columns.count(c) > 1}
        for column in sorted(duplicated):
            self.error(1, column, "column appears more than once in the header")
        self.raise_if_problems()

    def check_delimiter(self, header: list[str], delimiter: str) -> None:
        """A one-column header holding another delimiter: the sheet uses the wrong one."""
        if len(header) != 1:
            return
        for other, name in DELIMITER_NAMES.items():
            if other != delimiter and other in header[0]:
                raise SheetError(
                    [
                        Problem(
                            self.name,
                            1,
                            None,
                            f"the sheet is {name}-separated (header {header[0]!r} is one column); "
                            f"write it {DELIMITER_NAMES[delimiter]}-separated",
                        )
                    ]
                )

    def require_rows(self, what: str) -> None:
        """A header-only sheet would silently run on nothing."""
        if not self.rows:
            raise SheetError(
                [Problem(self.name, None, None, f"no rows: the sheet lists no {what}")]
            )

    def error(self, row: int | None, column: str | None, message: str) -> None:
        self.problems.append(Problem(self.name, row, column, message))

    def raise_if_problems(self) -> None:
        if self.problems:
            raise SheetError(self.problems)

    def require(self, columns: Iterable[str]) -> None:
        missing = [c for c in columns if c not in self.columns]
        for column in missing:
            self.error(
                1, column, f"required column is missing (header has: {', '.join(self.columns)})"
            )
        self.raise_if_problems()

    def values(self, column: str) -> list[str]:
        index = self.columns.index(column)
        return [row[index] for row in self.rows]

    def check_present(self, column: str) -> None:
        for line, value in zip(self.lines, self.values(column), strict=True):
            if value == "":
                self.error(line, column, "value is missing")

    def check_unique(self, column: str) -> None:
        first_line: dict[str, int] = {}
        for line, value in zip(self.lines, self.values(column), strict=True):
            if value == "":
                continue
            if value in first_line:
                self.error(
                    line, column, f"duplicate id '{value}' (first on line {first_line[value]})"
                )
            else:
                first_line[value] = line

    def check_names(self, column: str) -> None:
        """Ids that become file names, wildcards and LMDB keys (`<slide_id>/<scale>/...`)
        follow the config's naming rule."""
        for line, value in zip(self.lines, self.values(column), strict=True):
            if value and (problem := name_problem(value)) is not None:
                self.error(line, column, f"id {problem}")

    def numbers(self, column: str) -> list[float]:
        """Parse a numeric column; unparsable or non-finite values are recorded as problems."""
        parsed = []
        for line, value in zip(self.lines, self.values(column), strict=True):
            if value == "":
                self.error(line, column, "value is missing")
                parsed.append(math.nan)
                continue
            try:
                number = float(value)
            except ValueError:
                self.error(line, column, f"'{value}' is not a number")
                number = math.nan
            else:
                if not math.isfinite(number):
                    self.error(line, column, f"'{value}' is not a finite number")
                    number = math.nan
            parsed.append(number)
        return parsed

    def frame(self, columns: Sequence[str]) -> pd.DataFrame:
        return pd.DataFrame({c: self.values(c) for c in columns}, dtype=object)

    def line_of(self, column: str) -> dict[str, int]:
        return dict(zip(self.values(column), self.lines, strict=True))


def _attach_source(frame: pd.DataFrame, sheet: _Sheet, key: str) -> pd.DataFrame:
    """Remember the sheet path and each key's line, so later checks can point at the line."""
    frame.attrs["source"] = sheet.name
    frame.attrs["key"] = key
    frame.attrs["lines"] = sheet.line_of(key)
    return frame


def _segmentation_schema() -> dict:
    """The config schema's `segmentation` section, with the definitions it may refer to."""
    from abmilx.config import load_schema  # jsonschema + yaml: only when the column is used

    schema = load_schema()
    return {"$defs": schema.get("$defs", {}), "$ref": "#/$defs/segmentation"}


def _segmentation_overrides(sheet: _Sheet) -> list[str]:
    """The `segmentation` column as canonical JSON strings ('' = none), checked against the
    config schema's segmentation section (unknown keys and wrong types are problems)."""
    import jsonschema

    schema = _segmentation_schema()
    # slides_per_job is the dataset's (how many slides a job takes), never one slide's
    allowed = sorted(
        set(schema["$defs"]["segmentation"].get("properties", {})) - set(BlockSettings.DATASET_KEYS)
    )
    validator = jsonschema.Draft202012Validator(schema)
    canonical = []
    for line, value in zip(sheet.lines, sheet.values("segmentation"), strict=True):
        canonical.append("")
        if value == "":
            continue
        try:
            overrides = json.loads(value)
        except json.JSONDecodeError as error:
            sheet.error(line, "segmentation", f"not valid JSON ({error}): {value}")
            continue
        if not isinstance(overrides, dict):
            sheet.error(line, "segmentation", f"must be a JSON object of settings, got {value}")
            continue
        unknown = sorted(set(overrides) - set(allowed))
        if unknown:
            sheet.error(
                line,
                "segmentation",
                f"unknown segmentation setting(s) {', '.join(unknown)} "
                f"(allowed: {', '.join(allowed)})",
            )
            continue
        errors = sorted(validator.iter_errors(overrides), key=lambda e: list(e.path))
        for error in errors:
            where = "/".join(str(part) for part in error.absolute_path)
            sheet.error(line, "segmentation", f"setting '{where}': {error.message}")
        if not errors:
            canonical[-1] = json.dumps(overrides, sort_keys=True)
    return canonical


def load_slide_sheet(path: str | Path, check_files: bool = True) -> pd.DataFrame:
    """Load `slide_id, case_id, path[, mpp, segmentation, geojson]`.

    Paths (`path`, `geojson`) resolve against the sheet's directory. Returns columns slide_id,
    case_id, path (absolute str), mpp (float, NaN when not given), and, only when the sheet has
    them: segmentation (a JSON object of segmentation settings overriding the config for that
    slide, as canonical JSON; '' when blank) and geojson (absolute path of a tissue annotation
    that replaces the computed mask; '' when blank). Raises SheetError listing every fault
    (file, line, column).
    """
    sheet = _Sheet(path)
    sheet.require(("slide_id", "case_id", "path"))
    sheet.require_rows("slides")
    for column in ("slide_id", "case_id", "path"):
        sheet.check_present(column)
    sheet.check_unique("slide_id")
    sheet.check_names("slide_id")

    base = sheet.path.resolve().parent
    resolved = [str((base / p).resolve()) if p else "" for p in sheet.values("path")]
    if check_files:
        for line, raw, full in zip(sheet.lines, sheet.values("path"), resolved, strict=True):
            if raw and not Path(full).exists():
                sheet.error(line, "path", f"slide file '{raw}' does not exist (resolved to {full})")

    mpp = [math.nan] * len(sheet.rows)
    if "mpp" in sheet.columns:
        for i, (line, value) in enumerate(zip(sheet.lines, sheet.values("mpp"), strict=True)):
            if value == "":
                continue
            try:
                mpp[i] = float(value)
            except ValueError:
                sheet.error(line, "mpp", f"'{value}' is not a number (µm/px)")
                continue
            if not math.isfinite(mpp[i]) or mpp[i] <= 0:
                sheet.error(line, "mpp", f"mpp must be a positive finite number, got '{value}'")
    overrides = _segmentation_overrides(sheet) if "segmentation" in sheet.columns else None
    geojson = None
    if "geojson" in sheet.columns:
        raw_geojson = sheet.values("geojson")
        geojson = [str((base / p).resolve()) if p else "" for p in raw_geojson]
        if check_files:
            for line, raw, full in zip(sheet.lines, raw_geojson, geojson, strict=True):
                if raw and not Path(full).is_file():
                    sheet.error(
                        line, "geojson", f"GeoJSON file '{raw}' does not exist (resolved to {full})"
                    )
    sheet.raise_if_problems()

    frame = sheet.frame(("slide_id", "case_id"))
    frame["path"] = resolved
    frame["mpp"] = pd.Series(mpp, dtype=float)
    if overrides is not None:
        frame["segmentation"] = overrides
    if geojson is not None:
        frame["geojson"] = geojson
    return _attach_source(frame, sheet, "slide_id")


def _check_task(task: str) -> None:
    if task not in TASKS:
        raise ValueError(f"unknown task '{task}': expected one of {', '.join(TASKS)}")


def load_label_sheet(
    path: str | Path, task: str, classes: Sequence[object] | None = None
) -> pd.DataFrame:
    """Load a label sheet keyed by `slide_id` (preferred when present) or `case_id`.

    classification: returns key column(s) + `label` (class name as str; must be in `classes`
    when given). survival: returns case_id, time (float months, > 0), event (int 0/1).
    An optional `split` column (train/val/test, a split fixed by the dataset), or one column
    per given fold, `split_0` ... `split_<k-1>`, is kept.
    """
    _check_task(task)
    sheet = _Sheet(path)
    if task == "survival":
        sheet.require(("case_id", "time", "event"))
        key = "case_id"
    else:
        if "slide_id" in sheet.columns:
            key = "slide_id"
        elif "case_id" in sheet.columns:
            key = "case_id"
        else:
            sheet.error(1, "slide_id", "needs a 'slide_id' or a 'case_id' column as key")
            sheet.raise_if_problems()
        sheet.require(("label",))
    sheet.require_rows("labels")
    sheet.check_present(key)
    sheet.check_unique(key)

    keys = [key] + (["case_id"] if key == "slide_id" and "case_id" in sheet.columns else [])
    frame = sheet.frame(keys)
    if task == "classification":
        sheet.check_present("label")
        if classes is not None:
            allowed = [str(c) for c in classes]
            for line, value in zip(sheet.lines, sheet.values("label"), strict=True):
                if value and value not in allowed:
                    sheet.error(
                        line, "label", f"unknown label '{value}' (classes: {', '.join(allowed)})"
                    )
        frame["label"] = sheet.values("label")
    else:
        times = sheet.numbers("time")
        for line, time in zip(sheet.lines, times, strict=True):
            if not math.isnan(time) and time <= 0:
                sheet.error(line, "time", f"survival time must be > 0, got {time:g}")
        events = sheet.numbers("event")
        for line, event in zip(sheet.lines, events, strict=True):
            if not math.isnan(event) and event not in (0.0, 1.0):
                sheet.error(line, "event", f"event must be 0 (censored) or 1, got {event:g}")
        frame["time"] = pd.Series(times, dtype=float)
        frame["event"] = pd.Series([0 if math.isnan(e) else int(e) for e in events], dtype=int)
    given = given_split_columns(sheet.columns)
    numbered = sorted(c for c in sheet.columns if SPLIT_COLUMN.fullmatch(c))
    if "split" in sheet.columns and numbered:
        sheet.error(
            1, numbered[0], "give one fixed split (split) or folds (split_0, ...), not both"
        )
    elif numbered and not given:
        sheet.error(
            1,
            numbered[0],
            f"fold columns must be split_0 ... split_<k-1>, got {', '.join(numbered)}",
        )
    for column in given:
        for line, value in zip(sheet.lines, sheet.values(column), strict=True):
            if value not in SPLIT_VALUES:
                sheet.error(line, column, f"split must be train, val or test, got '{value}'")
        frame[column] = sheet.values(column)
    sheet.raise_if_problems()
    return _attach_source(frame, sheet, key)


def given_split_columns(columns: Iterable[str]) -> list[str]:
    """The label sheet's given split columns in fold order: `split`, or `split_0` ...
    `split_<k-1>` (numbered from 0 without a gap); [] when it has neither."""
    columns = list(columns)
    if "split" in columns:
        return ["split"]
    numbered = {int(m[1]): c for c in columns if (m := SPLIT_COLUMN.fullmatch(c))}
    if not numbered or sorted(numbered) != list(range(len(numbered))):
        return []
    return [numbered[j] for j in range(len(numbered))]


def _case_label_conflicts(joined: pd.DataFrame, label_file: str, lines: dict) -> list[Problem]:
    """Cases whose slides carry different labels, each naming the two label rows."""
    problems = []
    for case_id, group in joined.groupby("case_id", sort=False):
        first = group.iloc[0]
        other = group[group["label"] != first["label"]]
        if other.empty:
            continue
        second = other.iloc[0]
        first_line = lines.get(first["slide_id"])
        problems.append(
            Problem(
                label_file,
                lines.get(second["slide_id"]),
                "label",
                f"case '{case_id}' has two labels: '{second['label']}' for slide "
                f"'{second['slide_id']}' here and '{first['label']}' for slide "
                f"'{first['slide_id']}' on line {first_line}; the slides of a case must share one "
                "label",
            )
        )
    return problems


def join_labels(
    slides: pd.DataFrame,
    labels: pd.DataFrame,
    task: str,
    strict: bool = False,
    one_label_per_case: bool = False,
) -> tuple[pd.DataFrame, list[str]]:
    """Attach labels to slides; returns (slides that have a label, warnings).

    Slides without a label and labels without a slide are warnings (logged and returned), or a
    SheetError when `strict`. A label sheet keyed by slide_id whose case_id disagrees with the
    slide sheet is always an error: the patient-level split would be wrong. With
    `one_label_per_case` (subtyping, grading: a patient property, unlike a lymph node's
    diagnosis), slides of one case with different labels are an error too.
    """
    _check_task(task)
    key = labels.attrs.get("key", "slide_id" if "slide_id" in labels.columns else "case_id")
    label_file = labels.attrs.get("source", "label sheet")
    slide_file = slides.attrs.get("source", "slide sheet")
    label_lines = labels.attrs.get("lines", {})
    slide_lines = slides.attrs.get("lines", {})

    problems: list[Problem] = []
    if key == "slide_id" and "case_id" in labels.columns:
        case_of_slide = dict(zip(slides["slide_id"], slides["case_id"], strict=True))
        for slide_id, case_id in zip(labels["slide_id"], labels["case_id"], strict=True):
            expected = case_of_slide.get(slide_id)
            if expected is not None and case_id != expected:
                problems.append(
                    Problem(
                        label_file,
                        label_lines.get(slide_id),
                        "case_id",
                        f"slide '{slide_id}' has case_id '{case_id}' here but '{expected}' "
                        f"in {slide_file}",
                    )
                )
    if problems:
        raise SheetError(problems)

    label_columns = [c for c in labels.columns if c != "case_id" or key == "case_id"]
    joined = slides.merge(labels[label_columns], on=key, how="left", indicator=True)
    unlabelled = joined.loc[joined["_merge"] == "left_only", "slide_id"].tolist()
    slide_keys = set(slides[key])
    orphan_labels = [k for k in labels[key] if k not in slide_keys]

    for slide_id in unlabelled:
        problems.append(
            Problem(
                slide_file,
                slide_lines.get(slide_id),
                key,
                f"slide '{slide_id}' has no label in {label_file}; it is left out",
            )
        )
    for orphan in orphan_labels:
        problems.append(
            Problem(
                label_file,
                label_lines.get(orphan),
                key,
                f"label for '{orphan}' matches no slide in {slide_file}",
            )
        )
    if strict and problems:
        raise SheetError(problems)
    warnings = [str(p) for p in problems]
    for warning in warnings:
        log.warning(warning)

    joined = joined.loc[joined["_merge"] == "both"].drop(columns="_merge").reset_index(drop=True)
    if one_label_per_case and task == "classification" and key == "slide_id":
        conflicts = _case_label_conflicts(joined, label_file, label_lines)
        if conflicts:
            raise SheetError(conflicts)
    if task == "survival":
        joined["event"] = joined["event"].astype(int)
    joined.attrs = {}
    return joined, warnings


def load_dataset_sheets(dataset: dict, strict: bool = False) -> tuple[pd.DataFrame, list[str]]:
    """Load and cross-check the slide and label sheets of a config dataset (`task`, `classes`,
    `slides`, `labels`), as the workflow does while parsing. Returns (slide sheet, warnings)."""
    task = "survival" if dataset["task"] == "survival" else "classification"
    slides = load_slide_sheet(dataset["slides"], check_files=True)
    labels = load_label_sheet(dataset["labels"], task, classes=dataset.get("classes"))
    _, warnings = join_labels(
        slides,
        labels,
        task,
        strict=strict,
        one_label_per_case=dataset["task"] in CASE_LABEL_TASKS,
    )
    return slides, warnings
