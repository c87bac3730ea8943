"""End to end: split -> two-stage training on tiny features -> `python -m abmilx.evaluation`."""

import importlib.metadata
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from sklearn.metrics import roc_auc_score

from abmilx.config import schema_defaults
from abmilx.evaluation import c_index
from abmilx.splits import make_splits
from abmilx.two_stage import train

FEATURE_DIM = 8


def write_cohort(tmp_path: Path, task: str) -> tuple[Path, Path]:
    """Feature files whose first dimension carries the label, and a split file."""
    rng = np.random.default_rng(0)
    rows = []
    for case in range(16):
        time, event = float(rng.uniform(5, 60)), int(case % 3 != 0)
        for slide in range(1 + case % 2):
            rows.append(
                {
                    "slide_id": f"S{case:02d}_{slide}",
                    "case_id": f"C{case:02d}",
                    "label": ["benign", "tumour"][case % 2],
                    "time": time,
                    "event": event,
                }
            )
    table = pd.DataFrame(rows)
    if task == "survival":
        table = table.drop(columns="label")
    else:
        table = table.drop(columns=["time", "event"])
    settings = schema_defaults("split") | {"ratios": [0.6, 0.0, 0.4], "seed": 3, "bins_from": "all"}
    splits, _ = make_splits(table, task, **settings)
    splits_path = tmp_path / "splits.csv"
    splits.to_csv(splits_path, index=False)

    features_dir = tmp_path / "features"
    features_dir.mkdir()
    for row in table.itertuples():
        n = int(rng.integers(4, 9))
        features = rng.normal(size=(n, FEATURE_DIM)).astype(np.float32)
        features[:, 0] += 2.0 if getattr(row, "label", "benign") == "tumour" else 0.0
        record = {
            "features": torch.from_numpy(features),
            "coords": torch.from_numpy(rng.integers(0, 4000, size=(n, 2))),
        }
        torch.save(record, features_dir / f"{row.slide_id}.pt")
    return splits_path, features_dir


@pytest.mark.parametrize("task", ["classification", "survival"])
def test_evaluate_cli_on_a_trained_two_stage_run(tmp_path: Path, task: str) -> None:
    splits_path, features_dir = write_cohort(tmp_path, task)
    run_dir = tmp_path / "run"
    train(features_dir, splits_path, 0, run_dir, threads=1, mil="abmil", epochs=2, task=task)
    out_dir = tmp_path / "eval"
    settings = {
        "n_boot": 40,
        "seed": 1,
        "model_weights": "main",
        "device": "cpu",
        "paper_inference_time": False,
        "dataset": "demo",
        "experiment": "abmil",
        "config_hash": "h",
    }
    result = subprocess.run(
        [
            sys.executable, "-m", "abmilx.evaluation", "evaluate",
            "--run-dir", str(run_dir), "--splits", str(splits_path), "--fold", "0",
            "--kind", "two_stage", "--features-dir", str(features_dir),
            "--out-dir", str(out_dir), "--settings", json.dumps(settings), "--threads", "1",
        ],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr

    splits = pd.read_csv(splits_path, dtype={"slide_id": str, "case_id": str})
    test = splits[splits.split == "test"]
    metrics = json.loads((out_dir / "metrics.json").read_text())
    predictions = pd.read_csv(out_dir / "predictions.csv", dtype={"slide_id": str, "case_id": str})
    assert metrics["task"] == task and metrics["fold"] == 0 and metrics["dataset"] == "demo"
    assert metrics["cost"]["params"] > 0 and metrics["cost"]["inference_seconds_per_slide"] > 0
    # counted on the prediction pass (the aggregator only: the features are precomputed)
    assert metrics["cost"]["flops_per_slide"] > 0
    assert metrics["provenance"]["torch_version"] == importlib.metadata.version("torch")
    if task == "classification":
        assert sorted(predictions["slide_id"]) == sorted(test["slide_id"])
        expected = roc_auc_score(predictions["label"] == "tumour", predictions["prob_tumour"])
        assert metrics["metrics"]["auc"]["point"] == pytest.approx(expected)
    else:
        assert sorted(predictions["case_id"]) == sorted(set(test["case_id"]))
        expected = c_index(predictions["time"], predictions["event"], predictions["risk"])
        assert metrics["metrics"]["c_index"]["point"] == pytest.approx(expected)
    with np.load(out_dir / "attention.npz") as npz:
        slides = {key.split("/")[0] for key in npz.files}
        assert slides == set(test["slide_id"])
        first = sorted(slides)[0]
        assert npz[f"{first}/attention"].shape[-1] == npz[f"{first}/coords"].shape[0]


def test_both_weights_report_the_ema_teacher_beside_the_model(tmp_path: Path) -> None:
    """model_weights both (the official test of main and EMA): outputs are the model's,
    metrics.json adds the teacher's metrics, the aggregate and the main table keep them."""
    from abmilx.evaluation.aggregate import aggregate_metrics
    from abmilx.evaluation.evaluate import evaluate
    from abmilx.report.tables import headline_markdown, main_table

    splits_path, features_dir = write_cohort(tmp_path, "classification")
    run_dir = tmp_path / "run"
    settings = {"mil": "abmil", "epochs": 2, "ema": 0.5, "lr": 0.01}
    train(features_dir, splits_path, 0, run_dir, threads=1, task="classification", **settings)
    common = {"n_boot": 20, "seed": 1, "device": "cpu", "dataset": "demo", "experiment": "x",
              "paper_inference_time": False}  # fmt: skip
    both = evaluate(run_dir, splits_path, 0, "two_stage", tmp_path / "both",
                    features_dir=features_dir, model_weights="both", **common)  # fmt: skip
    main = evaluate(run_dir, splits_path, 0, "two_stage", tmp_path / "main",
                    features_dir=features_dir, model_weights="main", **common)  # fmt: skip
    ema = evaluate(run_dir, splits_path, 0, "two_stage", tmp_path / "ema",
                   features_dir=features_dir, model_weights="ema", **common)  # fmt: skip
    assert both["metrics"] == main["metrics"] and both["ema"]["metrics"] == ema["metrics"]
    # ... and the teacher is another model: its probabilities differ from the model's
    main_probs, ema_probs = (pd.read_csv(tmp_path / d / "predictions.csv") for d in ("main", "ema"))
    assert not np.allclose(main_probs["prob_tumour"], ema_probs["prob_tumour"])
    assert json.loads((tmp_path / "both" / "metrics.json").read_text())["ema"] == both["ema"]
    folds = [both, {**both, "fold": 1}]
    combined = aggregate_metrics(folds, ["f0", "f1"])
    assert set(combined["ema"]["metrics"]) == set(both["metrics"])
    table = main_table([combined], {"datasets": {"demo": "subtyping"}, "experiments": {}})
    assert set(table.weights) == {"main", "ema"}
    markdown = headline_markdown(
        table, {"datasets": {"demo": "subtyping"}, "experiments": {"x": {"title": "X"}}}
    )
    assert "| X |" in markdown and "| X (EMA teacher) |" in markdown
