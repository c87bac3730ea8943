"""The one trainer: settings from the schema, global batches, a third kind, code closure."""

import dataclasses
import logging

import numpy as np
import pandas as pd
import pytest
import torch

from abmilx import kinds
from abmilx.config import ConfigError, load_schema
from abmilx.kinds import predict, task_type
from abmilx.models import create_mil
from abmilx.provenance import PACKAGE_ROOT, code_digest, import_closure
from abmilx.training.distributed import accumulation_plan, global_batches
from abmilx.training.fingerprint import code_closure_digest
from abmilx.training.runs import load_run
from abmilx.training.selection import EarlyStopping
from abmilx.training.settings import RUN_KEYS, TrainSettings, run_defaults
from abmilx.training.task import BagResult, Task
from abmilx.training.trainer import Trainer, train

torch.set_num_threads(1)


@pytest.mark.parametrize("kind", ["two_stage", "e2e"])
def test_settings_types_and_schema_agree(kind):
    settings_type = task_type(kind).settings_type
    definition = load_schema()["$defs"][settings_type.definition]
    names = {f.name for f in dataclasses.fields(settings_type)}
    assert names - set(RUN_KEYS) == set(definition["properties"])
    assert all(f.default is dataclasses.MISSING for f in dataclasses.fields(settings_type))
    defaults = settings_type.from_settings({})
    for name, spec in definition["properties"].items():
        value = getattr(defaults, name)
        if isinstance(spec.get("default"), dict):  # nested defaults are filled too
            assert value.items() >= spec["default"].items(), name
        else:
            assert value == spec["default"], name
    for name, value in run_defaults().items():
        assert getattr(defaults, name) == value
    # shared fields live in the base only
    base = {f.name for f in dataclasses.fields(TrainSettings)}
    assert not base & set(settings_type.__annotations__)


def test_schema_defaults_win_and_typos_fail():
    e2e = task_type("e2e").settings_type
    assert e2e.from_settings({}).num_workers == 2
    assert e2e.from_settings({}).callbacks == {
        "attention_every": 0, "embeddings_every": 0, "snapshot_bags": 4, "snapshot_split": "train",
    }  # fmt: skip
    with pytest.raises(ConfigError, match="'n_patchez'"):
        e2e.from_settings({"n_patchez": 8})
    with pytest.raises(ConfigError, match="settings key 'batch_size'"):
        e2e.from_settings({"batch_size": 0})
    assert e2e.from_settings({"seed": 5, "task": "survival"}).seed == 5


@pytest.mark.parametrize("world", [2, 3])
def test_every_plan_of_a_global_batch_sees_the_same_bags_per_step(world):
    """G ranks, or one process accumulating G passes, split the same global batches."""
    for n_items, batch in [(23, 2), (12, 1), (5, 4)]:
        for epoch in (0, 1):
            single = global_batches(n_items, batch * world, 1, 0, 7, epoch)
            accumulated = global_batches(n_items, batch * world, 1, 0, 7, epoch, world)
            ranks = [
                global_batches(n_items, batch * world, world, r, 7, epoch) for r in range(world)
            ]
            assert all(len(plan) == len(single) for plan in [accumulated, *ranks])
            if n_items >= batch * world:
                for step, [expected] in enumerate(single):
                    assert [i for plan in ranks for i in plan[step][0]] == expected
                    assert [i for p in accumulated[step] for i in p] == expected
                    assert [len(p) for p in accumulated[step]] == [batch] * world
                    assert all(len(plan[step][0]) == batch for plan in ranks)
            else:  # one step, padded by wrapping around so no rank is empty
                assert all(plan[0][0] for plan in ranks)
                assert {i for plan in ranks for i in plan[0][0]} == set(single[0][0])
    first, second = global_batches(10, 1, 1, 0, 7, 0), global_batches(10, 1, 1, 0, 7, 1)
    assert sorted(i for [batch] in first for i in batch) == list(range(10)) and first != second


def test_a_global_batch_the_processes_do_not_divide_fails_naming_the_key():
    assert accumulation_plan(6, 3, 1) == (3, 2)
    assert accumulation_plan(6, 3, 2) == (3, 1)
    assert accumulation_plan(6, None, 2) == (3, 1)
    with pytest.raises(ValueError, match=r"settings key 'batch_size'.*6.*4 process"):
        accumulation_plan(6, None, 4)
    with pytest.raises(ValueError, match="micro_batch_size 4"):
        accumulation_plan(6, 4, 1)


class ToySettings(TrainSettings):
    definition = "two_stage_settings"


ToySettings = dataclasses.dataclass(kw_only=True)(ToySettings)


class ToyTask(Task):
    """A third kind in one module: bags from one .npz file of per-slide instance arrays."""

    kind = "toy"
    settings_type = ToySettings

    def __init__(self, source, config, device, amp_dtype, num_workers=None):
        super().__init__(source, config, device, amp_dtype, num_workers)
        with np.load(source) as data:
            self.data = {name: torch.from_numpy(data[name]) for name in data.files}

    def available(self):
        return set(self.data)

    def identity(self):
        return {name: float(values.sum()) for name, values in self.data.items()}

    def build_model(self, n_classes, *, pretrained):
        return create_mil(self.config.mil, 4, n_classes, **self.config.mil_kwargs)

    def batches(self, bags, epoch, steps):
        for (index,) in steps:
            bag = bags[index]
            features = torch.cat([self.data[s] for s in bag.slide_ids]).unsqueeze(0)
            yield {"inputs": features, "label": torch.tensor([bag.label]), "event": torch.ones(1)}

    def forward(self, model, inputs, label):
        return model(inputs)

    def infer(self, model, bags):
        model.eval()
        for members in bags:
            features = torch.cat([self.data[s] for s in members])
            coords = [np.zeros((len(self.data[s]), 2), np.int64) for s in members]
            with torch.no_grad():
                yield BagResult(model(features.unsqueeze(0)), coords, features)


@pytest.fixture
def toy_kind(tmp_path, monkeypatch):
    monkeypatch.setitem(kinds._CLASSES, "toy", f"{ToyTask.__module__}:ToyTask")
    rng = np.random.default_rng(0)
    labels = {f"t{k}": k % 2 for k in range(8)}
    arrays = {
        name: (rng.normal(size=(5, 4)) + 2.0 * label).astype(np.float32)
        for name, label in labels.items()
    }
    np.savez(tmp_path / "toy.npz", **arrays)
    pd.DataFrame(
        {
            "slide_id": list(labels),
            "case_id": list(labels),
            "label": ["a" if y == 0 else "b" for y in labels.values()],
            "split": ["train"] * 6 + ["test"] * 2,
            "fold": 0,
        }
    ).to_csv(tmp_path / "splits.csv", index=False)
    return tmp_path


def test_a_third_kind_needs_only_its_task_and_a_registry_entry(toy_kind, caplog):
    caplog.set_level(logging.INFO)
    settings = {"epochs": 3, "lr": 1e-2, "selection": "val", "classes": ["a", "b"]}
    train(ToyTask, toy_kind / "toy.npz", toy_kind / "splits.csv", 0, toy_kind / "run", **settings)
    run = load_run(toy_kind / "run")
    assert run["kind"] == "toy" and run["selection"]["mode"] == "last"  # no val split
    assert any("no val split" in r.getMessage() for r in caplog.records)
    frame, attention = predict(toy_kind / "run", toy_kind / "toy.npz", ["t6", "t7"])
    assert frame.columns.tolist() == ["slide_id", "logit_0", "logit_1"]
    assert attention["t7"]["attention"].shape == (1, 5)
    assert any(r.getMessage().startswith("predict: 2/2 bags") for r in caplog.records)
    again, _ = predict(toy_kind / "run", toy_kind / "toy.npz", ["t6", "t7"])
    pd.testing.assert_frame_equal(frame, again)


def test_unknown_kinds_and_weights_fail_clearly(toy_kind, tmp_path):
    with pytest.raises(
        ValueError, match="unknown run kind 'mcat'; known kinds: two_stage, e2e, c2c"
    ):
        task_type("mcat")
    train(ToyTask, toy_kind / "toy.npz", toy_kind / "splits.csv", 0, toy_kind / "run", epochs=1)
    with pytest.raises(ValueError, match="has no ema weights"):
        predict(toy_kind / "run", toy_kind / "toy.npz", ["t6"], weights="ema")


def test_code_fingerprint_is_the_rules_code_digest_or_covers_what_an_outside_kind_imports():
    assert code_closure_digest("abmilx.two_stage.train") == code_digest("abmilx.two_stage.train")
    assert "two_stage/train.py" in {
        str(path.relative_to(PACKAGE_ROOT)) for path in import_closure("abmilx.two_stage.train")
    }
    outside = code_closure_digest(ToyTask.__module__)  # this test module: not in the package
    assert len(outside) == 16 and outside != code_closure_digest("abmilx.two_stage.train")


@pytest.mark.parametrize("content", [b"not a checkpoint", None])
def test_unreadable_or_unfingerprinted_resume_state_is_discarded(toy_kind, caplog, content):
    state = toy_kind / "run" / ".resume" / "state.pt"
    state.parent.mkdir(parents=True)
    if content is None:
        torch.save({"next_epoch": 1, "model": {}}, state)  # an older version's state
    else:
        state.write_bytes(content)
    caplog.set_level(logging.INFO)
    train(ToyTask, toy_kind / "toy.npz", toy_kind / "splits.csv", 0, toy_kind / "run", epochs=2)
    lines = [r.getMessage() for r in caplog.records if "discarding resume" in r.getMessage()]
    reason = "unreadable" if content else "written without a fingerprint"
    assert len(lines) == 1 and f"({reason}" in lines[0], lines
    assert [row["epoch"] for row in load_run(toy_kind / "run")["history"]] == [0, 1]


def test_early_stopping_follows_the_official_rule_on_a_scripted_sequence():
    """Below the best counts, equal or above resets; stop at patience after after_epoch."""
    scores = [0.5, 0.6, 0.6, 0.55, 0.54, 0.53, 0.7, 0.6, 0.6]

    def stop_epoch(patience, after_epoch):
        stopper = EarlyStopping(patience, after_epoch)
        return next((e for e, s in enumerate(scores) if stopper.update(e, s)), None)

    assert stop_epoch(2, 3) == 4  # 0.55, 0.54 below the best 0.6 (0.6 again reset the count)
    assert stop_epoch(2, 4) == 5  # the count is 3 at epoch 5, the first after epoch 4
    assert stop_epoch(2, 5) == 8  # 0.7 resets at epoch 6; 0.6, 0.6 count 2 at epoch 8
    assert stop_epoch(4, 0) is None and stop_epoch(None, 0) is None
    stopper = EarlyStopping(1, 0)
    assert not stopper.update(0, 0.5) and not stopper.update(1, float("nan"))
    assert stopper.update(2, 0.4)


def test_the_trainer_stops_where_the_rule_stops(toy_kind, monkeypatch):
    scores = iter([0.5, 0.6, 0.55, 0.54, 0.9, 0.9])
    monkeypatch.setattr(Trainer, "validate", lambda self, module: next(scores))
    settings = {
        "epochs": 6,
        "selection": "test_official",
        "early_stopping": {"patience": 2, "after_epoch": 2},
        "classes": ["a", "b"],
    }
    train(ToyTask, toy_kind / "toy.npz", toy_kind / "splits.csv", 0, toy_kind / "run", **settings)
    run = load_run(toy_kind / "run")
    assert [row["epoch"] for row in run["history"]] == [0, 1, 2, 3]
    assert run["selection"]["stopped_early"] and run["selection"]["last_epoch"] == 3
    assert run["selection"]["epoch"] == 1  # the best validation epoch
    assert run["settings"]["accumulation_steps"] == 1 and run["settings"]["world_size"] == 1


def test_official_survival_folds_train_with_seed_plus_100_k(toy_kind):
    splits = pd.read_csv(toy_kind / "splits.csv")
    pd.concat([splits, splits.assign(fold=1)]).to_csv(toy_kind / "splits.csv", index=False)
    settings = {"epochs": 1, "classes": ["a", "b"], "seed": 2021}
    for fold, step, seed in [(1, 100, 2121), (0, 100, 2021), (1, 0, 2021)]:
        out = toy_kind / f"run{fold}{step}"
        train(ToyTask, toy_kind / "toy.npz", toy_kind / "splits.csv", fold, out,
              fold_seed_step=step, **settings)  # fmt: skip
        assert load_run(out)["settings"]["seed"] == seed
