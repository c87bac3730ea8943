"""`python -m abmilx.evaluation aggregate`: per-fold outputs into one experiment summary."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from abmilx.evaluation import aggregate_metrics, evaluate_predictions, write_outputs

SUMMARY_KEYS = ("point", "mean", "ci_low", "ci_high", "std", "n_boot", "n", "skipped")


def write_fold(root: Path, fold: int, dataset: str = "demo") -> Path:
    rng = np.random.default_rng(fold)
    truth = pd.DataFrame(
        {
            "slide_id": [f"F{fold}S{i}" for i in range(20)],
            "case_id": [f"F{fold}C{i}" for i in range(20)],
            "label": ["a", "b"] * 10,
        }
    )
    logits = pd.DataFrame(
        {
            "slide_id": truth["slide_id"],
            "logit_0": rng.normal(size=20),
            "logit_1": rng.normal(size=20) + np.tile([0.0, 1.0], 10),
        }
    )
    checkpoint = {
        "kind": "two_stage",
        "task": "classification",
        "classes": ["a", "b"],
        "settings": {"seed": 2021 + 100 * fold},
        "cost": {"train_seconds": 10.0 * (fold + 1), "params": 99},
    }
    predictions, metrics = evaluate_predictions(
        logits,
        truth,
        checkpoint,
        fold=fold,
        n_boot=30,
        seed=1,
        model_weights="main",
        dataset=dataset,
        experiment="x",
    )
    out = root / f"fold{fold}"
    write_outputs(out, predictions, {}, metrics)
    return out


def run_aggregate(folds: list[Path], out: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [
            sys.executable, "-m", "abmilx.evaluation", "aggregate",
            "--metrics", *[str(f / "metrics.json") for f in folds],
            "--predictions", *[str(f / "predictions.csv") for f in folds],
            "--out-metrics", str(out / "metrics.json"),
            "--out-predictions", str(out / "predictions.csv"),
        ],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip


def test_two_folds(tmp_path: Path) -> None:
    folds = [write_fold(tmp_path, 0), write_fold(tmp_path, 1)]
    result = run_aggregate(folds, tmp_path / "all")
    assert result.returncode == 0, result.stderr
    combined = json.loads((tmp_path / "all" / "metrics.json").read_text())
    per_fold = [json.loads((f / "metrics.json").read_text()) for f in folds]
    auc = combined["metrics"]["auc"]
    fold_means = [run["metrics"]["auc"]["mean"] for run in per_fold]
    assert auc["mean"] == pytest.approx(np.mean(fold_means))
    assert auc["fold_std"] == pytest.approx(np.std(fold_means))
    assert auc["std"] == pytest.approx(np.mean([run["metrics"]["auc"]["std"] for run in per_fold]))
    assert auc["n"] == 40 and auc["n_folds"] == 2 and auc["per_fold"] == fold_means
    assert combined["folds"] == [0, 1]
    assert combined["cost"]["train_seconds"] == 15.0
    assert combined["cost"]["train_seconds_total"] == 30.0
    assert combined["provenance"]["seed"] == [2021, 2121]
    predictions = pd.read_csv(tmp_path / "all" / "predictions.csv")
    assert len(predictions) == 40 and predictions["fold"].tolist() == [0] * 20 + [1] * 20


def test_one_fold_aggregates_to_itself(tmp_path: Path) -> None:
    fold = write_fold(tmp_path, 0)
    run = json.loads((fold / "metrics.json").read_text())
    combined = aggregate_metrics([run], ["fold0"])
    for metric, summary in run["metrics"].items():
        assert {k: combined["metrics"][metric][k] for k in SUMMARY_KEYS} == summary


def test_mismatched_folds_are_rejected(tmp_path: Path) -> None:
    first = json.loads((write_fold(tmp_path, 0) / "metrics.json").read_text())
    other = json.loads(
        (write_fold(tmp_path / "o", 1, dataset="other") / "metrics.json").read_text()
    )
    with pytest.raises(ValueError, match="dataset 'other'"):
        aggregate_metrics([first, other], ["a.json", "b.json"])
    with pytest.raises(ValueError, match="same fold"):
        aggregate_metrics([first, first], ["a.json", "b.json"])
