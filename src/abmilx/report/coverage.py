"""The coverage ledger: what a config does with every printed cell of the paper.

Each printed cell of ``paper_values.csv`` (value not "-") belongs to one of the paper's datasets
(its column: "TCGA-BRCA" of Table 1, "Sub." of Tables 3-7, ...; the cost columns to the dataset
the paper measured them on). A config declares a paper dataset when one of its tables maps a
column to a column of that dataset, and then accounts for every printed cell of that dataset:

- *produced*: a declared table row runs it (experiment, dataset, metric);
- *unavailable*: the row cannot run here, with the reason computed from the inputs (weights not
  found at a path; with ``coverage: subset``, the paper config and data that would run it);
- *missing*: nothing accounts for it (``coverage: strict`` makes that a parse-time error).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path

import pandas as pd

from abmilx.config import ConfigError, evaluation_datasets, unavailable_for_weights
from abmilx.experiments import resolve_experiments
from abmilx.report.paper import load_paper_values
from abmilx.report.tables import plan_tables

COLUMNS = ["table", "row", "column", "status", "reason", "experiment", "dataset", "metric"]
STATUSES = ["produced", "unavailable", "missing"]

# The paper's datasets: what runs them (the paper config) and the data it needs.
PAPER_DATASETS = {
    "brca_subtyping": ("tcga_brca_subtyping.yaml", "the TCGA-BRCA diagnostic slides"),
    "nsclc": ("tcga_nsclc.yaml", "the TCGA-LUAD and TCGA-LUSC diagnostic slides"),
    "panda": ("panda.yaml", "the PANDA slides"),
    "camelyon": ("camelyon.yaml", "the CAMELYON16 and CAMELYON17 slides"),
    "luad_survival": ("tcga_survival.yaml", "the TCGA-LUAD slides and clinical table"),
    "brca_survival": ("tcga_survival.yaml", "the TCGA-BRCA slides and clinical table"),
    "blca_survival": ("tcga_survival.yaml", "the TCGA-BLCA slides and clinical table"),
}

# Paper column -> paper dataset: per table where the name is the table's own, else by name
# (Tables 3-7 and Sec. 3.3/4.3 print Grad. = PANDA, Sub. = BRCA subtyping, Surv. = BRCA
# survival; sparsity is measured on CAMELYON; cost columns belong to the BRCA-subtyping runs).
_BY_TABLE = {
    ("table1", "TCGA-BRCA"): "brca_subtyping",
    ("table1", "TCGA-NSCLC"): "nsclc",
    ("table2", "PANDA"): "panda",
    ("table2", "TCGA-LUAD"): "luad_survival",
    ("table2", "TCGA-BRCA"): "brca_survival",
    ("table2", "TCGA-BLCA"): "blca_survival",
    ("table6", "CAMELYON"): "camelyon",
    ("table6", "PANDA"): "panda",
    ("table6", "BRCA (Sub.)"): "brca_subtyping",
    ("table6", "NSCLC"): "nsclc",
    ("table6", "LUAD"): "luad_survival",
    ("table6", "BRCA (Surv.)"): "brca_survival",
    ("table6", "BLCA"): "blca_survival",
}
_BY_NAME = {
    "Grad.": "panda",
    "Sub.": "brca_subtyping",
    "Surv.": "brca_survival",
    "Sparsity": "camelyon",
    **dict.fromkeys(
        ["#Parameter", "FLOPs", "TTime", "Memory", "IT", "Pretrain Cost"], "brca_subtyping"
    ),
}


# Cost figures a run's metrics.json records (abmilx.training, abmilx.evaluation, the paper's
# counts from abmilx.evaluation.paper_cost); a cost column of any other key (the paper's
# pretraining cost of a foundation model) is never produced here.
MEASURED_COSTS = {
    "params", "flops_per_slide", "train_seconds", "train_seconds_total", "patches_seen",
    "peak_rss_mb", "peak_gpu_mb", "inference_seconds_per_slide", "paper_params", "paper_flops",
    "train_hours", "memory_mb", "paper_inference_seconds",
}  # fmt: skip


def paper_dataset(table: str, column: str) -> str:
    """The paper dataset whose runs fill a paper column."""
    key = _BY_TABLE.get((table, column)) or _BY_NAME.get(column)
    if key is None:
        raise ValueError(f"paper column ({table}, {column}) belongs to no known paper dataset")
    return key


def printed_cells(paper: pd.DataFrame | None = None) -> pd.DataFrame:
    """Every printed cell (the paper's "-" is no cell) with its paper dataset."""
    paper = load_paper_values() if paper is None else paper
    cells = paper.loc[paper["value"] != "-", ["table", "row", "column"]].copy()
    cells["paper_dataset"] = [
        paper_dataset(t, c) for t, c in zip(cells.table, cells.column, strict=True)
    ]
    return cells.reset_index(drop=True)


def _declared_cells(plans: Mapping[str, Mapping]) -> Iterable[tuple[tuple, dict]]:
    """(paper cell, entry) for every (row, column) of the declared tables that names one."""
    for plan in plans.values():
        for row in plan["rows"]:
            if not row["paper"]:
                continue
            for column in plan["columns"]:
                reference = column["paper"]
                if not reference:
                    continue
                table = row["paper"]["table"] or reference["table"]
                cell = (table, row["paper"]["row"], reference["column"])
                members = row.get("best_of", [row])  # a derived row: the runs it picks from
                entry = {
                    "experiment": " | ".join(m["experiment"] or "" for m in members),
                    "dataset": column["dataset"],
                    "metric": column["metric"],
                }
                metric = column["metric"]
                if row["reason"]:
                    yield cell, {**entry, "status": "unavailable", "reason": row["reason"]}
                elif metric.startswith("cost.") and metric[5:] not in MEASURED_COSTS:
                    reason = (
                        f"no run measures {metric}: the paper quotes it from the model's authors"
                    )
                    yield cell, {**entry, "status": "unavailable", "reason": reason}
                elif any(
                    m["datasets"] is None or column["dataset"] in m["datasets"] for m in members
                ):
                    yield cell, {**entry, "status": "produced", "reason": ""}


def declared_paper_datasets(plans: Mapping[str, Mapping]) -> dict[str, list[str]]:
    """Paper dataset -> the config's datasets whose table columns map to it."""
    declared: dict[str, list[str]] = {}
    for plan in plans.values():
        for column in plan["columns"]:
            if column["paper"]:
                key = paper_dataset(column["paper"]["table"], column["paper"]["column"])
                datasets = declared.setdefault(key, [])
                if column["dataset"] not in datasets:
                    datasets.append(column["dataset"])
    return declared


# Rows on foundation-model features: the weights they need besides the data, by the row's prefix.
FM_WEIGHTS = {
    "CHIEF /": "the CHIEF weights",
    "UNI /": "the UNI weights",
    "GIGAP /": "the Prov-GigaPath weights",
    "FM* /": "a foundation model's weights",
    "Best in FMs": "the CHIEF, UNI and Prov-GigaPath weights",
}


def subset_reason(key: str, row: str) -> str:
    """What a paper row that this config leaves out needs: the data, the foundation model's
    weights where it has one, and the paper config that runs it."""
    config, data = PAPER_DATASETS[key]
    weights = next((w for prefix, w in FM_WEIGHTS.items() if row.startswith(prefix)), None)
    needs = f"{data} and {weights}" if weights else data
    return f"this config runs a subset of the paper; the row needs {needs} (workflow/configs/paper/{config})"


def coverage_ledger(
    plans: Mapping[str, Mapping], mode: str = "off", paper: pd.DataFrame | None = None
) -> pd.DataFrame:
    """One row per printed cell of every paper dataset the config declares, with its status."""
    best: dict[tuple, dict] = {}
    for cell, entry in _declared_cells(plans):
        known = best.get(cell)
        if known is None or STATUSES.index(entry["status"]) < STATUSES.index(known["status"]):
            best[cell] = entry
    declared = declared_paper_datasets(plans)
    records = []
    for cell in printed_cells(paper).itertuples(index=False):
        if cell.paper_dataset not in declared:
            continue
        entry = best.get((cell.table, cell.row, cell.column))
        if entry is None:
            entry = {"status": "missing", "reason": "", "experiment": "", "metric": "",
                     "dataset": ", ".join(declared[cell.paper_dataset])}  # fmt: skip
            if mode == "subset":
                entry.update(
                    status="unavailable", reason=subset_reason(cell.paper_dataset, cell.row)
                )
        records.append({"table": cell.table, "row": cell.row, "column": cell.column, **entry})
    return pd.DataFrame(records, columns=COLUMNS)


def config_coverage(config: Mapping) -> pd.DataFrame:
    """The ledger of a validated config (experiments as written), as the workflow plans it."""
    experiments = resolve_experiments(config)
    _, unavailable = unavailable_for_weights(config, experiments.experiments)
    tasks = {name: config["datasets"][name]["task"] for name in evaluation_datasets(config)}
    plans = plan_tables(config["tables"], experiments, tasks, unavailable)
    return coverage_ledger(plans, config["coverage"])


def counts(ledger: pd.DataFrame) -> dict[str, int]:
    return {status: int((ledger["status"] == status).sum()) for status in STATUSES}


def summary_line(ledger: pd.DataFrame) -> str:
    n = counts(ledger)
    return (
        f"paper coverage: {n['produced']} produced, {n['unavailable']} unavailable, "
        f"{n['missing']} missing (of {len(ledger)} printed cells)"
    )


def missing_by_table(ledger: pd.DataFrame) -> list[str]:
    """One line per table with missing cells: its rows, each with the missing columns."""
    missing = ledger[ledger["status"] == "missing"]
    lines = []
    for table, cells in missing.groupby("table", sort=False):
        rows = [
            f"{row} ({', '.join(group['column'])})"
            for row, group in cells.groupby("row", sort=False)
        ]
        lines.append(f"  {table}: {'; '.join(rows)}")
    return lines


def check_strict(ledger: pd.DataFrame) -> None:
    """``coverage: strict``: a missing cell fails the parse, naming each table and row."""
    lines = missing_by_table(ledger)
    if lines:
        raise ConfigError(
            "config key 'coverage' is strict and these printed paper cells have no table row "
            "(declare the row, or give its experiment's inputs):\n" + "\n".join(lines)
        )


def write_coverage(ledger: pd.DataFrame, out_dir: str | Path) -> None:
    """coverage.csv (every cell) and coverage.md (counts per table, then the cells not produced)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    ledger.to_csv(out_dir / "coverage.csv", index=False)
    lines = ["# Paper coverage", "", summary_line(ledger) + ".", ""]
    lines += ["| Table | produced | unavailable | missing |", "|---|---|---|---|"]
    for table, cells in ledger.groupby("table", sort=False):
        n = counts(cells)
        lines.append(f"| {table} | {n['produced']} | {n['unavailable']} | {n['missing']} |")
    rest = ledger[ledger["status"] != "produced"]
    if len(rest):
        lines += ["", "## Cells not produced", "", "| Table | Row | Column | Status | Reason |"]
        lines.append("|---|---|---|---|---|")
        lines += [
            f"| {c.table} | {c.row} | {c.column} | {c.status} | {c.reason or '–'} |"
            for c in rest.itertuples(index=False)
        ]
    lines += [
        "",
        "Every printed cell of the paper's datasets this config declares; coverage.csv gives the "
        "experiment, dataset and metric of each produced cell. How to read it: docs/coverage.md.",
    ]
    (out_dir / "coverage.md").write_text("\n".join(lines) + "\n")


def encode(ledger: pd.DataFrame) -> dict:
    """The ledger as compact JSON data for a rule's params (each reason once: a command line
    argument is limited to 128 KiB)."""
    reasons = list(dict.fromkeys(ledger["reason"]))
    rows = [
        [*values[:4], reasons.index(values[4]), *values[5:]]
        for values in ledger[COLUMNS].itertuples(index=False)
    ]
    return {"reasons": reasons, "rows": rows}


def decode(data: Mapping) -> pd.DataFrame:
    rows = [[*row[:4], data["reasons"][row[4]], *row[5:]] for row in data["rows"]]
    return pd.DataFrame(rows, columns=COLUMNS)
