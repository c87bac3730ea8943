"""TCGA slide barcodes and clinical tables, shared by the subtyping, NSCLC and survival adapters.

A diagnostic slide file is `TCGA-A1-A0SB-01Z-00-DX1.<uuid>.svs`: case `TCGA-A1-A0SB` (first 12
characters), sample type `01` (primary tumour), slide kind `DX` (diagnostic, FFPE) or `TS`/`BS`/
`MS` (frozen tissue slides).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from abmilx.adapters.common import Adapted, Issue
from abmilx.sheets import Problem, SheetError

BARCODE = re.compile(
    r"^(?P<case>TCGA-[A-Z0-9]{2}-[A-Z0-9]{4})-(?P<sample>\d{2})[A-Z]-\d{2}-(?P<kind>[A-Z]{2})\d+",
    re.IGNORECASE,
)
CASE_COLUMNS = (
    "case_submitter_id", "cases.submitter_id", "bcr_patient_barcode", "patient_id",
    "submitter_id", "case_id", "case",
)  # fmt: skip


@dataclass(frozen=True)
class Barcode:
    case_id: str
    sample_type: str
    kind: str


def parse_barcode(slide_id: str) -> Barcode | None:
    match = BARCODE.match(slide_id)
    if match is None:
        return None
    return Barcode(match["case"].upper(), match["sample"], match["kind"].upper())


def case_of_barcode(value: str) -> str | None:
    """Case id of a clinical-table value: a 12-character case barcode or any longer barcode."""
    match = re.match(r"^TCGA-[A-Z0-9]{2}-[A-Z0-9]{4}", value.strip(), re.IGNORECASE)
    return match[0].upper() if match else None


def rows_by_case(table, case_column: str) -> tuple[dict[str, list[dict]], dict[str, int]]:
    """Clinical rows grouped by TCGA case (first 12 barcode characters), and each case's first
    line; a value that is no TCGA barcode fails with the file, line and column of every one."""
    rows_of: dict[str, list[dict]] = {}
    first_line: dict[str, int] = {}
    problems = []
    for line, row in table:
        case_id = case_of_barcode(row[case_column])
        if case_id is None:
            problems.append(
                Problem(table.name, line, case_column, f"not a TCGA barcode: {row[case_column]!r}")
            )
            continue
        first_line.setdefault(case_id, line)
        rows_of.setdefault(case_id, []).append(row)
    if problems:
        raise SheetError(problems)
    return rows_of, first_line


def select_slides(
    adapted: Adapted,
    slides: dict[str, Path],
    include_tissue_slides: bool,
    sample_types: Sequence[str] | None,
) -> dict[str, str]:
    """slide_id -> case_id of the slides to use; the others are reported with the reason.

    Diagnostic (DX) slides only unless `include_tissue_slides`; `sample_types` (e.g. ["01"])
    keeps those TCGA sample codes only.
    """
    cases = {}
    for slide_id, path in sorted(slides.items()):
        barcode = parse_barcode(slide_id)
        if barcode is None:
            adapted.unmatched_slides.append(
                Issue(slide_id, "file name is not a TCGA slide barcode", str(path))
            )
        elif barcode.kind != "DX" and not include_tissue_slides:
            adapted.excluded.append(
                Issue(slide_id, f"{barcode.kind} tissue slide (include_tissue_slides is off)")
            )
        elif sample_types is not None and barcode.sample_type not in sample_types:
            adapted.excluded.append(
                Issue(slide_id, f"sample type {barcode.sample_type} not in {list(sample_types)}")
            )
        else:
            cases[slide_id] = barcode.case_id
    return cases
