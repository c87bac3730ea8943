"""What the tables' E2E rows need: random, regional and attention sampling, the frozen encoder
and every aggregator of Table 5 (with ABMILX's component ablations), on hand-made data and real
tiny patch stores."""

import numpy as np
import pandas as pd
import pytest
import torch

from abmilx.config import ConfigError
from abmilx.e2e.data import MrisBags
from abmilx.e2e.sampling import (
    region_labels,
    sample_regional_pooled,
    sample_stratified,
    vote_top_k,
)
from abmilx.e2e.train import E2ESettings
from abmilx.evaluation.evaluate import evaluate
from abmilx.kinds import task_type
from abmilx.patches.data import iter_slide_features
from abmilx.patches.store import PatchStoreWriter
from abmilx.training.bags import Bag
from abmilx.training.runs import load_run
from abmilx.training.trainer import Trainer

# Level-0 corners of one slide (256-px patches), listed out of grid order so that only the real
# coordinates tell the regions apart. Bounding box x 0..1024, y 0..768; with G = 2 the columns
# split at x < 512.5 and the rows at y < 384.5: region 0 (top left) has 5 patches, region 1
# (top right) 1, region 2 (bottom left) none, region 3 (bottom right) 4.
COORDS = np.array(
    [[1024, 768], [0, 0], [768, 512], [256, 256], [1024, 512],
     [0, 256], [1024, 0], [256, 0], [768, 768], [512, 0]]
)  # fmt: skip
REGIONS = {0: {1, 3, 5, 7, 9}, 1: {6}, 2: set(), 3: {0, 2, 4, 8}}


def test_region_labels_follow_the_level0_coordinates():
    labels = region_labels(COORDS, 2)
    assert {region: set(np.flatnonzero(labels == region)) for region in range(4)} == REGIONS
    assert region_labels(np.zeros((0, 2), int), 3).shape == (0,)
    assert (region_labels(COORDS, 1) == 0).all()


def test_regional_draws_its_quota_inside_every_region_then_tops_up():
    labels = region_labels(COORDS, 2)
    sizes = np.bincount(labels, minlength=4)
    rng = np.random.default_rng(0)
    for n_wanted in (4, 8, 10):
        picks = sample_stratified(labels, 4, n_wanted, rng)
        quota = n_wanted // 4
        assert len(picks) == n_wanted and len(set(picks.tolist())) == n_wanted  # no duplicates
        head = picks[: sum(min(quota, size) for size in sizes)]  # the per-region draws, in order
        start = 0
        for region, size in enumerate(sizes):
            part = head[start : start + min(quota, size)]
            assert set(labels[part].tolist()) <= {region}  # only patches inside the region
            start += len(part)
        drawn = np.bincount(labels[picks], minlength=4)
        assert (drawn >= np.minimum(quota, sizes)).all()  # every non-empty region gives its quota
    # more than there are: every patch once, then uniform duplicates
    picks = sample_stratified(labels, 4, 15, rng)
    assert set(picks.tolist()) == set(range(10)) and len(picks) == 15


def test_regional_pooled_uses_each_slide_s_own_grid_and_is_seeded():
    far = COORDS + np.array([50_000, 90_000])  # a second slide elsewhere in its own frame
    slide, index = sample_regional_pooled([COORDS, far], 16, 2, np.random.default_rng(3))
    # 8 regions, quota 2: each slide's non-empty regions give min(2, size) of its patches
    labels = region_labels(COORDS, 2)
    for position in (0, 1):
        mine = index[slide == position]
        counts = np.bincount(labels[mine], minlength=4)
        sizes = np.bincount(labels, minlength=4)
        assert (counts >= np.minimum(2, sizes)).all()
    again = sample_regional_pooled([COORDS, far], 16, 2, np.random.default_rng(3))
    other = sample_regional_pooled([COORDS, far], 16, 2, np.random.default_rng(4))
    assert all(np.array_equal(a, b) for a, b in zip((slide, index), again, strict=True))
    assert not all(np.array_equal(a, b) for a, b in zip((slide, index), other, strict=True))


def _position_store(path, grid=4, size=8):
    """One slide whose main-scale patch i is filled with grey level 12 * i + 10 and sits at
    level-0 corner (256 * column, 256 * row) of a grid x grid layout, listed in shuffled order."""
    cells = np.random.default_rng(1).permutation(grid * grid)
    coords = np.stack([cells % grid * 256, cells // grid * 256], axis=1)
    images = [np.full((size, size, 3), 12 * i + 10, np.uint8) for i in range(grid * grid)]
    with PatchStoreWriter(path, patch_size=size, jpeg_quality=95, scales={"main": 1.0}) as w:
        w.add_images("s", "main", coords, images)
    return coords


def test_regional_bags_read_patches_from_every_region_of_the_store(tmp_path):
    coords = _position_store(tmp_path / "p.lmdb")
    bags = [Bag("s", ("s",), 0)]
    dataset = MrisBags(tmp_path / "p.lmdb", bags, 8, None, {"main": "main"}, seed=0, regions=2)
    grey = dataset[0]["images"].float().mean(dim=(1, 2, 3))
    read = ((grey - 10) / 12).round().long().numpy()
    assert len(set(read.tolist())) == 8
    regions = region_labels(coords, 2)[read]
    assert sorted(regions.tolist()) == [0, 0, 1, 1, 2, 2, 3, 3]  # 2 from each of the 4 regions
    same = MrisBags(tmp_path / "p.lmdb", bags, 8, None, {"main": "main"}, seed=0, regions=2)
    assert torch.equal(same[0]["images"], dataset[0]["images"])


def test_vote_top_k_keeps_the_most_voted_instances():
    attention = np.array(
        [
            [0.50, 0.30, 0.10, 0.05, 0.05, 0.00],  # top-2: 0, 1
            [0.10, 0.40, 0.35, 0.05, 0.05, 0.05],  # top-2: 1, 2
            [0.05, 0.45, 0.05, 0.40, 0.05, 0.00],  # top-2: 1, 3
        ]
    )
    # votes: 1 -> 3; 0, 2, 3 -> 1 each; tie broken by mean attention: 0 (0.217) > 2 (0.167)
    assert vote_top_k(attention, 2).tolist() == [1, 0]
    assert vote_top_k(attention, 3).tolist()[:2] == [1, 0]
    single = np.array([0.1, 0.4, 0.2, 0.3])
    assert vote_top_k(single, 2).tolist() == [1, 3]  # one head: its own top-k
    assert vote_top_k(single[None], 9).tolist() == [1, 3, 2, 0]  # all there are


def test_attention_sampling_needs_an_ema_teacher():
    with pytest.raises(ConfigError, match="EMA teacher"):
        E2ESettings.from_settings({"sampling": "attention"})
    assert E2ESettings.from_settings({"sampling": "attention", "ema": 0.99}).ema == 0.99


SETTINGS = {
    "encoder_weights": "random",
    "epochs": 2,
    "warmup_epochs": 0,
    "lr": 3e-4,
    "batch_size": 2,
    "n_patches": 6,
    "train_size": 24,
    "eval_size": 24,
    "crop_scale": 0.5,
    "patch_batch_size": 16,
    "num_workers": 0,
    "seed": 3,
    "device": "cpu",
    "classes": ["normal", "tumor"],
    "mil_kwargs": {"inner_dim": 32, "n_heads": 4},
}


def test_attention_sampling_trains_deterministically_and_scores_every_patch(toy_dataset, tmp_path):
    store, splits = toy_dataset
    settings = {**SETTINGS, "sampling": "attention", "ema": 0.9}
    runs = []
    for name in ("a", "b"):
        Trainer(task_type("e2e"), store, splits, 0, tmp_path / name, **settings).run()
        runs.append(load_run(tmp_path / name))
    first, second = runs
    assert all(
        torch.equal(first["state_dict"][k], second["state_dict"][k]) for k in first["state_dict"]
    )
    # every step the teacher encodes all 20 main-scale patches of each of its 2 slides
    assert first["cost"]["patches_scored"] == 2 * 4 * 20  # 2 epochs x 4 training slides


def test_attention_sampling_scores_an_oversampled_bag_once_per_step(toy_dataset, tmp_path):
    """s1 repeated 3 times beside s0 in steps of 2: one step holds s1 twice (pigeonhole)."""
    store, splits = toy_dataset
    table = pd.read_csv(splits)
    table = table[table.slide_id.isin(["s0", "s1", "s4", "s5"])]
    table["repeat"] = [1, 3, 1, 1]
    table.to_csv(tmp_path / "oversampled.csv", index=False)
    settings = {**SETTINGS, "sampling": "attention", "ema": 0.9}
    run = Trainer(
        task_type("e2e"), store, tmp_path / "oversampled.csv", 0, tmp_path / "r", **settings
    )
    run.run()
    # per epoch: the step {s1, s1} scores s1's 20 patches once, the step {s0, s1} both slides
    assert load_run(tmp_path / "r")["cost"]["patches_scored"] == 2 * (20 + 40)


def test_streamed_features_refuse_a_slide_asked_for_twice(toy_dataset):
    """One yield per requested slide is what callers zip against."""
    store, _ = toy_dataset
    with pytest.raises(ValueError, match=r"more than once: \['s1'\]"):
        next(
            iter_slide_features(
                store, ["s1", "s0", "s1"], lambda x: x, scale="main", chunk_size=512,
                image_size=24, channel_order="rgb",
            )
        )  # fmt: skip


def test_frozen_encoder_keeps_weights_and_batchnorm_statistics(toy_dataset, tmp_path):
    store, splits = toy_dataset
    settings = {**SETTINGS, "freeze_encoder": True, "ema": 0.9}
    trainer = Trainer(task_type("e2e"), store, splits, 0, tmp_path / "frozen", **settings)
    encoder = {k: v.clone() for k, v in trainer.model.encoder.state_dict().items()}
    mil = {k: v.clone() for k, v in trainer.model.mil.state_dict().items()}
    assert any("running_mean" in k for k in encoder)
    trainer.run()
    for name, value in trainer.model.encoder.state_dict().items():
        assert torch.equal(value, encoder[name]), name
    assert not any(
        torch.equal(v, mil[k])
        for k, v in trainer.model.mil.state_dict().items()
        if v.is_floating_point()
    )
    saved = load_run(tmp_path / "frozen")["state_dict"]
    assert all(torch.equal(saved[f"encoder.{k}"], v) for k, v in encoder.items())
    trainer.model.train()  # a frozen encoder stays in eval mode
    assert not trainer.model.encoder.training and trainer.model.mil.training


# Table 5's aggregators and Table 3/7's ABMILX ablations, as mil_kwargs select them (TransMIL
# with fewer landmarks only to keep the test fast; its default 256 pads every bag to 256 tokens).
AGGREGATORS = [
    ("abmil", {}),
    ("dsmil", {}),
    ("transmil", {"n_landmarks": 16}),
    ("rrtmil", {}),
    ("vitmil", {}),
    ("qamil", {}),
    ("abmilx", {}),
    ("abmilx", {"n_heads": 1, "attn_plus": False}),  # ABMIL-like single head, no A+
    ("abmilx", {"alpha": "fixed"}),  # MHLA & A+ with fixed alpha = 1
    ("abmilx", {"ffn": True, "inner_dim": 64, "n_heads": 2}),
]
INSTANCE_LOSS = {"dsmil"}


@pytest.mark.parametrize(("mil", "options"), AGGREGATORS)
def test_every_table5_aggregator_trains_end_to_end(toy_dataset, tmp_path, mil, options):
    store, splits = toy_dataset
    settings = {**SETTINGS, "epochs": 1, "mil": mil, "mil_kwargs": options}
    trainer = Trainer(task_type("e2e"), store, splits, 0, tmp_path / "run", **settings)
    batch = next(iter(trainer.task.batches(trainer.train_bags, 0, [[0, 1]])))
    output = trainer.task.forward(trainer.model.train(), batch["inputs"], batch["label"])
    assert output.logits.shape == (2, 2) and torch.isfinite(output.logits).all()
    assert (output.aux_loss is not None) == (mil in INSTANCE_LOSS)  # instance-level loss
    first_conv = trainer.model.encoder.state_dict()["conv1.weight"].clone()
    trainer.run()
    run = load_run(tmp_path / "run")
    assert np.isfinite(run["history"][-1]["train_loss"])
    assert not torch.equal(run["state_dict"]["encoder.conv1.weight"], first_conv)  # E2E
    metrics = evaluate(
        tmp_path / "run", splits, 0, "e2e", tmp_path / "eval", store, split="val",
        n_boot=100, seed=0, model_weights="main", device="cpu", paper_inference_time=False,
    )  # fmt: skip
    assert metrics["n"] == 2 and metrics["cost"]["flops_per_slide"] > 0  # FLOPs of every MIL
    assert metrics["cost"]["paper_macs"] > 0.9e12  # the paper's 512-patch count, every MIL


@pytest.mark.parametrize(("sampling", "n_low"), [("mris", 2), ("random", 0), ("regional", 2)])
def test_e2e_task_samples_as_its_setting_says(tmp_path, sampling, n_low):
    """mris and regional take n // scale_ratio patches from the low scale, random none."""
    with PatchStoreWriter(
        tmp_path / "p.lmdb", patch_size=16, jpeg_quality=95, scales={"main": 1.0, "low": 2.0}
    ) as writer:
        for scale, grey, count in (("main", 220, 16), ("low", 20, 4)):
            coords = np.stack([np.arange(count) % 4 * 256, np.arange(count) // 4 * 256], axis=1)
            writer.add_images("s", scale, coords, [np.full((16, 16, 3), grey, np.uint8)] * count)
    config = E2ESettings.from_settings(
        {"sampling": sampling, "n_patches": 8, "scale_ratio": 4, "train_size": 16, "seed": 0}
    )
    task = task_type("e2e")(tmp_path / "p.lmdb", config, torch.device("cpu"), None, 0)
    batch = next(iter(task.batches([Bag("s", ("s",), 0)], 0, [[0]])))
    grey = batch["inputs"][0].float().mean(dim=(1, 2, 3))
    assert batch["inputs"].shape[:2] == (1, 8) and int((grey < 120).sum()) == n_low
