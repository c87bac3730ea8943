"""TCGA-BRCA subtyping: a GDC or cBioPortal clinical table -> IDC vs ILC, slides by barcode.

Histological types other than the two classes are excluded and reported. GDC tables repeat a
case on several rows (one per treatment); rows of one case that disagree exclude the case.
The official split file (labels/subtyping_tcga_brca[_resample].csv of
github.com/DearCaat/E2E-WSI-ABMILX: case, slide, label, fold) gives each case its split, for
the dataset's `split: {scheme: given}`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

from abmilx.adapters.common import (
    Adapted,
    Issue,
    Table,
    column_candidates,
    find_slides,
    is_missing,
    match_by_key,
)
from abmilx.adapters.tcga import CASE_COLUMNS, rows_by_case, select_slides
from abmilx.sheets import Problem, SheetError

CLASSES = ("IDC", "ILC")
SPLITS = ("train", "val", "test")
HISTOLOGY_COLUMNS = (
    "histological_type", "histological_diagnosis", "primary_diagnosis",
    "diagnoses.primary_diagnosis", "cancer_type_detailed",
)  # fmt: skip
# TCGA (histological_type), GDC (ICD-O primary_diagnosis) and cBioPortal spellings, lower-case.
LABEL_MAP = {
    "infiltrating ductal carcinoma": "IDC",
    "infiltrating duct carcinoma, nos": "IDC",
    "breast invasive ductal carcinoma": "IDC",
    "infiltrating lobular carcinoma": "ILC",
    "lobular carcinoma, nos": "ILC",
    "breast invasive lobular carcinoma": "ILC",
}


def build(
    *,
    clinical: str | Path,
    slide_dir: str | Path | Sequence[str | Path],
    columns: Mapping[str, str] | None = None,
    label_map: Mapping[str, str] | None = None,
    include_tissue_slides: bool = False,
    sample_types: Sequence[str] | None = None,
    split_file: str | Path | None = None,
) -> Adapted:
    """Case-level IDC/ILC labels from `clinical`, matched to slides by their case barcode.

    `columns` may name the table's `case_id` and `histology` columns; `label_map` (histology
    text, case-insensitive -> class) replaces the built-in map. With `split_file` (the official
    split CSV), every case gets the split of its rows there; cases missing from it are
    excluded and reported, so the fixed split cannot silently grow.
    """
    split = read_split_file(split_file) if split_file is not None else None
    mapping = {k.strip().lower(): v for k, v in (label_map or LABEL_MAP).items()}
    classes = tuple(sorted(set(mapping.values())))
    table = Table(clinical)
    case_column = table.find(column_candidates(columns, "case_id", CASE_COLUMNS), "case barcode")
    histology_column = table.find(
        column_candidates(columns, "histology", HISTOLOGY_COLUMNS), "histological type"
    )

    rows_of, first_line = rows_by_case(table, case_column)
    found = {
        case_id: {
            "" if is_missing(row[histology_column]) else row[histology_column] for row in rows
        }
        for case_id, rows in rows_of.items()
    }

    adapted = Adapted(
        "classification", classes, ("case_id", "label") + (("split",) if split else ())
    )
    records: dict[str, dict] = {}
    excluded: dict[str, str] = {}
    for case_id, values in found.items():
        labels = {mapping.get(v.lower()) for v in values}
        if len(labels) > 1:
            excluded[case_id] = f"rows disagree on the histological type: {sorted(values)}"
        elif values == {""}:
            excluded[case_id] = "histological type is missing"
        elif labels == {None}:
            excluded[case_id] = f"histological type {values.pop()!r} is not one of {classes}"
        elif split is not None and case_id not in split:
            excluded[case_id] = f"not in the split file {split_file}"
        else:
            records[case_id] = {
                "line": first_line[case_id],
                "case_id": case_id,
                "label": labels.pop(),
            }
            if split is not None:
                records[case_id]["split"] = split[case_id]
            continue
        adapted.excluded.append(Issue(case_id, excluded[case_id], table.name, first_line[case_id]))

    found_slides = find_slides(slide_dir)
    cases = select_slides(adapted, found_slides, include_tissue_slides, sample_types)
    slides = {s: p for s, p in found_slides.items() if s in cases}
    match_by_key(adapted, slides, records, cases.get, table.name, "case", excluded)
    return adapted


def read_split_file(path: str | Path) -> dict[str, str]:
    """case barcode -> train/val/test from the official split CSV (`case, slide, label, fold`,
    or the `Case, ID, Label, Split` names the official loader gives it). Rows repeated for
    oversampling count once; a case on two splits, or a bad fold, names the file and line."""
    table = Table(path)
    case_column = table.find(("case", "case_id"), "case", required=False)
    slide_column = table.find(("slide", "id", "slide_id"), "slide", required=case_column is None)
    fold_column = table.find(("fold", "split"), "fold")
    split: dict[str, str] = {}
    first: dict[str, int] = {}
    problems = []
    for line, row in table:
        case = row[case_column] if case_column else row[slide_column][:12]
        fold = row[fold_column].lower()
        if fold not in SPLITS:
            problems.append(
                Problem(
                    table.name, line, fold_column, f"fold must be one of {SPLITS}, got {fold!r}"
                )
            )
        elif split.setdefault(case, fold) != fold:
            problems.append(
                Problem(
                    table.name, line, fold_column,
                    f"case {case} is {fold} here but {split[case]} on line {first[case]}",
                )
            )  # fmt: skip
        first.setdefault(case, line)
    if problems:
        raise SheetError(problems)
    return split
