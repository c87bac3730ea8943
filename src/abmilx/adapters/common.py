"""Shared parts of the dataset adapters: reading public label tables, finding slide files,
collecting matches and problems, and writing sheets that `abmilx.sheets` accepts.

Adapters only match names; they never open a slide, so they run in seconds on thousands of files.
"""

from __future__ import annotations

import csv
import json
import logging
import os
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

from abmilx.sheets import Problem, SheetError, join_labels, load_label_sheet, load_slide_sheet

log = logging.getLogger(__name__)

# Every single-file format OpenSlide 4 reads (a DICOM series is a folder: see find_slides).
SLIDE_SUFFIXES = (
    ".svs", ".tiff", ".tif", ".ndpi", ".vms", ".vmu", ".scn", ".mrxs", ".svslide", ".bif",
)  # fmt: skip
DICOM_SUFFIX = ".dcm"  # a DICOM WSI series is a folder of these (abmilx.slides opens it)
# Spellings of "no value" in GDC ('--), cBioPortal ([Not Available], NA, ...) and spreadsheets.
MISSING = {"", "'--", "--", "na", "n/a", "nan", "none", "null", "[not available]",
           "[not applicable]", "[unknown]", "[discrepancy]", "[not evaluated]"}  # fmt: skip
MAX_LOGGED = 10


def is_missing(value: str) -> bool:
    return value.strip().lower() in MISSING


def normalise_column(name: str) -> str:
    """Lower-case, trimmed, spaces as underscores: 'Patient ID' and 'PATIENT_ID' compare equal."""
    return re.sub(r"\s+", "_", name.strip().lower())


def strip_slide_suffix(name: str) -> str:
    """'patient_000_node_0.tif' -> 'patient_000_node_0'; names without a slide suffix unchanged."""
    lowered = name.lower()
    for suffix in SLIDE_SUFFIXES:
        if lowered.endswith(suffix):
            return name[: -len(suffix)]
    return name


class Table:
    """A CSV/TSV label file read as strings, keeping each record's editor line for messages.

    Lines starting with '#' are skipped (cBioPortal puts four such lines above the header).
    Tab-separated when the suffix says so (.tsv, .tab, .txt) or the header line has a tab.
    """

    def __init__(self, path: str | Path, header: bool = True, names: Sequence[str] = ()):
        self.path = Path(path)
        self.name = str(path)
        if not self.path.is_file():
            raise SheetError([Problem(self.name, None, None, "file does not exist")])
        with open(self.path, newline="", encoding="utf-8-sig") as handle:
            numbered = [
                (number, line)
                for number, line in enumerate(handle.read().splitlines(), start=1)
                if line.strip() and not line.startswith("#")
            ]
        if not numbered:
            raise SheetError([Problem(self.name, None, None, "file has no header line")])
        tabbed = self.path.suffix.lower() in (".tsv", ".tab", ".txt") or "\t" in numbered[0][1]
        records = list(
            csv.reader([line for _, line in numbered], delimiter="\t" if tabbed else ",")
        )
        if header:
            self.columns = [c.strip() for c in records[0]]
            numbered, records = numbered[1:], records[1:]
        else:
            self.columns = list(names)
        self.header_line = 1 if not numbered else numbered[0][0] - 1
        self.keys = [normalise_column(c) for c in self.columns]
        self.rows: list[dict[str, str]] = []
        self.lines: list[int] = []
        for (number, _), record in zip(numbered, records, strict=True):
            values = [v.strip() for v in record] + [""] * (len(self.columns) - len(record))
            self.rows.append(dict(zip(self.columns, values, strict=False)))
            self.lines.append(number)

    def find(self, candidates: Sequence[str], role: str, required: bool = True) -> str | None:
        """The first column whose normalised name is one of `candidates`.

        A missing required column raises SheetError naming the file, the header line and the
        names tried, so the user knows which option (`columns`) to set.
        """
        for candidate in candidates:
            wanted = normalise_column(candidate)
            if wanted in self.keys:
                return self.columns[self.keys.index(wanted)]
        if required:
            raise SheetError(
                [
                    Problem(
                        self.name,
                        self.header_line,
                        candidates[0],
                        f"no {role} column (tried: {', '.join(candidates)}; "
                        f"header has: {', '.join(self.columns)})",
                    )
                ]
            )
        return None

    def __iter__(self):
        return iter(zip(self.lines, self.rows, strict=True))


def column_candidates(columns: dict[str, str] | None, ours: str, defaults: Sequence[str]):
    """A user mapping (`columns: {ours: theirs}`) replaces the built-in candidate names."""
    if columns and ours in columns:
        return (columns[ours],)
    return tuple(defaults)


def find_slides(folders: str | Path | Sequence[str | Path]) -> dict[str, Path]:
    """Slide files under `folders` (recursive, symlinks followed) by file stem -> path; a
    folder holding `.dcm` files is one DICOM WSI series, by folder name.

    Two files with the same stem would give two slides one id; that is an error naming both,
    because choosing one silently could train on the wrong file.
    """
    if isinstance(folders, str | Path):
        folders = [folders]
    found: dict[str, Path] = {}
    problems = []
    for folder in folders:
        folder = Path(folder)
        if not folder.is_dir():
            raise SheetError([Problem(str(folder), None, None, "slide folder does not exist")])
        for root, dirs, files in os.walk(folder, followlinks=True):
            dirs.sort()
            if any(name.lower().endswith(DICOM_SUFFIX) for name in files):
                dirs.clear()  # a DICOM series: the folder is the slide, its name the id
                candidates = [(Path(root).name, Path(root))]
            else:
                candidates = [
                    (strip_slide_suffix(name), Path(root) / name)
                    for name in sorted(files)
                    if name.lower().endswith(SLIDE_SUFFIXES)
                ]
            for stem, path in candidates:
                path = path.resolve()
                if stem in found and found[stem] != path:
                    problems.append(
                        Problem(str(path), None, None, f"slide id '{stem}' also is {found[stem]}")
                    )
                found.setdefault(stem, path)
    if problems:
        raise SheetError(problems)
    return found


@dataclass(frozen=True)
class Issue:
    """A slide or label row left out of the sheets, and why; `file`/`line` point at the row."""

    id: str
    reason: str
    file: str | None = None
    line: int | None = None

    def __str__(self) -> str:
        where = "" if self.file is None else self.file
        if self.line is not None:
            where += f", line {self.line}"
        return f"{where}: {self.id}: {self.reason}" if where else f"{self.id}: {self.reason}"


@dataclass
class Adapted:
    """What an adapter found: sheet rows plus every slide or label row it did not use."""

    task: str
    classes: tuple[str, ...] | None
    label_columns: tuple[str, ...]
    slides: list[dict] = field(default_factory=list)
    labels: list[dict] = field(default_factory=list)
    unmatched_slides: list[Issue] = field(default_factory=list)
    unmatched_labels: list[Issue] = field(default_factory=list)
    excluded: list[Issue] = field(default_factory=list)


@dataclass
class Report:
    """Summary written next to the sheets (`report.json`), so no left-out row goes unnoticed."""

    dataset: str
    task: str
    n_slides: int
    n_cases: int
    counts: dict[str, int]
    unmatched_slides: list[dict]
    unmatched_labels: list[dict]
    excluded: list[dict]

    def as_dict(self) -> dict:
        return asdict(self)


def match_by_key(
    adapted: Adapted,
    slides: dict[str, Path],
    records: dict[str, dict],
    key_of_slide: Callable[[str], str | None],
    label_file: str,
    level: str,
    excluded_keys: dict[str, str] | None = None,
    mpp_of: Callable[[dict], float | None] | None = None,
) -> None:
    """Pair slide files with label records through `key_of_slide(slide_id) -> key | None`.

    `records` maps a key (slide or case id) to {"line", "case_id", <label columns>};
    `excluded_keys` maps keys dropped by a rule to the reason, so their slides are reported as
    excluded rather than unmatched. A slide whose key is None is skipped: the caller has
    already reported why its name gives no key.
    """
    excluded_keys = excluded_keys or {}
    used: set[str] = set()
    for slide_id, path in sorted(slides.items()):
        key = key_of_slide(slide_id)
        if key is None:
            continue  # the caller reported it
        if key in excluded_keys:
            if level == "case":  # a slide-level row was reported already, with its line
                adapted.excluded.append(Issue(slide_id, f"case {key}: {excluded_keys[key]}"))
            continue
        record = records.get(key)
        if record is None:
            adapted.unmatched_slides.append(
                Issue(slide_id, f"no label row for {level} '{key}' in {label_file}", str(path))
            )
            continue
        used.add(key)
        mpp = mpp_of(record) if mpp_of else None
        adapted.slides.append(
            {"slide_id": slide_id, "case_id": record["case_id"], "path": str(path), "mpp": mpp}
        )
        if level == "slide":
            adapted.labels.append({"slide_id": slide_id, **_label_values(adapted, record)})
    for key, record in records.items():
        if key in excluded_keys:
            continue
        if key not in used:
            adapted.unmatched_labels.append(
                Issue(
                    key,
                    f"no slide file for this {level}",
                    record.get("file", label_file),
                    record["line"],
                )
            )
        elif level == "case":
            adapted.labels.append(_label_values(adapted, record))


def _label_values(adapted: Adapted, record: dict) -> dict:
    return {c: record[c] for c in adapted.label_columns if c != "slide_id"}


def _format_mpp(value: float | None) -> str:
    return "" if value is None else f"{value:g}"


def write_sheets(dataset: str, adapted: Adapted, out_dir: str | Path) -> tuple[Path, Path, Report]:
    """Write slides.csv, labels.csv and report.json, then load them back with the sheet
    validator and join them strictly: an adapter bug fails here, not hours later in a job."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    if not adapted.slides:
        raise ValueError(
            f"{dataset}: no slide matched a label row ({len(adapted.unmatched_slides)} unmatched "
            f"slides, {len(adapted.unmatched_labels)} unmatched labels); check slide_dir and the "
            "label file"
        )
    slides_csv, labels_csv = out_dir / "slides.csv", out_dir / "labels.csv"
    with_mpp = any(row["mpp"] is not None for row in adapted.slides)
    slide_columns = ["slide_id", "case_id", "path"] + (["mpp"] if with_mpp else [])
    with open(slides_csv, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(slide_columns)
        for row in sorted(adapted.slides, key=lambda r: r["slide_id"]):
            values = [row["slide_id"], row["case_id"], row["path"]]
            writer.writerow(values + ([_format_mpp(row["mpp"])] if with_mpp else []))
    key = adapted.label_columns[0]
    with open(labels_csv, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(adapted.label_columns))
        writer.writeheader()
        writer.writerows(sorted(adapted.labels, key=lambda r: r[key]))

    task = adapted.task
    table, _ = join_labels(
        load_slide_sheet(slides_csv, check_files=True),
        load_label_sheet(labels_csv, task, adapted.classes),
        task,
        strict=True,
    )
    if task == "classification":
        counts = {str(k): int(v) for k, v in table["label"].value_counts().sort_index().items()}
    else:
        events = table.drop_duplicates("case_id")["event"]
        counts = {"events": int(events.sum()), "censored": int((events == 0).sum())}
    report = Report(
        dataset=dataset,
        task=task,
        n_slides=len(table),
        n_cases=int(table["case_id"].nunique()),
        counts=counts,
        unmatched_slides=[asdict(i) for i in adapted.unmatched_slides],
        unmatched_labels=[asdict(i) for i in adapted.unmatched_labels],
        excluded=[asdict(i) for i in adapted.excluded],
    )
    (out_dir / "report.json").write_text(json.dumps(report.as_dict(), indent=2) + "\n")
    _log_issues(dataset, "unmatched slide", adapted.unmatched_slides)
    _log_issues(dataset, "unmatched label", adapted.unmatched_labels)
    _log_issues(dataset, "excluded", adapted.excluded)
    log.info(
        "%s: %d slides, %d cases %s; %d unmatched slides, %d unmatched labels, %d excluded "
        "(details in %s)",
        dataset,
        report.n_slides,
        report.n_cases,
        counts,
        len(adapted.unmatched_slides),
        len(adapted.unmatched_labels),
        len(adapted.excluded),
        out_dir / "report.json",
    )
    return slides_csv, labels_csv, report


def _log_issues(dataset: str, kind: str, issues: Iterable[Issue]) -> None:
    issues = list(issues)
    for issue in issues[:MAX_LOGGED]:
        log.warning("%s: %s: %s", dataset, kind, issue)
    if len(issues) > MAX_LOGGED:
        log.warning("%s: ... and %d more %s rows", dataset, len(issues) - MAX_LOGGED, kind)
