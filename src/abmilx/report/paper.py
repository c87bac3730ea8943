"""The paper's numbers as data, to print beside ours.

``paper_values.csv`` transcribes every cell of the paper's tables from its text
(arXiv:2506.02408): Tables 1-6, the six sub-tables of Table 7, the sparsity table of
Sec. 3.3, the E2E MIL/sampling table beside Sec. 4.3 and the cost columns of Table 3 (top; its
bottom half is not in the text). One row per cell: ``table, row, column, value, pm, note``;
``value`` is the printed text ("93.97", "OOM", "9h", "-" for not reported), ``pm`` the printed ±
(the official code's bootstrap std, not a CI), ``note`` what the print implies (a gain over the
best two-stage method, a symbol lost in the text extraction). Rows are labelled as printed,
"<encoder> / <method>" where the table groups methods by encoder.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

PAPER_VALUES = Path(__file__).with_name("paper_values.csv")
COLUMNS = ["table", "row", "column", "value", "pm", "note"]


def load_paper_values(path: str | Path = PAPER_VALUES) -> pd.DataFrame:
    """The transcription, with ``number`` (the value as a float, NaN for text like OOM)."""
    values = pd.read_csv(path, dtype=str, keep_default_na=False)
    if list(values.columns) != COLUMNS:
        raise ValueError(f"{path}: columns must be {COLUMNS}, found {list(values.columns)}")
    duplicated = values.duplicated(["table", "row", "column"], keep=False)
    if duplicated.any():
        first = values[duplicated].iloc[0]
        raise ValueError(
            f"{path}: cell ({first['table']}, {first['row']}, {first['column']}) is given twice"
        )
    values["number"] = pd.to_numeric(values["value"], errors="coerce")
    return values


def paper_cell(values: pd.DataFrame, table: str, row: str, column: str) -> str | None:
    """The paper's cell as printed ("93.97 ± 2.9", "OOM"), or None when the paper has no cell."""
    match = values[(values.table == table) & (values.row == row) & (values.column == column)]
    if match.empty:
        return None
    cell = match.iloc[0]
    return f"{cell['value']} ± {cell['pm']}" if cell["pm"] else cell["value"]
