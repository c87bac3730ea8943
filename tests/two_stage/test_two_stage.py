"""Two-stage MIL training and prediction on toy feature files; resume, snapshots."""

import json
import signal
import subprocess
import sys
import time

import numpy as np
import pandas as pd
import pytest
import torch

from abmilx.training.callbacks import Callback
from abmilx.training.runs import load_run
from abmilx.two_stage import predict, train
from abmilx.two_stage.__main__ import main

torch.set_num_threads(1)


def write_features(directory, labels, dim=16, seed=0):
    """Class-1 slides contain a few instances shifted along the first feature."""
    rng = np.random.default_rng(seed)
    directory.mkdir(parents=True, exist_ok=True)
    for k, (slide_id, label) in enumerate(labels.items()):
        n = 10 + k
        features = rng.normal(size=(n, dim)).astype(np.float32)
        if label:
            features[:3, 0] += 4.0
        coords = np.stack([np.arange(n) * 256, np.full(n, 512)], axis=1).astype(np.int64)
        torch.save(
            {"features": torch.from_numpy(features), "coords": torch.from_numpy(coords)},
            directory / f"{slide_id}.pt",
        )


@pytest.fixture
def toy(tmp_path):
    labels = {f"s{k}": k % 2 for k in range(12)}
    write_features(tmp_path / "features", labels)
    split = ["train"] * 8 + ["val"] * 2 + ["test"] * 2
    pd.DataFrame(
        {
            "slide_id": list(labels),
            "case_id": list(labels),
            "label": ["pos" if y else "neg" for y in labels.values()],
            "split": split,
            "fold": 0,
        }
    ).to_csv(tmp_path / "splits.csv", index=False)
    return tmp_path


SETTINGS = {"epochs": 6, "lr": 2e-3, "seed": 1, "classes": ["neg", "pos"]}


def test_train_learns_and_predicts(toy):
    train(toy / "features", toy / "splits.csv", 0, toy / "run", **SETTINGS)
    run = load_run(toy / "run")
    losses = [row["train_loss"] for row in run["history"]]
    assert run["kind"] == "two_stage" and run["settings"]["mil"] == "abmil"
    assert losses[-1] < 0.7 * losses[0], losses
    assert not (toy / "run" / ".resume").exists()
    assert list(pd.read_csv(toy / "run" / "train_log.csv").columns) == [
        "epoch", "lr", "train_loss", "val_auc", "seconds"
    ]  # fmt: skip
    slide_ids = ["s10", "s11", "s1"]
    frame, attention = predict(toy / "run", toy / "features", slide_ids, threads=1)
    assert frame.columns.tolist() == ["slide_id", "logit_0", "logit_1"]
    assert frame["slide_id"].tolist() == slide_ids
    for slide_id in slide_ids:
        record = torch.load(toy / "features" / f"{slide_id}.pt")
        entry = attention[slide_id]
        assert entry["attention"].shape == (1, len(record["coords"]))
        np.testing.assert_allclose(entry["attention"].sum(), 1.0, rtol=1e-5)
        np.testing.assert_array_equal(entry["coords"], record["coords"].numpy())
    # positives have their weight on the shifted instances
    assert attention["s11"]["attention"][0, :3].sum() > 3 / 21


def test_cli_is_deterministic_and_selects_on_val(toy):
    args = ["train", "--features-dir", str(toy / "features"), "--splits", str(toy / "splits.csv")]
    settings = json.dumps({**SETTINGS, "selection": "val"})
    for name in ("a", "b"):
        main([*args, "--fold", "0", "--out-dir", str(toy / name), "--settings", settings])
    first, second = load_run(toy / "a"), load_run(toy / "b")
    for key, value in first["state_dict"].items():
        assert torch.equal(value, second["state_dict"][key])
    metrics = [row["val_auc"] for row in first["history"]]
    assert first["selection"]["mode"] == "val"
    assert first["selection"]["epoch"] == int(np.nanargmax(metrics))


def test_survival_two_stage(tmp_path):
    labels = {f"s{k}": 0 for k in range(6)}
    write_features(tmp_path / "features", labels)
    pd.DataFrame(
        {
            "slide_id": list(labels),
            "case_id": ["c0", "c0", "c1", "c2", "c3", "c3"],
            "label": [0, 0, 1, 2, 3, 3],
            "time": [3.0, 3.0, 10.0, 20.0, 40.0, 40.0],
            "event": [1, 1, 1, 0, 1, 1],
            "split": "train",
            "fold": 0,
        }
    ).to_csv(tmp_path / "surv.csv", index=False)
    train(
        tmp_path / "features", tmp_path / "surv.csv", 0, tmp_path / "run", task="survival", epochs=2
    )
    run = load_run(tmp_path / "run")
    assert run["classes"] == ["bin0", "bin1", "bin2", "bin3"]
    frame, _ = predict(tmp_path / "run", tmp_path / "features", ["s0", "s1"], case_ids=["c0", "c0"])
    assert frame.shape == (2, 6) and frame["logit_3"].nunique() == 1


class Crash(RuntimeError):
    pass


class CrashAt(Callback):
    """Raises at the start of `epoch`, after the resume state of the epoch before was written."""

    def __init__(self, epoch):
        self.epoch = epoch

    def on_epoch_start(self, trainer, epoch):
        if epoch == self.epoch:
            raise Crash(f"simulated crash at epoch {epoch}")


class Started(Callback):
    def __init__(self):
        self.epochs = []

    def on_epoch_start(self, trainer, epoch):
        self.epochs.append(epoch)


def _same_weights(first, second):
    first, second = load_run(first)["state_dict"], load_run(second)["state_dict"]
    assert first.keys() == second.keys()
    return all(torch.equal(first[name], second[name]) for name in first)


def _discard_lines(caplog):
    return [r.getMessage() for r in caplog.records if "discarding resume state" in r.getMessage()]


def _crash(toy, at):
    """A run that dies at the start of epoch `at`, leaving its resume state."""
    with pytest.raises(Crash):
        train(
            toy / "features", toy / "splits.csv", 0, toy / "run", extra_callbacks=[CrashAt(at)],
            **RESUME,
        )  # fmt: skip


RESUME = {**SETTINGS, "epochs": 4, "mil": "abmilx", "mil_kwargs": {"inner_dim": 8, "n_heads": 2}}


def test_resume_with_the_same_run_continues_bit_identically(toy):
    train(toy / "features", toy / "splits.csv", 0, toy / "clean", **RESUME)
    _crash(toy, at=2)
    assert (toy / "run" / ".resume" / "state.pt").exists()
    started = Started()
    train(toy / "features", toy / "splits.csv", 0, toy / "run", extra_callbacks=[started], **RESUME)
    assert started.epochs == [2, 3]
    assert _same_weights(toy / "clean", toy / "run")


def test_changed_split_discards_the_resume_state_and_equals_a_clean_run(toy, caplog):
    _crash(toy, at=2)
    split = pd.read_csv(toy / "splits.csv")
    split.loc[split.slide_id == "s0", "split"] = "test"  # one training slide becomes a test slide
    split.loc[split.slide_id == "s10", "split"] = "train"
    split.to_csv(toy / "splits.csv", index=False)
    started = Started()
    caplog.set_level("INFO")
    train(toy / "features", toy / "splits.csv", 0, toy / "run", extra_callbacks=[started], **RESUME)
    assert started.epochs == [0, 1, 2, 3]
    lines = _discard_lines(caplog)
    assert len(lines) == 1 and "(split changed" in lines[0], lines
    assert not any("resuming" in r.getMessage() for r in caplog.records)
    train(toy / "features", toy / "splits.csv", 0, toy / "clean", **RESUME)
    assert _same_weights(toy / "clean", toy / "run")


def test_changed_n_heads_discards_the_state_instead_of_failing(toy, caplog):
    _crash(toy, at=1)
    caplog.set_level("INFO")
    changed = {**RESUME, "mil_kwargs": {"inner_dim": 8, "n_heads": 4}}
    train(toy / "features", toy / "splits.csv", 0, toy / "run", **changed)
    lines = _discard_lines(caplog)
    assert len(lines) == 1 and "(settings changed" in lines[0], lines
    assert load_run(toy / "run")["settings"]["mil_kwargs"]["n_heads"] == 4


def test_changed_features_discard_the_state(toy, caplog):
    _crash(toy, at=1)
    write_features(toy / "features", {f"s{k}": k % 2 for k in range(12)}, seed=5)
    caplog.set_level("INFO")
    train(toy / "features", toy / "splits.csv", 0, toy / "run", **RESUME)
    lines = _discard_lines(caplog)
    assert len(lines) == 1 and "(data changed" in lines[0], lines


def test_snapshots_are_written_and_do_not_change_training(toy):
    callbacks = {"attention_every": 2, "embeddings_every": 3, "snapshot_bags": 2}
    train(toy / "features", toy / "splits.csv", 0, toy / "plain", **RESUME)
    train(toy / "features", toy / "splits.csv", 0, toy / "snap", callbacks=callbacks, **RESUME)
    assert _same_weights(toy / "plain", toy / "snap")
    snapshots = toy / "snap" / "snapshots"
    assert sorted(path.name for path in snapshots.iterdir()) == [
        "attention_epoch1.npz", "attention_epoch3.npz",
        "embeddings_epoch2.npz", "embeddings_epoch3.npz",
    ]  # fmt: skip
    first_train = ["s0", "s1"]  # the first two training bags by key
    early, late = (np.load(snapshots / f"attention_epoch{e}.npz") for e in (1, 3))
    assert sorted(early.files) == sorted(
        f"{s}/{k}" for s in first_train for k in ("coords", "attention")
    )
    assert early["s1/attention"].shape == (2, 11)  # 2 heads over the 11 instances
    np.testing.assert_allclose(early["s1/attention"].sum(axis=1), 1.0, rtol=1e-5)
    assert not np.allclose(early["s1/attention"], late["s1/attention"])
    with np.load(snapshots / "embeddings_epoch2.npz") as embeddings:
        record = torch.load(toy / "features" / "s0.pt")
        np.testing.assert_array_equal(embeddings["s0/embeddings"], record["features"].numpy())
        np.testing.assert_array_equal(embeddings["s0/coords"], record["coords"].numpy())


def test_a_killed_cli_run_resumes_in_a_new_process(toy, caplog):
    """SIGKILL a real training process after its first epoch; the rerun (this process) resumes
    and equals a run that was never interrupted: the fingerprint is stable across processes."""
    settings = {**RESUME, "epochs": 30}
    args = [
        "train", "--features-dir", str(toy / "features"), "--splits", str(toy / "splits.csv"),
        "--fold", "0", "--out-dir", str(toy / "run"), "--settings", json.dumps(settings),
    ]  # fmt: skip
    process = subprocess.Popen([sys.executable, "-m", "abmilx.two_stage", *args])
    state = toy / "run" / ".resume" / "state.pt"
    deadline = time.monotonic() + 300
    while not state.exists() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    process.send_signal(signal.SIGKILL)
    assert process.wait() == -signal.SIGKILL, "the run ended before it could be killed"
    caplog.set_level("INFO")
    main(args)
    messages = [record.getMessage() for record in caplog.records]
    assert any(m.startswith("resuming from") for m in messages), messages[:5]
    assert not _discard_lines(caplog)
    train(toy / "features", toy / "splits.csv", 0, toy / "clean", **settings)
    assert _same_weights(toy / "clean", toy / "run")


def test_a_lost_feature_file_fails_naming_the_slide_unless_qc_left_it_out(toy, tmp_path):
    """A split slide without a feature file is a lost intermediate, not a slide to skip."""
    (toy / "features" / "s3.pt").unlink()
    with pytest.raises(ValueError, match=r"1 slide\(s\) of .*splits.csv have no data in .*: s3\."):
        train(toy / "features", toy / "splits.csv", 0, toy / "run", **SETTINGS)
    sidecar = {"excluded": [{"slide_id": "s3", "status": "failed", "reason": "unreadable"}]}
    (toy / "splits.json").write_text(json.dumps(sidecar))
    train(toy / "features", toy / "splits.csv", 0, toy / "run", **SETTINGS)
    assert load_run(toy / "run")["history"]


def test_a_truncated_feature_file_is_named(toy):
    path = toy / "features" / "s2.pt"
    path.write_bytes(path.read_bytes()[:200])
    with pytest.raises(ValueError, match=r"s2\.pt: truncated torch checkpoint"):
        train(toy / "features", toy / "splits.csv", 0, toy / "run", **SETTINGS)
