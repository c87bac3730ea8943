"""Two DDP processes on CPU (torchrun, gloo) train the model that one process trains.

2 ranks and 1 process with the global batch 4 see the same slides in every step; with augmentation
that is the identity (full-size crop, no flips) and no dropout, the runs differ only by float
summation order. Stated tolerance: weights within 1e-4, test logits within 1e-3, metrics equal.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from abmilx.config import REPO_ROOT
from abmilx.evaluation.evaluate import evaluate

sys.path.insert(0, str(REPO_ROOT / "tests" / "e2e"))
import norm_free_cli  # noqa: F401  (registers the encoder for evaluate)
from e2e_toy_store import PATCH, write_toy_store

BIN = Path(sys.executable).parent
CLI = Path(__file__).with_name("norm_free_cli.py")
SETTINGS = {
    "encoder": "groupnorm_cnn",
    "encoder_weights": "random",
    "mil": "abmilx",
    "mil_kwargs": {"n_heads": 2, "inner_dim": 32, "dropout": 0.0},
    "epochs": 3,
    "warmup_epochs": 0,
    "lr": 0.002,
    "n_patches": 8,
    "scale_ratio": 4,
    "train_size": PATCH,
    "eval_size": PATCH,
    "crop_scale": 1.0,
    "flips": False,
    "patch_batch_size": 8,
    "amp": "off",
    "num_workers": 0,
    "seed": 5,
    "device": "cpu",
    "classes": ["normal", "tumor"],
}


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    """12 slides of a tiny real patch store: 8 train, 4 test."""
    folder = tmp_path_factory.mktemp("ddp")
    labels = {f"s{k}": k % 2 for k in range(12)}
    write_toy_store(folder / "patches.lmdb", labels)
    pd.DataFrame(
        {
            "slide_id": list(labels),
            "case_id": [f"c{k}" for k in range(12)],
            "label": ["tumor" if y else "normal" for y in labels.values()],
            "split": ["train"] * 8 + ["test"] * 4,
            "fold": 0,
        }
    ).to_csv(folder / "splits.csv", index=False)
    return folder


def run(folder: Path, name: str, processes: int, batch_size: int) -> Path:
    """Train with the rule's command (torchrun when processes > 1), then evaluate."""
    out = folder / name
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT / "src"), "OMP_NUM_THREADS": "1"}
    launcher = (
        [str(BIN / "torchrun"), "--standalone", "--nproc-per-node", str(processes)]
        if processes > 1
        else [sys.executable]
    )
    store, splits = folder / "patches.lmdb", folder / "splits.csv"
    command = [
        *launcher, str(CLI), "abmilx.e2e", "train", "--store", str(store), "--splits",
        str(splits), "--fold", "0", "--out-dir", str(out),
        "--settings", json.dumps({**SETTINGS, "batch_size": batch_size}),
    ]  # fmt: skip
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-4000:]
    evaluate(
        out, splits, 0, "e2e", out, store=store, n_boot=20, seed=1, model_weights="main",
        device="cpu", paper_inference_time=False,
    )  # fmt: skip
    return out


def test_two_processes_train_what_one_process_trains(dataset):
    single = run(dataset, "single", processes=1, batch_size=4)
    ddp = run(dataset, "ddp", processes=2, batch_size=4)  # the global batch

    one, two = (torch.load(d / "model.pt", weights_only=False) for d in (single, ddp))
    assert (one["settings"]["world_size"], two["settings"]["world_size"]) == (1, 2)
    losses = [row["train_loss"] for row in one["history"]]
    assert losses[-1] < losses[0], losses  # it trained
    assert one["state_dict"].keys() == two["state_dict"].keys()
    for name, weights in one["state_dict"].items():
        torch.testing.assert_close(two["state_dict"][name], weights, atol=1e-4, rtol=0, msg=name)

    logits = [pd.read_csv(d / "predictions.csv").filter(like="logit_") for d in (single, ddp)]
    np.testing.assert_allclose(logits[1].to_numpy(), logits[0].to_numpy(), atol=1e-3)
    metrics = [flat(json.loads((d / "metrics.json").read_text())["metrics"]) for d in (single, ddp)]
    assert metrics[1] == pytest.approx(metrics[0], abs=1e-9)


def flat(tree: dict, prefix: str = "") -> dict[str, float]:
    """{"auc/point": 0.75, ...} from nested metric records."""
    out: dict[str, float] = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            out.update(flat(value, f"{prefix}{key}/"))
        else:
            out[f"{prefix}{key}"] = value
    return out
