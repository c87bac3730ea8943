"""TCGA survival (LUAD, BRCA, BLCA): a GDC or cBioPortal clinical table, or the official fold
files, -> case-level `case_id, time, event` (time in months) [+ `split_0` ... `split_{k-1}`].

GDC: vital_status Alive/Dead, days_to_death, days_to_last_follow_up (days / 30.44 = months).
cBioPortal: OS_MONTHS and OS_STATUS ('1:DECEASED' / '0:LIVING'). Cases with a missing, zero or
negative time are excluded and reported: the survival loss and the C-index need time > 0.

The official BRCA survival folds (labels/survival_tcga_brca_3fold/fold_{0,1,2}.csv of
github.com/DearCaat/E2E-WSI-ABMILX: `Study, ID, Event, Status, WSI, RNA, Label, Split`, one row
per case, Event = months, Status = 1 death / 0 censored, WSI = ';'-separated feature files) give
every case its split in every fold, for the dataset's `split: {scheme: given, given_folds: k}`.
Without a clinical table the outcomes come from the fold files, as the official code reads them.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from abmilx.adapters.common import (
    Adapted,
    Issue,
    Table,
    column_candidates,
    find_slides,
    is_missing,
    match_by_key,
    strip_slide_suffix,
)
from abmilx.adapters.tcga import CASE_COLUMNS, case_of_barcode, rows_by_case, select_slides
from abmilx.sheets import Problem, SheetError

DAYS_PER_MONTH = 30.44
SOURCES = ("auto", "gdc", "cbioportal")
STATUS_COLUMNS = ("vital_status", "demographic.vital_status")
DEATH_COLUMNS = ("days_to_death", "demographic.days_to_death")
FOLLOW_UP_COLUMNS = (
    "days_to_last_follow_up", "diagnoses.days_to_last_follow_up", "days_to_last_followup",
)  # fmt: skip
OS_MONTHS_COLUMNS = ("os_months", "overall_survival_(months)")
OS_STATUS_COLUMNS = ("os_status", "overall_survival_status")
DEAD = {"dead", "deceased", "1:deceased", "1"}
ALIVE = {"alive", "living", "0:living", "0"}
SPLITS = ("train", "val", "test")
# Column names of the official fold files first (their survival time is called "Event").
FOLD_CASE_COLUMNS = ("id", *CASE_COLUMNS)
FOLD_SPLIT_COLUMNS = ("split", "fold")
FOLD_TIME_COLUMNS = ("event", "time", "os_months", "survival_months")
FOLD_STATUS_COLUMNS = ("status", "vital_status", "os_status")
FOLD_SLIDE_COLUMNS = ("wsi", "slide_id", "slide")
FEATURE_SUFFIXES = (".pt", ".h5", ".npy")  # the WSI column names feature files after the slides


def _number(value: str) -> float | None:
    """A finite number, or None for a missing or unparsable value (reported by the caller)."""
    if is_missing(value):
        return None
    try:
        number = float(value)
    except ValueError:
        return None
    return number if math.isfinite(number) else None


def _case_outcome(rows: list[dict], gdc: bool) -> tuple[float, int] | str:
    """(months, event) of one case from its rows, or the reason it is excluded."""
    statuses = {r["status"].lower() for r in rows if not is_missing(r["status"])}
    unknown = statuses - DEAD - ALIVE
    if unknown:
        return f"unknown vital status {sorted(unknown)}"
    events = {1 if s in DEAD else 0 for s in statuses}
    if not events:
        return "vital status is missing"
    if len(events) > 1:
        return f"rows disagree on the vital status: {sorted(statuses)}"
    event = events.pop()
    if gdc:
        column = "death" if event else "follow_up"
        days = [d for d in (_number(r[column]) for r in rows) if d is not None]
        if not days:
            name = "days_to_death" if event else "days_to_last_follow_up"
            return f"{'dead' if event else 'alive'} but {name} is missing"
        months = max(days) / DAYS_PER_MONTH  # GDC repeats a case per follow-up: the latest
    else:
        values = {_number(r["months"]) for r in rows} - {None}
        if not values:
            return "OS_MONTHS is missing"
        months = max(values)
    if months <= 0:
        return f"survival time {months:g} months is not positive"
    return round(months, 4), event


def build(
    *,
    slide_dir: str | Path | Sequence[str | Path],
    clinical: str | Path | None = None,
    fold_files: str | Path | Sequence[str | Path] | None = None,
    source: str = "auto",
    columns: Mapping[str, str] | None = None,
    include_tissue_slides: bool = False,
    sample_types: Sequence[str] | None = None,
) -> Adapted:
    """Case-level survival from `clinical` or `fold_files`, matched to slides by case barcode.

    `source` auto picks cBioPortal when OS_STATUS is a column, else GDC. `columns` may name
    `case_id`, `vital_status`, `days_to_death`, `days_to_last_follow_up` (GDC) or `os_months`,
    `os_status` (cBioPortal).

    `fold_files` (the official fold CSVs, a list in fold order or a folder of `fold_<j>.csv`)
    add one split column per fold, `split_<j>`; cases missing from them are excluded and
    reported, and where a file lists a case's slides (`WSI`), its other slides are too. The
    outcomes come from `clinical` when it is given, else from the fold files.
    """
    if source not in SOURCES:
        raise ValueError(f"source must be one of {SOURCES}, got {source!r}")
    if clinical is None and fold_files is None:
        raise ValueError(
            "tcga_survival needs the outcomes: a clinical table (clinical) or the official "
            "fold files (fold_files)"
        )
    folds = None
    if fold_files is not None:
        folds = read_fold_files(fold_paths(fold_files), outcomes=clinical is None)
    split_columns = (
        tuple(f"split_{j}" for j in range(len(folds.files))) if folds is not None else ()
    )
    adapted = Adapted("survival", None, ("case_id", "time", "event", *split_columns))
    excluded: dict[str, str] = {}
    if clinical is not None:
        records, label_file = _clinical_records(adapted, excluded, clinical, source, columns)
    else:
        records, label_file = _fold_records(adapted, excluded, folds), folds.files[0]
    if folds is not None:
        _attach_folds(adapted, excluded, records, folds, clinical)

    found = find_slides(slide_dir)
    cases = select_slides(adapted, found, include_tissue_slides, sample_types)
    if folds is not None:
        cases = _listed_slides(adapted, cases, folds)
    slides = {s: p for s, p in found.items() if s in cases}
    match_by_key(adapted, slides, records, cases.get, label_file, "case", excluded)
    return adapted


def _clinical_records(
    adapted: Adapted,
    excluded: dict[str, str],
    clinical: str | Path,
    source: str,
    columns: Mapping[str, str] | None,
) -> tuple[dict[str, dict], str]:
    """case -> {line, case_id, time, event} from a GDC or cBioPortal table; the cases left
    out go to `excluded` and `adapted.excluded` with their reason."""
    table = Table(clinical)
    case_column = table.find(column_candidates(columns, "case_id", CASE_COLUMNS), "case barcode")
    if source == "auto":
        has_os = table.find(
            column_candidates(columns, "os_status", OS_STATUS_COLUMNS), "OS status", False
        )
        source = "cbioportal" if has_os else "gdc"
    if source == "gdc":
        wanted = {
            "status": table.find(column_candidates(columns, "vital_status", STATUS_COLUMNS),
                                 "vital status"),
            "death": table.find(column_candidates(columns, "days_to_death", DEATH_COLUMNS),
                                "days to death"),
            "follow_up": table.find(
                column_candidates(columns, "days_to_last_follow_up", FOLLOW_UP_COLUMNS),
                "days to last follow-up",
            ),
        }  # fmt: skip
    else:
        wanted = {
            "status": table.find(column_candidates(columns, "os_status", OS_STATUS_COLUMNS),
                                 "OS status"),
            "months": table.find(column_candidates(columns, "os_months", OS_MONTHS_COLUMNS),
                                 "OS months"),
        }  # fmt: skip

    grouped, first_line = rows_by_case(table, case_column)
    rows_of = {
        case_id: [{k: row[c] for k, c in wanted.items()} for row in rows]
        for case_id, rows in grouped.items()
    }
    records: dict[str, dict] = {}
    for case_id, rows in rows_of.items():
        outcome = _case_outcome(rows, source == "gdc")
        line = first_line[case_id]
        if isinstance(outcome, str):
            excluded[case_id] = outcome
            adapted.excluded.append(Issue(case_id, outcome, table.name, line))
        else:
            time, event = outcome
            records[case_id] = {"line": line, "case_id": case_id, "time": time, "event": event}
    return records, table.name


@dataclass
class FoldCase:
    """One case of the fold files: its split per fold, where each fold lists it, its outcome
    (when the files carry one) and the slides they name for it (stems; empty = any)."""

    splits: list[str | None]
    where: list[tuple[str, int] | None]
    time: float | None = None
    event: int | None = None
    slides: set[str] = field(default_factory=set)


@dataclass
class Folds:
    files: list[str]
    cases: dict[str, FoldCase]


def fold_paths(fold_files: str | Path | Sequence[str | Path]) -> list[Path]:
    """The fold files in fold order: a list as given, or a folder's `fold_<j>.csv` by j (which
    must run 0 .. k-1, so that fold j of the split is the file numbered j)."""
    if isinstance(fold_files, str | Path):
        folder = Path(fold_files)
        if not folder.is_dir():
            return [folder]
        numbered = {}
        for path in folder.iterdir():
            match = re.fullmatch(r"fold_?(\d+)\.(csv|tsv)", path.name, re.IGNORECASE)
            if match:
                numbered[int(match[1])] = path
        if sorted(numbered) != list(range(len(numbered))) or not numbered:
            found = ", ".join(p.name for _, p in sorted(numbered.items())) or "none"
            raise SheetError(
                [Problem(str(folder), None, None,
                         f"needs fold files fold_0.csv ... fold_<k-1>.csv (found: {found})")]
            )  # fmt: skip
        return [numbered[j] for j in range(len(numbered))]
    return [Path(p) for p in fold_files]


def _slide_stem(name: str) -> str:
    lowered = name.lower()
    for suffix in FEATURE_SUFFIXES:
        if lowered.endswith(suffix):
            return name[: -len(suffix)]
    return strip_slide_suffix(name)


def read_fold_files(paths: Sequence[str | Path], outcomes: bool = True) -> Folds:
    """Every case's split in each fold file (fold j = paths[j]), checked across the files.

    A split other than train/val/test, a case listed twice in one file, a case missing from a
    file that another lists, a case tested in two folds, or a survival time or status that
    differs between files raises SheetError naming each file, line and column. `outcomes`:
    the files must carry the survival time (`Event`) and status (`Status`) columns.
    """
    if not paths:
        raise ValueError("fold_files is empty: give the fold files in fold order")
    tables = [Table(path) for path in paths]
    k = len(tables)
    cases: dict[str, FoldCase] = {}
    problems: list[Problem] = []
    column_of: list[dict[str, str | None]] = []
    for j, table in enumerate(tables):
        column = {
            "case": table.find(FOLD_CASE_COLUMNS, "case barcode"),
            "split": table.find(FOLD_SPLIT_COLUMNS, "split"),
            "time": table.find(FOLD_TIME_COLUMNS, "survival time (months)", outcomes),
            "event": table.find(FOLD_STATUS_COLUMNS, "event status (1 death, 0 censored)",
                                outcomes),
            "slides": table.find(FOLD_SLIDE_COLUMNS, "slide", False),
        }  # fmt: skip
        column_of.append(column)
        seen: dict[str, int] = {}
        for line, row in table:
            case_id = case_of_barcode(row[column["case"]])
            if case_id is None:
                problems.append(
                    Problem(table.name, line, column["case"],
                            f"not a TCGA case barcode: {row[column['case']]!r}")
                )  # fmt: skip
                continue
            if case_id in seen:
                problems.append(
                    Problem(table.name, line, column["case"],
                            f"case {case_id} is listed twice (first on line {seen[case_id]})")
                )  # fmt: skip
                continue
            seen[case_id] = line
            case = cases.setdefault(case_id, FoldCase([None] * k, [None] * k))
            split = row[column["split"]].strip().lower()
            if split not in SPLITS:
                problems.append(
                    Problem(table.name, line, column["split"],
                            f"split must be one of {SPLITS}, got {row[column['split']]!r}")
                )  # fmt: skip
            case.splits[j], case.where[j] = split, (table.name, line)
            for key, parse in (("time", _fold_time), ("event", _fold_status)):
                if column[key] is None:
                    continue
                value = parse(row[column[key]])
                if isinstance(value, str):
                    problems.append(Problem(table.name, line, column[key], value))
                    continue
                first = getattr(case, key)
                if first is None:
                    setattr(case, key, value)
                elif not math.isclose(first, value, rel_tol=1e-9, abs_tol=1e-9):
                    origin = next(w for w in case.where if w is not None)
                    problems.append(
                        Problem(table.name, line, column[key],
                                f"case {case_id} has {row[column[key]]!r} here but {first:g} "
                                f"in {origin[0]} line {origin[1]}")
                    )  # fmt: skip
            if column["slides"] is not None:
                names = (n.strip() for n in row[column["slides"]].split(";"))
                case.slides |= {_slide_stem(n) for n in names if n and not is_missing(n)}

    for case_id, case in cases.items():
        listed = [(j, w) for j, w in enumerate(case.where) if w is not None]
        origin_fold, (origin_file, origin_line) = listed[0]
        for j, where in enumerate(case.where):
            if where is None:
                problems.append(
                    Problem(origin_file, origin_line, column_of[origin_fold]["case"],
                            f"case {case_id} is missing from fold {j} ({tables[j].name})")
                )  # fmt: skip
        tested = [j for j, split in enumerate(case.splits) if split == "test"]
        for j in tested[1:]:
            first_file, first_line = case.where[tested[0]]
            problems.append(
                Problem(case.where[j][0], case.where[j][1], column_of[j]["split"],
                        f"case {case_id} is test here and in fold {tested[0]} ({first_file} "
                        f"line {first_line}): the test folds must be disjoint")
            )  # fmt: skip
    if problems:
        raise SheetError(problems)
    return Folds([t.name for t in tables], cases)


def _fold_time(value: str) -> float | str:
    number = _number(value)
    return f"survival time must be a number (months), got {value!r}" if number is None else number


def _fold_status(value: str) -> int | str:
    number = _number(value)
    if number not in (0.0, 1.0):
        return f"status must be 1 (death) or 0 (censored), got {value!r}"
    return int(number)


def _fold_records(adapted: Adapted, excluded: dict[str, str], folds: Folds) -> dict[str, dict]:
    """case -> {file, line, case_id, time, event} from the fold files' own outcomes."""
    records = {}
    for case_id, case in folds.cases.items():
        file, line = next(w for w in case.where if w is not None)
        if case.time <= 0:
            excluded[case_id] = f"survival time {case.time:g} months is not positive"
            adapted.excluded.append(Issue(case_id, excluded[case_id], file, line))
            continue
        records[case_id] = {
            "file": file, "line": line, "case_id": case_id, "time": case.time,
            "event": case.event,
        }  # fmt: skip
    return records


def _attach_folds(
    adapted: Adapted,
    excluded: dict[str, str],
    records: dict[str, dict],
    folds: Folds,
    clinical: str | Path | None,
) -> None:
    """Give each record its split per fold; cases the fold files lack are left out, and
    (with a clinical table) fold-file cases without an outcome there are reported."""
    for case_id in list(records):
        case = folds.cases.get(case_id)
        if case is None:
            excluded[case_id] = f"not in the fold files ({', '.join(folds.files)})"
            record = records.pop(case_id)
            adapted.excluded.append(
                Issue(case_id, excluded[case_id], record.get("file", str(clinical)),
                      record["line"])
            )  # fmt: skip
            continue
        records[case_id].update({f"split_{j}": s for j, s in enumerate(case.splits)})
    if clinical is None:
        return
    for case_id, case in folds.cases.items():
        if case_id not in records and case_id not in excluded:
            file, line = next(w for w in case.where if w is not None)
            adapted.excluded.append(Issue(case_id, f"no row in the clinical table {clinical}",
                                          file, line))  # fmt: skip


def _listed_slides(adapted: Adapted, cases: dict[str, str], folds: Folds) -> dict[str, str]:
    """Of each case's slides, those the fold files list for it (all when they list none)."""
    kept = {}
    for slide_id, case_id in cases.items():
        case = folds.cases.get(case_id)
        listed = {s.lower() for s in case.slides} if case is not None else set()
        if listed and slide_id.lower() not in listed:
            adapted.excluded.append(
                Issue(slide_id, f"not among the slides the fold files list for case {case_id}")
            )
            continue
        kept[slide_id] = case_id
    return kept
