"""Combine the per-fold evaluations of one experiment into one metrics.json and predictions.csv.

The summary keeps the per-fold shape, so one fold aggregates to itself and the report reads a
single format. With k folds: point/mean/ci_low/ci_high/std are the means over folds of the
per-fold values (std = mean bootstrap std, the official `cross_val/*_std`), fold_std is the
std (ddof 0) of the per-fold bootstrap means across folds, and n, n_boot, skipped are sums.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from abmilx.integrity import read_json_object

IDENTITY_KEYS = ("dataset", "experiment", "task", "split")


def _mean(values: list) -> float | None:
    finite = [v for v in values if v is not None]
    return float(np.mean(finite)) if finite else None


def _combine_metric(summaries: list[Mapping[str, Any]]) -> dict[str, Any]:
    means = [s["mean"] for s in summaries]
    finite_means = [m for m in means if m is not None]
    return {
        "point": _mean([s["point"] for s in summaries]),
        "mean": _mean(means),
        "ci_low": _mean([s["ci_low"] for s in summaries]),
        "ci_high": _mean([s["ci_high"] for s in summaries]),
        "std": _mean([s["std"] for s in summaries]),
        "n_boot": int(sum(s["n_boot"] for s in summaries)),
        "n": int(sum(s["n"] for s in summaries)),
        "skipped": int(sum(s["skipped"] for s in summaries)),
        "fold_std": float(np.std(finite_means)) if finite_means else None,
        "n_folds": len(summaries),
        "per_fold": means,
    }


def aggregate_metrics(fold_metrics: Sequence[Mapping[str, Any]], names: Sequence[str]) -> dict:
    """One metrics dict from per-fold ones (same dataset, experiment and task; distinct folds)."""
    if not fold_metrics:
        raise ValueError("no per-fold metrics to aggregate")
    first = fold_metrics[0]
    for name, run in zip(names, fold_metrics, strict=True):
        for key in IDENTITY_KEYS:
            if run.get(key) != first.get(key):
                raise ValueError(
                    f"{name}: {key} '{run.get(key)}' differs from '{first.get(key)}' in {names[0]}"
                )
        if set(run["metrics"]) != set(first["metrics"]):
            raise ValueError(f"{name}: metrics {sorted(run['metrics'])} differ from {names[0]}")
    folds = [run["fold"] for run in fold_metrics]
    if len(set(folds)) != len(folds):
        raise ValueError(f"the same fold appears twice among {list(names)}")

    order = np.argsort(folds, kind="stable")
    runs = [fold_metrics[i] for i in order]
    cost_keys = sorted({k for run in runs for k, v in run["cost"].items() if _is_number(v)})
    cost = {key: _mean([run["cost"].get(key) for run in runs]) for key in cost_keys}
    cost["train_seconds_total"] = float(sum(run["cost"].get("train_seconds") or 0 for run in runs))
    return {
        **{key: first.get(key) for key in IDENTITY_KEYS},
        "kind": first.get("kind"),
        "protocol": first.get("protocol", "clean"),
        "model_weights": first.get("model_weights"),
        "selection": first.get("selection"),
        "folds": [run["fold"] for run in runs],
        "n": int(sum(run["n"] for run in runs)),
        "classes": first.get("classes"),
        "metrics": {
            metric: _combine_metric([run["metrics"][metric] for run in runs])
            for metric in first["metrics"]
        },
        "bootstrap": first.get("bootstrap"),
        **({"ema": _combine_ema(runs)} if "ema" in first else {}),
        "cost": cost,
        "provenance": {
            **first["provenance"],
            "seed": [run["provenance"].get("seed") for run in runs],
        },
    }


def _combine_ema(runs: Sequence[Mapping[str, Any]]) -> dict | None:
    """The EMA teachers' metrics over the folds (model_weights both); None if one fold has none."""
    if any(run.get("ema") is None for run in runs):
        return None
    metrics = runs[0]["ema"]["metrics"]
    return {
        "metrics": {
            m: _combine_metric([run["ema"]["metrics"][m] for run in runs]) for m in metrics
        },
        "epoch": [run["ema"].get("epoch") for run in runs],
    }


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def aggregate_files(
    metric_files: Sequence[str | Path],
    prediction_files: Sequence[str | Path],
    out_metrics: str | Path,
    out_predictions: str | Path,
) -> dict:
    """Read fold files, write the experiment's metrics.json and predictions.csv (+ `fold`)."""
    if len(metric_files) != len(prediction_files):
        raise ValueError(
            f"{len(metric_files)} metrics files but {len(prediction_files)} prediction files"
        )
    names = [str(path) for path in metric_files]
    runs = [read_json_object(path) for path in metric_files]
    metrics = aggregate_metrics(runs, names)
    tables = []
    for run, path in zip(runs, prediction_files, strict=True):
        table = pd.read_csv(path, dtype={"slide_id": str, "case_id": str})
        table.insert(0, "fold", run["fold"])
        tables.append(table)
    predictions = pd.concat(tables, ignore_index=True).sort_values("fold", kind="stable")
    Path(out_metrics).parent.mkdir(parents=True, exist_ok=True)
    Path(out_predictions).parent.mkdir(parents=True, exist_ok=True)
    predictions.to_csv(out_predictions, index=False)
    Path(out_metrics).write_text(json.dumps(metrics, indent=2, allow_nan=False) + "\n")
    return metrics
