"""One row per input slide: what preprocessing made of it (results/qc/slides.tsv)."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import pandas as pd

from abmilx.integrity import read_json_object

COLUMNS = [
    "dataset",
    "slide_id",
    "status",
    "reason",
    "vendor",
    "mpp",
    "mpp_source",
    "objective_power",
    "width",
    "height",
    "level_count",
    "tissue_area_mm2",
]


def qc_table(records: Iterable[str | Path]) -> pd.DataFrame:
    """Collect per-slide tiling QC records into one table, with one ``patches_<scale>`` column per scale."""
    rows = []
    for path in records:
        record = read_json_object(path)
        row = {column: record.get(column) for column in COLUMNS}
        for scale, count in (record.get("patches") or {}).items():
            row[f"patches_{scale}"] = count
        rows.append(row)
    table = pd.DataFrame(rows)
    for column in COLUMNS:
        if column not in table:
            table[column] = None
    patch_columns = sorted(c for c in table.columns if c.startswith("patches_"))
    table[patch_columns] = table[patch_columns].fillna(0).astype(int)
    return table[COLUMNS + patch_columns].sort_values(["dataset", "slide_id"], kind="stable")


def write_qc_table(records: Iterable[str | Path], out: str | Path) -> pd.DataFrame:
    table = qc_table(records)
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    table.to_csv(out, sep="\t", index=False, float_format="%.4g")
    return table
