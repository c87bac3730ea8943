"""TCGA-BRCA subtyping: a GDC or cBioPortal clinical table -> IDC vs ILC, slides by barcode.

Histological types other than the two classes are excluded and reported. GDC tables repeat a
case on several rows (one per treatment); rows of one case that disagree exclude the case.
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

CLASSES = ("IDC", "ILC")
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
) -> Adapted:
    """Case-level IDC/ILC labels from `clinical`, matched to slides by their case barcode.

    `columns` may name the table's `case_id` and `histology` columns; `label_map` (histology
    text, case-insensitive -> class) replaces the built-in map.
    """
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

    adapted = Adapted("classification", classes, ("case_id", "label"))
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
        else:
            records[case_id] = {
                "line": first_line[case_id],
                "case_id": case_id,
                "label": labels.pop(),
            }
            continue
        adapted.excluded.append(Issue(case_id, excluded[case_id], table.name, first_line[case_id]))

    found_slides = find_slides(slide_dir)
    cases = select_slides(adapted, found_slides, include_tissue_slides, sample_types)
    slides = {s: p for s, p in found_slides.items() if s in cases}
    match_by_key(adapted, slides, records, cases.get, table.name, "case", excluded)
    return adapted
