"""CAMELYON16/17 lymph-node metastasis detection: normal vs tumor, from either or both.

C16: training folders `normal/`, `tumor/` give the label of their slides; the test slides'
labels come from `reference.csv` (`image, class`, with or without a header, as shipped).
test_049 and test_114 are excluded by default, as in RRT-MIL issue #21. One slide per patient,
so case_id = slide id.
C17: `stage_labels.csv` (`patient, stage`) has patient rows (`patient_000.zip, pN0`) and slide
rows (`patient_000_node_0.tif, negative|itc|micro|macro`); itc, micro, macro = tumor. case_id =
patient (`patient_000`).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

from abmilx.adapters.common import (
    Adapted,
    Issue,
    Table,
    find_slides,
    match_by_key,
    strip_slide_suffix,
)
from abmilx.sheets import Problem, SheetError

CLASSES = ("normal", "tumor")
C17_STAGES = {"negative": "normal", "itc": "tumor", "micro": "tumor", "macro": "tumor"}
C16_EXCLUDED = ("test_049", "test_114")
C17_SLIDE = re.compile(r"^(patient_\d+)_node_\d+$", re.IGNORECASE)


def _c16_reference(path: str | Path) -> Table:
    """The official file has no header (`test_001,Tumor,Macro,Field`); a headed one works too."""
    first = Table(path, header=False, names=("image", "class"))
    if first.rows and first.rows[0]["class"].lower() in CLASSES:
        return first
    return Table(path)


def _c16_records(slides: dict[str, Path], reference: str | Path | None) -> dict[str, dict]:
    """slide id -> record, from the training folder names and the test reference file."""
    records: dict[str, dict] = {}
    for slide_id, path in slides.items():
        folder = path.parent.name.lower()
        if folder in CLASSES:
            records[slide_id] = {"line": None, "case_id": slide_id, "label": folder}
    if reference is None:
        return records
    table = _c16_reference(reference)
    image_column = table.find(("image", "slide", "slide_id", "id", "name"), "image")
    class_column = table.find(("class", "label", "type"), "class")
    problems = []
    for line, row in table:
        slide_id = strip_slide_suffix(row[image_column]).lower()
        label = row[class_column].lower()
        if label not in CLASSES:
            problems.append(
                Problem(
                    table.name,
                    line,
                    class_column,
                    f"class must be normal or tumor, got {row[class_column]!r}",
                )
            )
        elif slide_id in records:
            problems.append(Problem(table.name, line, image_column, f"duplicate {slide_id!r}"))
        else:
            records[slide_id] = {
                "line": line,
                "case_id": slide_id,
                "label": label,
                "file": table.name,
            }
    if problems:
        raise SheetError(problems)
    return records


def _c17_records(stage_labels: str | Path) -> dict[str, dict]:
    """slide id -> record from the slide rows; patient (.zip) rows carry the pN stage only."""
    table = Table(stage_labels)
    name_column = table.find(("patient",), "patient")
    stage_column = table.find(("stage",), "stage")
    records: dict[str, dict] = {}
    problems = []
    for line, row in table:
        name, stage = row[name_column], row[stage_column].lower()
        if name.lower().endswith(".zip"):
            continue
        slide_id = strip_slide_suffix(name)
        match = C17_SLIDE.match(slide_id)
        if match is None:
            problems.append(Problem(table.name, line, name_column, f"not a C17 slide: {name!r}"))
        elif stage not in C17_STAGES:
            problems.append(
                Problem(
                    table.name,
                    line,
                    stage_column,
                    f"stage must be one of {', '.join(C17_STAGES)}, got {row[stage_column]!r}",
                )
            )
        elif slide_id.lower() in records:
            problems.append(Problem(table.name, line, name_column, f"duplicate {slide_id!r}"))
        else:
            records[slide_id.lower()] = {
                "line": line, "case_id": match[1].lower(), "label": C17_STAGES[stage],
                "file": table.name,
            }  # fmt: skip
    if problems:
        raise SheetError(problems)
    return records


def build(
    *,
    c16_dir: str | Path | None = None,
    c16_reference: str | Path | None = None,
    c17_dir: str | Path | None = None,
    c17_labels: str | Path | None = None,
    exclude: Sequence[str] = C16_EXCLUDED,
) -> Adapted:
    """Slide-level normal/tumor labels from C16 (`c16_dir` [+ `c16_reference`]) and/or C17
    (`c17_dir` + `c17_labels`); `exclude` lists slide ids to leave out (reported)."""
    if c16_dir is None and c17_dir is None:
        raise ValueError("give c16_dir and/or c17_dir")
    if (c17_dir is None) != (c17_labels is None):
        raise ValueError("c17_dir and c17_labels go together")
    adapted = Adapted("classification", CLASSES, ("slide_id", "case_id", "label"))
    slides: dict[str, Path] = {}
    records: dict[str, dict] = {}
    for folder, read in (
        (c16_dir, lambda found: _c16_records(found, c16_reference)),
        (c17_dir, lambda found: _c17_records(c17_labels)),
    ):
        if folder is None:
            continue
        found = find_slides(folder)
        overlap = sorted(set(found) & set(slides))
        if overlap:
            raise ValueError(f"slide ids in both C16 and C17 folders: {overlap[:5]}")
        slides.update(found)
        records.update(read(found))

    dropped = {s.lower(): "excluded by the 'exclude' option (RRT-MIL issue #21)" for s in exclude}
    for key, reason in dropped.items():
        record = records.get(key, {})
        if record or any(s.lower() == key for s in slides):
            adapted.excluded.append(Issue(key, reason, record.get("file"), record.get("line")))
    label_file = " / ".join(str(f) for f in (c16_reference, c17_labels) if f is not None)
    match_by_key(
        adapted,
        slides,
        records,
        str.lower,
        label_file or "the C16 training folders",
        "slide",
        dropped,
    )
    return adapted
