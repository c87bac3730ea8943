"""E2E training on a tiny real patch store: learning, determinism, resume, prediction."""

import numpy as np
import pandas as pd
import pytest
import torch
from e2e_toy_store import write_toy_store

from abmilx.e2e import predict, train
from abmilx.e2e.data import MrisBags
from abmilx.models import create_encoder
from abmilx.patches.store import PatchStore
from abmilx.training.runs import load_run

SETTINGS = {
    "encoder_weights": "random",
    "epochs": 4,
    "warmup_epochs": 0,
    "lr": 3e-4,
    "batch_size": 2,
    "n_patches": 8,
    "scale_ratio": 4,
    "train_size": 24,
    "eval_size": 32,
    "crop_scale": 0.5,
    "flips": True,
    "patch_batch_size": 8,
    "num_workers": 0,
    "seed": 7,
    "device": "cpu",
    "ema": 0.9,
    "classes": ["normal", "tumor"],
}


@pytest.fixture
def reference_run(toy_dataset, tmp_path):
    store, splits = toy_dataset
    train(store, splits, 0, tmp_path / "reference", **SETTINGS)
    return store, splits, tmp_path / "reference"


def _assert_same_weights(first, second):
    assert first.keys() == second.keys()
    for name in first:
        assert torch.equal(first[name], second[name]), name


def test_training_learns_and_is_deterministic(reference_run, tmp_path):
    store, splits, run_dir = reference_run
    run = load_run(run_dir)
    losses = [row["train_loss"] for row in run["history"]]
    assert run["kind"] == "e2e" and run["classes"] == ["normal", "tumor"]
    assert losses[-1] < 0.6 * losses[0], losses
    assert set(run["cost"]) >= {"train_seconds", "peak_rss_mb", "params"}
    assert "ema_state_dict" in run
    assert not (run_dir / ".resume").exists()
    log = pd.read_csv(run_dir / "train_log.csv")
    assert list(log.columns) == ["epoch", "lr", "train_loss", "val_auc", "ema_val_auc", "seconds"]
    # same seed, now with a DataLoader worker: bit-identical weights
    train(store, splits, 0, tmp_path / "again", **{**SETTINGS, "num_workers": 1})
    again = load_run(tmp_path / "again")
    _assert_same_weights(run["state_dict"], again["state_dict"])
    _assert_same_weights(run["ema_state_dict"], again["ema_state_dict"])


def test_resume_continues_at_the_interrupted_epoch(reference_run, tmp_path, monkeypatch):
    store, splits, run_dir = reference_run
    original = MrisBags.set_epoch

    def crash_at_epoch_2(self, epoch):
        if epoch == 2:
            raise KeyboardInterrupt("simulated kill")
        original(self, epoch)

    monkeypatch.setattr(MrisBags, "set_epoch", crash_at_epoch_2)
    with pytest.raises(KeyboardInterrupt):
        train(store, splits, 0, tmp_path / "resumed", **SETTINGS)
    assert (tmp_path / "resumed" / ".resume" / "state.pt").exists()
    assert not (tmp_path / "resumed" / "model.pt").exists()
    assert len(pd.read_csv(tmp_path / "resumed" / "train_log.csv")) == 2
    monkeypatch.setattr(MrisBags, "set_epoch", original)
    started = []
    monkeypatch.setattr(
        MrisBags, "set_epoch", lambda self, epoch: (started.append(epoch), original(self, epoch))
    )
    train(store, splits, 0, tmp_path / "resumed", **SETTINGS)
    assert started == [2, 3]
    resumed = load_run(tmp_path / "resumed")
    assert [row["epoch"] for row in resumed["history"]] == [0, 1, 2, 3]
    _assert_same_weights(load_run(run_dir)["state_dict"], resumed["state_dict"])
    assert not (tmp_path / "resumed" / ".resume").exists()


def test_predict_attention_and_coords(reference_run):
    store, _, run_dir = reference_run
    slide_ids = ["s4", "s5", "s0"]
    frame, attention = predict(run_dir, store, slide_ids, threads=1, device="cpu")
    assert list(frame.columns) == ["slide_id", "logit_0", "logit_1"]
    assert frame["slide_id"].tolist() == slide_ids
    patch_store = PatchStore(store)
    for slide_id in slide_ids:
        entry = attention[slide_id]
        assert entry["attention"].dtype == np.float32
        assert entry["attention"].shape[1] == patch_store.count(slide_id, "main") == 20
        np.testing.assert_allclose(entry["attention"].sum(axis=1), 1.0, rtol=1e-5)
        np.testing.assert_array_equal(entry["coords"], patch_store.coords(slide_id, "main"))
    ema_frame, _ = predict(run_dir, store, slide_ids, weights="ema", device="cpu")
    assert not np.allclose(ema_frame["logit_0"], frame["logit_0"])


def test_survival_pools_slides_of_a_case(tmp_path):
    labels = {f"s{k}": 0 for k in range(6)}
    store = write_toy_store(tmp_path / "surv.lmdb", labels, n_main=5, n_low=0)
    cases = ["c0", "c0", "c1", "c1", "c2", "c2"]
    pd.DataFrame(
        {
            "slide_id": list(labels),
            "case_id": cases,
            "label": [0, 0, 1, 1, 2, 2],
            "time": [5.0, 5.0, 12.0, 12.0, 30.0, 30.0],
            "event": [1, 1, 0, 0, 1, 1],
            "split": "train",
            "fold": 0,
        }
    ).to_csv(tmp_path / "surv.csv", index=False)
    settings = {**SETTINGS, "task": "survival", "classes": None, "epochs": 1, "ema": None}
    settings["n_patches"] = 12  # more than a case's 10 main patches: padded with duplicates
    train(store, tmp_path / "surv.csv", 0, tmp_path / "run", **settings)
    run = load_run(tmp_path / "run")
    assert run["task"] == "survival" and run["classes"] == ["bin0", "bin1", "bin2"]
    frame, attention = predict(tmp_path / "run", store, list(labels), case_ids=cases)
    assert frame["case_id"].tolist() == cases
    logits = frame[["logit_0", "logit_1", "logit_2"]].to_numpy()
    np.testing.assert_array_equal(logits[0], logits[1])
    assert not np.array_equal(logits[0], logits[2])
    case_total = attention["s0"]["attention"].sum(1) + attention["s1"]["attention"].sum(1)
    np.testing.assert_allclose(case_total, 1.0, rtol=1e-5)


def test_snapshots_follow_the_encoder_and_never_change_training(reference_run, tmp_path):
    store, splits, run_dir = reference_run
    callbacks = {"attention_every": 2, "embeddings_every": 2, "snapshot_split": "val"}
    train(store, splits, 0, tmp_path / "snap", callbacks=callbacks, **SETTINGS)
    reference, snap = load_run(run_dir), load_run(tmp_path / "snap")
    _assert_same_weights(reference["state_dict"], snap["state_dict"])
    _assert_same_weights(reference["ema_state_dict"], snap["ema_state_dict"])
    folder = tmp_path / "snap" / "snapshots"
    early, late = (np.load(folder / f"embeddings_epoch{e}.npz") for e in (1, 3))
    assert sorted(early.files) == ["s4/coords", "s4/embeddings", "s5/coords", "s5/embeddings"]
    assert early["s4/embeddings"].shape[0] == 20
    assert not np.allclose(early["s4/embeddings"], late["s4/embeddings"])  # the encoder learns
    with np.load(folder / "attention_epoch3.npz") as attention:
        np.testing.assert_allclose(attention["s5/attention"].sum(axis=1), 1.0, rtol=1e-5)
        np.testing.assert_array_equal(
            attention["s5/coords"], PatchStore(store).coords("s5", "main")
        )


def test_predictions_are_bit_identical_across_runs(reference_run):
    store, _, run_dir = reference_run
    first, attention = predict(run_dir, store, ["s4", "s5"], device="cpu")
    second, again = predict(run_dir, store, ["s4", "s5"], device="cpu", num_workers=1)
    pd.testing.assert_frame_equal(first, second, check_exact=True)
    np.testing.assert_array_equal(attention["s4"]["attention"], again["s4"]["attention"])


def _encoder_checkpoint(path, seed):
    """A resnet18_layer3 checkpoint with weights drawn from `seed` (a stand-in for pretraining)."""
    torch.manual_seed(seed)
    torch.save(create_encoder("resnet18_layer3", weights="random").state_dict(), path)


def test_resume_after_the_checkpoint_changed_starts_over(
    toy_dataset, tmp_path, monkeypatch, caplog
):
    """A pretrain checkpoint rewritten at the same path between a crash and the rerun: the
    resume state belongs to the old weights, so training starts at epoch 0 and equals a clean
    run on the new checkpoint bit for bit."""
    store, splits = toy_dataset
    weights = tmp_path / "encoder.pt"
    settings = {**SETTINGS, "encoder_weights": str(weights)}
    _encoder_checkpoint(weights, seed=1)
    original = MrisBags.set_epoch

    def crash_at_epoch_2(self, epoch):
        if epoch == 2:
            raise KeyboardInterrupt("simulated kill")
        original(self, epoch)

    monkeypatch.setattr(MrisBags, "set_epoch", crash_at_epoch_2)
    with pytest.raises(KeyboardInterrupt):
        train(store, splits, 0, tmp_path / "run", **settings)
    assert (tmp_path / "run" / ".resume" / "state.pt").exists()
    _encoder_checkpoint(weights, seed=2)  # same path, same size, new content
    started = []
    monkeypatch.setattr(
        MrisBags, "set_epoch", lambda self, epoch: (started.append(epoch), original(self, epoch))
    )
    with caplog.at_level("WARNING"):
        train(store, splits, 0, tmp_path / "run", **settings)
    assert started == [0, 1, 2, 3]
    assert "files changed since it was written" in caplog.text
    monkeypatch.setattr(MrisBags, "set_epoch", original)
    train(store, splits, 0, tmp_path / "clean", **settings)
    _assert_same_weights(
        load_run(tmp_path / "clean")["state_dict"], load_run(tmp_path / "run")["state_dict"]
    )
