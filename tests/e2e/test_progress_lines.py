"""Long jobs log progress: feature extraction, every training epoch and whole-slide prediction.

The interval is set to 0 so every update writes a line; the production interval is 30 s.
"""

import logging

import pytest

from abmilx import progress
from abmilx.config import encode_settings, schema_defaults
from abmilx.e2e import predict, train
from abmilx.features.extract import extract

SETTINGS = {
    "encoder_weights": "random",
    "epochs": 2,
    "warmup_epochs": 0,
    "batch_size": 2,
    "n_patches": 8,
    "scale_ratio": 4,
    "train_size": 24,
    "eval_size": 32,
    "patch_batch_size": 8,
    "num_workers": 0,
    "seed": 7,
    "device": "cpu",
    "classes": ["normal", "tumor"],
}


@pytest.fixture
def every_update_logged(monkeypatch, caplog):
    monkeypatch.setattr(progress, "DEFAULT_EVERY_S", 0.0)
    caplog.set_level(logging.INFO)
    return caplog


def _lines(caplog, start):
    return [r.getMessage() for r in caplog.records if r.getMessage().startswith(start)]


def test_training_and_prediction_log_progress(toy_dataset, tmp_path, every_update_logged):
    store, splits = toy_dataset
    train(store, splits, 0, tmp_path / "run", **SETTINGS)
    epoch_lines = _lines(every_update_logged, "epoch 1/2:")
    assert epoch_lines and all("steps" in line and "steps/s" in line for line in epoch_lines)
    every_update_logged.clear()
    predict(tmp_path / "run", store, ["s4", "s5"], device="cpu")
    bag_lines = [r.getMessage() for r in every_update_logged.records if "bags/s" in r.getMessage()]
    assert any(line.startswith("predict: 2/2 bags") for line in bag_lines), bag_lines


def test_feature_extraction_logs_progress(toy_dataset, tmp_path, every_update_logged):
    store, _ = toy_dataset
    settings = encode_settings(schema_defaults("feature_set")) | {
        "weights": "random",
        "num_workers": 0,
    }
    settings |= {"encoder": "resnet18_layer3", "image_size": 32, "batch_size": 4}
    extract(store, tmp_path / "features", **settings, seed=1, device="cpu")
    lines = _lines(every_update_logged, "features resnet18_layer3")
    assert len(lines) >= 2 and "patches/s" in lines[-1]
