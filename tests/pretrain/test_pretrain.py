"""The pretrain stage: its cohort is disjoint from the evaluation slides, SimCLR learns on a
tiny real patch store, and the checkpoint loads through the real weight-loading code."""

import json

import numpy as np
import pytest
import torch

from abmilx.cohort import plan_from_settings
from abmilx.cohort.sheets import label_sheet
from abmilx.config import (
    REPO_ROOT,
    ConfigError,
    check_config,
    encode_settings,
    load_config,
    schema_defaults,
    validate_settings,
)
from abmilx.experiments import resolve_experiments
from abmilx.features.extract import extract, load_features
from abmilx.models import create_encoder
from abmilx.patches.store import PatchStoreWriter
from abmilx.pretrain import nt_xent, pretrain, ssl_view

PATCH = 32
# A small SimCLR run: the config's defaults (the schema's), a few quick epochs.
TINY_RUN = validate_settings("pretrain_run", {"dataset": "tiny_pretraining"}) | dict(
    epochs=6, batch_size=32, image_size=24, lr=0.003, seed=3
)
del TINY_RUN["dataset"]


def _synthetic_settings(spec):
    return {"task": spec["task"], "classes": spec.get("classes"), **spec["synthetic"]}


def test_pretraining_cohort_shares_no_slide_with_any_evaluation_dataset():
    config = load_config(REPO_ROOT / "config.yaml")
    plans = {
        name: plan_from_settings(name, _synthetic_settings(spec))
        for name, spec in config["datasets"].items()
        if "synthetic" in spec
    }
    pretraining = [n for n, s in config["datasets"].items() if s["task"] == "pretraining"]
    assert pretraining, "the demo config has a pretraining cohort"
    for name in pretraining:
        plan = plans[name]
        assert set(plan["task"]) == {"subtyping", "grading", "survival", "diagnosis"}
        assert plan["label"].isna().all() and list(label_sheet(plan)) == ["slide_id", "case_id"]
        for other, other_plan in plans.items():
            if other == name:
                continue
            assert not set(plan["slide_id"]) & set(other_plan["slide_id"]), other
            assert not set(plan["file"]) & set(other_plan["file"]), other
            assert not set(plan["seed"]) & set(other_plan["seed"]), other


def test_pretraining_cohort_with_an_evaluation_seed_still_differs():
    """Salted source seeds: the same seed as an evaluation cohort renders other slides."""
    plan = plan_from_settings("p", {"task": "pretraining", "n_slides": 8, "n_cases": 8, "seed": 7})
    evaluation = plan_from_settings(
        "s", {"task": "subtyping", "n_slides": 48, "n_cases": 40, "seed": 7}
    )
    assert not set(plan["seed"]) & set(evaluation["seed"])


def _tiny_store(path, n_slides=4, n=48, seed=0):
    """Patches of two kinds (stripes, blobs) in random colours: something for SimCLR to learn."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:PATCH, :PATCH]
    with PatchStoreWriter(path, patch_size=PATCH, jpeg_quality=90, scales={"main": 1.0}) as w:
        for s in range(n_slides):
            images = []
            for k in range(n):
                period = rng.uniform(3, 10)
                if k % 2:
                    pattern = np.sin(2 * np.pi * (xx * rng.uniform(-1, 1) + yy) / period)
                else:
                    pattern = np.cos(xx / period) * np.cos(yy / period)
                colour = rng.uniform(40, 220, size=3)
                image = colour + 35 * pattern[..., None] + rng.normal(0, 8, (PATCH, PATCH, 3))
                images.append(np.clip(image, 0, 255).astype(np.uint8))
            coords = np.stack([np.arange(n) * PATCH, np.zeros(n, dtype=int)], axis=1)
            w.add_images(f"PRE-{s:04d}", "main", coords, images, extent_level0=PATCH)
    return path


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory):
    root = tmp_path_factory.mktemp("pretrain")
    store = _tiny_store(root / "patches.lmdb")
    record = pretrain(
        store, root / "run", "tiny_pretraining", **TINY_RUN, threads=1, device="cpu",
    )  # fmt: skip
    return root, store, record


def test_ssl_loss_decreases_and_the_record_is_complete(pretrained):
    root, _, record = pretrained
    history = [
        float(line.split(",")[1])
        for line in (root / "run" / "train_log.csv").read_text().splitlines()[1:]
    ]
    assert len(history) == 6
    assert history[-1] < history[0] - 0.2, history
    saved = json.loads((root / "run" / "record.json").read_text())
    assert saved == json.loads(json.dumps(record))
    assert saved["dataset"] == "tiny_pretraining" and saved["method"] == "simclr"
    assert saved["slide_ids"] == [f"PRE-{s:04d}" for s in range(4)]
    assert saved["n_patches"] == 4 * 48 and saved["epochs"] == 6 and saved["seed"] == 3
    assert len(saved["code_digest"]) == 16 and len(saved["checkpoint_sha256"]) == 64
    assert "stand-in" in saved["purpose"]


def test_checkpoint_loads_into_an_encoder_and_a_feature_set(pretrained, tmp_path):
    root, store, _ = pretrained
    checkpoint = root / "run" / "encoder.pt"
    encoder = create_encoder("resnet18_layer3", weights=str(checkpoint))
    assert encoder.load_report == {"missing": [], "unexpected": []}
    saved = torch.load(checkpoint, weights_only=True)
    assert all(torch.equal(v, saved[k]) for k, v in encoder.state_dict().items())
    settings = encode_settings(schema_defaults("feature_set")) | dict(
        encoder="resnet18_layer3", image_size=PATCH, batch_size=64, num_workers=0
    )
    settings |= {"seed": 0, "device": "cpu"}
    extract(store, tmp_path / "standin", **settings | {"weights": str(checkpoint)})
    extract(store, tmp_path / "random", **settings | {"weights": "random"})
    standin = load_features(tmp_path / "standin" / "PRE-0000.pt")
    random = load_features(tmp_path / "random" / "PRE-0000.pt")
    assert standin["weights"] == str(checkpoint)
    assert standin["features"].shape == random["features"].shape == (48, 256)
    assert not torch.allclose(standin["features"], random["features"])


def test_same_seed_same_checkpoint(pretrained, tmp_path):
    _, store, record = pretrained
    again = pretrain(
        store, tmp_path, "tiny_pretraining", **TINY_RUN, threads=1, device="cpu",
    )  # fmt: skip
    assert again["checkpoint_sha256"] == record["checkpoint_sha256"]


def test_views_and_loss():
    generator = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (5, 3, PATCH, PATCH), dtype=torch.uint8)
    views = ssl_view(images, 24, 0.3, 0.15, generator)
    assert views.shape == (5, 3, 24, 24) and views.min() >= 0.0 and views.max() <= 1.0
    z = torch.randn(6, 8)
    assert nt_xent(z, z, 0.2) < nt_xent(z, torch.randn(6, 8), 0.2)


def _demo_config(change):
    config = load_config(REPO_ROOT / "config.yaml")
    change(config)
    experiments = resolve_experiments(config)
    config["experiments"] = experiments.runs
    return check_config(config)


def test_demo_config_names_its_stand_in():
    config = _demo_config(lambda c: None)
    assert config["feature_sets"]["r18_standin"]["weights"] == "pretrain:r18_simclr"
    assert config["pretrain"]["r18_simclr"]["dataset"] == "demo_pretraining"


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (
            lambda c: c["feature_sets"]["r18_standin"].update(weights="pretrain:nope"),
            r"feature_sets/r18_standin/weights': no pretrain run 'nope' \(pretrain has: r18_simclr\)",
        ),
        (
            lambda c: c["feature_sets"]["r18_standin"].update(encoder="resnet50_layer3"),
            "pretrains resnet18_layer3, not the encoder resnet50_layer3",
        ),
        (
            lambda c: c["pretrain"]["r18_simclr"].update(dataset="demo_subtyping"),
            "pretrain/r18_simclr/dataset': 'demo_subtyping' is not a dataset with task pretraining",
        ),
        (
            lambda c: c["experiments"]["abmil_r50"].update(datasets=["demo_pretraining"]),
            "demo_pretraining is a pretraining cohort",
        ),
    ],
)
def test_bad_pretrain_references_fail_at_parse_time(change, message):
    with pytest.raises(ConfigError, match=message):
        _demo_config(change)
