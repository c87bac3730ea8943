"""evaluate_predictions + write_outputs: predictions.csv, attention.npz, metrics.json."""

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score

from abmilx.evaluation import c_index, evaluate_predictions, survival_risk, write_outputs

CHECKPOINT_COST = {"train_seconds": 12.5, "peak_rss_mb": 512.0, "params": np.int64(1234)}

# Bootstrap settings of the tests (the config's evaluation block, smaller where it can be).
EVAL = {"n_boot": 1000, "seed": 0, "model_weights": "main"}


def classification_case(n_cases: int = 30, seed: int = 0):
    rng = np.random.default_rng(seed)
    rows = []
    for case in range(n_cases):
        label = ["IDC", "ILC"][case % 3 == 0]
        for slide in range(1 + case % 2):
            rows.append({"slide_id": f"S{case}_{slide}", "case_id": f"C{case}", "label": label})
    truth = pd.DataFrame(rows)
    signal = (truth["label"] == "ILC").to_numpy() * 1.5
    logits = pd.DataFrame(
        {
            "slide_id": truth["slide_id"],
            "logit_0": rng.normal(size=len(truth)),
            "logit_1": rng.normal(size=len(truth)) + signal,
        }
    )
    checkpoint = {
        "kind": "two_stage",
        "task": "classification",
        "classes": ["IDC", "ILC"],
        "settings": {"seed": 2021},
        "cost": CHECKPOINT_COST,
    }
    return logits, truth, checkpoint


def test_classification_outputs(tmp_path: Path) -> None:
    logits, truth, checkpoint = classification_case()
    predictions, metrics = evaluate_predictions(
        logits, truth, checkpoint, fold=1, n_boot=100, seed=5, model_weights="main", dataset="demo",
        experiment="abmilx", config_hash="abc", encoder_weights="random",
        inference_seconds_per_slide=0.25,
    )  # fmt: skip
    assert list(predictions.columns) == [
        "slide_id",
        "case_id",
        "label",
        "prob_IDC",
        "prob_ILC",
        "pred",
    ]
    np.testing.assert_allclose(predictions[["prob_IDC", "prob_ILC"]].sum(axis=1), 1.0)
    expected_auc = roc_auc_score(truth["label"] == "ILC", predictions["prob_ILC"])
    auc = metrics["metrics"]["auc"]
    assert auc["point"] == pytest.approx(expected_auc)
    assert auc["ci_low"] <= auc["mean"] <= auc["ci_high"]
    assert auc["n"] == 30  # bootstrap units are cases
    assert set(metrics["metrics"]) == {"auc", "balanced_accuracy", "accuracy", "f1_macro"}
    assert metrics["protocol"] == "clean"  # a checkpoint's settings without one: before #23
    official = {**checkpoint, "settings": {**checkpoint["settings"], "protocol": "official"}}
    _, again = evaluate_predictions(
        logits, truth, official, fold=1, n_boot=10, seed=5, model_weights="main"
    )
    assert again["protocol"] == "official"

    attention = {
        sid: {"coords": np.arange(6).reshape(3, 2), "attention": np.full((2, 3), 0.5)}
        for sid in logits["slide_id"][:3]
    }
    write_outputs(tmp_path, predictions, attention, metrics)
    written = json.loads((tmp_path / "metrics.json").read_text())
    assert set(written) >= {
        "dataset", "experiment", "task", "fold", "n", "metrics", "cost", "provenance",
    }  # fmt: skip
    assert written["dataset"] == "demo" and written["fold"] == 1 and written["n"] == len(truth)
    assert set(written["metrics"]["auc"]) == {
        "point", "mean", "ci_low", "ci_high", "std", "n_boot", "n", "skipped",
    }  # fmt: skip
    assert written["cost"] == {
        **CHECKPOINT_COST,
        "params": 1234,
        "inference_seconds_per_slide": 0.25,
    }
    assert set(written["provenance"]) == {
        "git_commit", "config_hash", "seed", "device", "encoder_weights", "torch_version",
    }  # fmt: skip
    assert written["provenance"]["seed"] == 2021 and written["provenance"]["config_hash"] == "abc"
    assert pd.read_csv(tmp_path / "predictions.csv").shape == predictions.shape
    with np.load(tmp_path / "attention.npz") as npz:
        assert sorted(npz.files) == sorted(
            f"{sid}/{key}" for sid in attention for key in ("coords", "attention")
        )
        first = logits["slide_id"][0]
        assert npz[f"{first}/coords"].dtype == np.int64
        assert npz[f"{first}/attention"].dtype == np.float32

    _, repeat_metrics = evaluate_predictions(
        logits, truth, checkpoint, fold=1, **EVAL | {"n_boot": 100, "seed": 5}
    )
    assert repeat_metrics["metrics"] == metrics["metrics"]
    other_fold = evaluate_predictions(
        logits, truth, checkpoint, fold=2, **EVAL | {"n_boot": 100, "seed": 5}
    )[1]
    assert other_fold["metrics"]["auc"]["mean"] != auc["mean"]


def test_survival_aggregates_slides_to_cases() -> None:
    rng = np.random.default_rng(1)
    truth = pd.DataFrame(
        {
            "slide_id": [f"S{i}" for i in range(12)],
            "case_id": [f"C{i // 2}" for i in range(12)],
            "label": [str(i % 4) for i in range(12)],
            "time": np.repeat(rng.uniform(1, 50, 6), 2),
            "event": np.repeat([1, 0, 1, 1, 0, 1], 2),
        }
    )
    values = rng.normal(size=(12, 4))
    logits = pd.DataFrame(values, columns=[f"logit_{k}" for k in range(4)])
    logits.insert(0, "slide_id", truth["slide_id"])
    checkpoint = {"kind": "e2e", "task": "survival", "classes": None, "settings": {}, "cost": {}}
    predictions, metrics = evaluate_predictions(
        logits, truth, checkpoint, fold=0, **EVAL | {"n_boot": 50}
    )
    assert list(predictions.columns) == ["case_id", "label", "time", "event", "risk", "pred"]
    assert len(predictions) == 6 and metrics["n"] == 6 and metrics["n_slides"] == 12
    expected_risk = survival_risk(values.reshape(6, 2, 4).mean(axis=1))
    np.testing.assert_allclose(predictions["risk"], expected_risk)
    assert metrics["metrics"]["c_index"]["point"] == pytest.approx(
        c_index(predictions["time"], predictions["event"], expected_risk)
    )


def test_missing_predictions_are_reported_not_fatal() -> None:
    logits, truth, checkpoint = classification_case()
    dropped = logits["slide_id"].iloc[0]
    _, metrics = evaluate_predictions(
        logits.iloc[1:], truth, checkpoint, fold=0, **EVAL | {"n_boot": 20}
    )
    assert metrics["missing_predictions"] == [dropped]
    assert metrics["n"] == len(truth) - 1
    with pytest.raises(ValueError, match="logit_"):
        evaluate_predictions(
            logits.rename(columns={"logit_1": "score"}),
            truth,
            checkpoint,
            fold=0,
            **EVAL | {"n_boot": 5},
        )
