"""The paper's tables: every run's bootstrap estimate with its 95 % interval, as CSV and Markdown."""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from pathlib import Path

import pandas as pd

# Which metric a table shows for each task (the paper: AUC for subtyping/diagnosis, accuracy for
# grading, C-index for survival); the other metrics stay in the CSV.
HEADLINE_METRIC = {
    "subtyping": "auc",
    "diagnosis": "auc",
    "grading": "balanced_accuracy",
    "survival": "c_index",
}


def _interval(summary: Mapping) -> str:
    return (
        f"{100 * summary['mean']:.2f} "
        f"[{100 * summary['ci_low']:.2f}, {100 * summary['ci_high']:.2f}]"
    )


def load_runs(metric_files: Iterable[str | Path]) -> list[dict]:
    runs = []
    for path in metric_files:
        with open(path) as handle:
            runs.append(json.load(handle))
    return runs


def main_table(runs: list[dict], settings: Mapping) -> pd.DataFrame:
    """Long table: one row per (experiment, dataset, metric) with point, mean, CI, std and cost."""
    rows = []
    for run in runs:
        experiment = settings["experiments"].get(run["experiment"], {})
        for metric, summary in run["metrics"].items():
            rows.append(
                {
                    "experiment": run["experiment"],
                    "title": experiment.get("title", run["experiment"]),
                    "kind": experiment.get("kind", ""),
                    "dataset": run["dataset"],
                    "task": settings["datasets"].get(run["dataset"], run.get("task", "")),
                    "metric": metric,
                    "point": summary["point"],
                    "mean": summary["mean"],
                    "ci_low": summary["ci_low"],
                    "ci_high": summary["ci_high"],
                    "std": summary["std"],
                    "n_test": summary["n"],
                    "n_boot": summary["n_boot"],
                    "encoder_weights": run["provenance"].get("encoder_weights"),
                    "selection": (run.get("selection") or {}).get("protocol", ""),
                    "train_seconds": run["cost"].get("train_seconds"),
                    "params": run["cost"].get("params"),
                    "inference_seconds_per_slide": run["cost"].get("inference_seconds_per_slide"),
                }
            )
    columns = ["experiment", "dataset", "metric"]
    return pd.DataFrame(rows).sort_values(columns, kind="stable").reset_index(drop=True)


def headline_markdown(table: pd.DataFrame, settings: Mapping) -> str:
    """Experiments as rows, datasets as columns, each cell the headline metric with its 95 % CI."""
    datasets = list(settings["datasets"])
    header = ["Method"] + [f"{d} ({HEADLINE_METRIC[settings['datasets'][d]]})" for d in datasets]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    flagged = set(table.loc[table["selection"] == "test_official", "experiment"])
    for experiment, meta in settings["experiments"].items():
        cells = [meta["title"] + (" †" if experiment in flagged else "")]
        for dataset in datasets:
            metric = HEADLINE_METRIC[settings["datasets"][dataset]]
            match = table[
                (table.experiment == experiment)
                & (table.dataset == dataset)
                & (table.metric == metric)
            ]
            cells.append(_interval(match.iloc[0]) if len(match) else "n/a")
        lines.append("| " + " | ".join(cells) + " |")
    weights = sorted({str(w) for w in table["encoder_weights"].dropna()})
    notes = [
        "",
        "Values: bootstrap mean over test-set resamples ×100, with the 2.5 and 97.5 percentiles "
        "in brackets. The CSV beside this file has every metric, the point estimate, the "
        "bootstrap std (the official code's ±) and the cost of each run.",
    ]
    if flagged:
        notes.append(
            "† Model selected on the test set (the official BRCA-subtyping and survival "
            "protocol): optimistic, shown for comparison with the paper only."
        )
    if "random" in weights:
        notes.append(
            "Encoders were initialised at random (no pretrained weights were available), "
            "so these numbers are not comparable with the paper's."
        )
    return "\n".join(lines + notes) + "\n"


def _markdown(table: pd.DataFrame) -> str:
    def cell(value):
        return f"{value:.1f}" if isinstance(value, float) else str(value)

    lines = ["| " + " | ".join(table.columns) + " |", "|" + "---|" * len(table.columns)]
    lines += [
        "| " + " | ".join(cell(v) for v in row) + " |" for row in table.itertuples(index=False)
    ]
    return "\n".join(lines)


def cohort_table(qc: pd.DataFrame) -> pd.DataFrame:
    """Per dataset: slides by QC status, tissue and patches per slide (the paper's data section)."""
    ok = qc[qc["status"] == "ok"]
    patch_columns = [c for c in qc.columns if c.startswith("patches_")]
    summary = qc.groupby("dataset").agg(slides=("slide_id", "size"))
    for status in ["ok", "failed", "no_tissue"]:
        summary[status] = qc[qc["status"] == status].groupby("dataset").size()
    summary["tissue_mm2_per_slide"] = ok.groupby("dataset")["tissue_area_mm2"].mean()
    for column in patch_columns:
        summary[f"{column}_per_slide"] = ok.groupby("dataset")[column].mean()
        summary[f"{column}_total"] = ok.groupby("dataset")[column].sum()
    return summary.fillna(0).reset_index()


def write_tables(
    metric_files: Iterable[str | Path],
    out_dir: str | Path,
    settings: Mapping,
    qc_table: str | Path | None = None,
):
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    if qc_table is not None:
        cohort = cohort_table(pd.read_csv(qc_table, sep="\t"))
        cohort.to_csv(out_dir / "cohort.csv", index=False, float_format="%.4g")
        (out_dir / "cohort.md").write_text(
            "# Cohorts after preprocessing\n\n"
            + _markdown(cohort)
            + "\n\nPer-slide detail and the reason of every failed slide: results/qc/slides.tsv.\n"
        )
    table = main_table(load_runs(metric_files), settings)
    table.to_csv(out_dir / "main.csv", index=False, float_format="%.6g")
    (out_dir / "main.md").write_text("# Main results\n\n" + headline_markdown(table, settings))
    return table
