"""TCGA survival (LUAD, BRCA, BLCA): a GDC or cBioPortal clinical table -> case-level
`case_id, time, event` (time in months).

GDC: vital_status Alive/Dead, days_to_death, days_to_last_follow_up (days / 30.44 = months).
cBioPortal: OS_MONTHS and OS_STATUS ('1:DECEASED' / '0:LIVING'). Cases with a missing, zero or
negative time are excluded and reported: the survival loss and the C-index need time > 0.
"""

from __future__ import annotations

import math
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
    clinical: str | Path,
    slide_dir: str | Path | Sequence[str | Path],
    source: str = "auto",
    columns: Mapping[str, str] | None = None,
    include_tissue_slides: bool = False,
    sample_types: Sequence[str] | None = None,
) -> Adapted:
    """Case-level survival from `clinical`, matched to slides by case barcode.

    `source` auto picks cBioPortal when OS_STATUS is a column, else GDC. `columns` may name
    `case_id`, `vital_status`, `days_to_death`, `days_to_last_follow_up` (GDC) or `os_months`,
    `os_status` (cBioPortal).
    """
    if source not in SOURCES:
        raise ValueError(f"source must be one of {SOURCES}, got {source!r}")
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

    adapted = Adapted("survival", None, ("case_id", "time", "event"))
    records: dict[str, dict] = {}
    excluded: dict[str, str] = {}
    for case_id, rows in rows_of.items():
        outcome = _case_outcome(rows, source == "gdc")
        line = first_line[case_id]
        if isinstance(outcome, str):
            excluded[case_id] = outcome
            adapted.excluded.append(Issue(case_id, outcome, table.name, line))
        else:
            time, event = outcome
            records[case_id] = {"line": line, "case_id": case_id, "time": time, "event": event}

    found = find_slides(slide_dir)
    cases = select_slides(adapted, found, include_tissue_slides, sample_types)
    slides = {s: p for s, p in found.items() if s in cases}
    match_by_key(adapted, slides, records, cases.get, table.name, "case", excluded)
    return adapted
