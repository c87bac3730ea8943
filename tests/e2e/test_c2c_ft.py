"""The C2C and FT baselines: cluster sampling and schedule, the KL term, VIB masks, training."""

import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from abmilx.e2e import PATCH_KINDS, train
from abmilx.e2e.c2c import C2CTask, ClusterPicker, cluster_kl, kmeans_groups
from abmilx.e2e.data import PickedBags
from abmilx.e2e.ft import FTSettings, MaskPicker, train_vib
from abmilx.patches.store import PatchStore
from abmilx.training.bags import Bag
from abmilx.training.runs import load_run
from abmilx.training.trainer import Trainer

COMMON = {
    "encoder_weights": "random",
    "epochs": 5,
    "lr": 3e-4,
    "batch_size": 2,
    "train_size": 24,
    "eval_size": 32,
    "crop_scale": 0.5,
    "patch_batch_size": 8,
    "eval_patch_batch_size": 16,
    "num_workers": 0,
    "seed": 7,
    "device": "cpu",
    "classes": ["normal", "tumor"],
}
C2C = {**COMMON, "n_clusters": 2, "per_cluster": 4, "recluster_every": 2}
FT = {**COMMON, "n_patches": 8, "keep_prior": 0.5, "vib_epochs": 3, "vib_lr": 1e-3}
N_MAIN, N_TRAIN = 20, 4  # main-scale patches per toy slide, training slides of the toy fold


def test_kmeans_groups_and_picker_draw_per_cluster_from_every_cluster():
    rng = np.random.default_rng(0)
    centres = np.array([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0]])
    sizes = [9, 2, 5]  # the middle cluster is smaller than per_cluster: duplicates
    features = np.concatenate(
        [c + rng.normal(0, 0.1, (n, 2)) for c, n in zip(centres, sizes, strict=True)]
    )
    groups = kmeans_groups(features, 3, seed=1)
    assert sorted(map(len, groups)) == sorted(sizes)
    picker = ClusterPicker([groups], n_clusters=3, per_cluster=4)
    picks = picker(0, np.random.default_rng(3))
    assert len(picks) == 12
    for slot, group in enumerate(groups):
        chosen = picks[slot * 4 : (slot + 1) * 4]
        assert set(chosen) <= set(group)  # cluster-major layout
        assert len(set(chosen)) == min(4, len(group))  # without replacement while possible
    # fewer patches than clusters: one cluster per patch, reused to fill the slots
    assert [len(g) for g in kmeans_groups(features[:2], 3, seed=1)] == [1, 1]


def test_cluster_kl_is_zero_exactly_for_uniform_cluster_attention():
    uniform = torch.full((2, 1, 12), 1 / 12)
    assert cluster_kl(uniform, 3).item() == pytest.approx(0.0, abs=1e-7)
    # unequal weights inside clusters, equal mass per cluster: still zero
    inside = torch.tensor([0.3, 0.0, 0.0, 1 / 30, 0.1, 0.1, 0.1, 1 / 30, 0.0, 0.0, 0.3, 1 / 30])
    assert cluster_kl(inside.view(1, 1, 12), 3).item() == pytest.approx(0.0, abs=1e-6)
    one_cluster = torch.zeros(1, 1, 12)
    one_cluster[..., :4] = 0.25
    assert cluster_kl(one_cluster, 3).item() == pytest.approx(np.log(3), rel=1e-5)


def test_c2c_trains_and_reclusters_on_schedule(toy_dataset, tmp_path):
    store, splits = toy_dataset
    table = pd.read_csv(splits)
    table["repeat"] = [2, 1, 1, 1, 1, 1]  # s0 oversampled: its bag twice, clustered once
    table.to_csv(splits, index=False)
    run = Trainer(C2CTask, store, splits, 0, tmp_path / "c2c", **C2C)
    run.run()
    assert run.task.clustered_at == [0, 2, 4]  # every recluster_every epochs
    assert [len(groups) for groups in run.task.clusters] == [2] * (N_TRAIN + 1)
    saved = load_run(tmp_path / "c2c")
    losses = [row["train_loss"] for row in saved["history"]]
    assert saved["kind"] == "c2c" and losses[-1] < 0.8 * losses[0], losses
    scored = 3 * N_TRAIN * N_MAIN  # three clusterings of every training patch
    steps = 5 * 2 * 2 * 8  # epochs x full steps x bags per step x (n_clusters * per_cluster)
    assert saved["cost"]["patches_scored"] == scored
    assert saved["cost"]["patches_seen"] == scored + steps


def test_c2c_resume_keeps_the_clusters(toy_dataset, tmp_path, monkeypatch):
    """A run killed after epoch 2 resumes with the clusters of epoch 2 (no re-clustering at
    epoch 3) and ends with the weights of an uninterrupted run."""
    store, splits = toy_dataset
    settings = {**C2C, "epochs": 4}
    whole = Trainer(C2CTask, store, splits, 0, tmp_path / "whole", **settings)
    whole.run()
    original = C2CTask.batches

    def crash_at_epoch_3(self, bags, epoch, steps):
        if epoch == 3:
            raise KeyboardInterrupt("simulated kill")
        return original(self, bags, epoch, steps)

    monkeypatch.setattr(C2CTask, "batches", crash_at_epoch_3)
    with pytest.raises(KeyboardInterrupt):
        Trainer(C2CTask, store, splits, 0, tmp_path / "resumed", **settings).run()
    monkeypatch.setattr(C2CTask, "batches", original)
    resumed = Trainer(C2CTask, store, splits, 0, tmp_path / "resumed", **settings)
    resumed.run()
    assert resumed.task.clustered_at == [0, 2]
    first, second = load_run(tmp_path / "whole"), load_run(tmp_path / "resumed")
    for name, value in first["state_dict"].items():
        assert torch.equal(value, second["state_dict"][name]), name
    assert first["cost"]["patches_seen"] == second["cost"]["patches_seen"]


def test_vib_mask_keeps_the_prior_fraction_without_task_signal():
    """Noise features and random labels: only the KL acts, so the keep rate goes to the prior
    and Monte Carlo masks keep that fraction of the patches."""
    generator = torch.Generator().manual_seed(0)
    features = [torch.randn(60, 16, generator=generator) for _ in range(8)]
    bags = [Bag(key=f"b{k}", slide_ids=(f"b{k}",), label=k % 2) for k in range(8)]
    config = FTSettings.from_settings(
        {"seed": 3, "keep_prior": 0.2, "vib_epochs": 40, "vib_lr": 0.01, "vib_beta": 1.0}
    )
    keep = train_vib(features, bags, 2, config)
    assert abs(float(np.mean(np.concatenate(keep))) - 0.2) < 0.03
    picker, rng = MaskPicker(keep, n_patches=8), np.random.default_rng(0)
    kept = [len(picker.kept(k, rng)) / 60 for k in range(8) for _ in range(20)]
    assert abs(np.mean(kept) - 0.2) < 0.03


def test_ft_sampled_subset_is_exactly_what_is_read(toy_dataset):
    store, _ = toy_dataset
    keep = [np.where(np.arange(N_MAIN) % 3 == 0, 0.9, 0.05)]  # mostly patches 0, 3, 6, ...
    picker = MaskPicker(keep, n_patches=8)
    bags = [Bag(key="s1", slide_ids=("s1",), label=1)]
    dataset = PickedBags(store, bags, picker, "main", seed=5)
    dataset.set_epoch(2)
    item = dataset[0]
    picks, _ = dataset.picks(0)
    rng = np.random.default_rng([5, 2, 0])  # the item's generator: same mask, same picks
    kept = picker.kept(0, rng)
    assert set(picks) <= set(kept) and len(picks) == 8
    expected = PatchStore(str(store)).read("s1", "main", picks)
    assert torch.equal(item["images"], torch.from_numpy(expected).permute(0, 3, 1, 2))


def test_ft_trains_from_the_vib_kept_patches(toy_dataset, tmp_path):
    store, splits = toy_dataset
    train(store, splits, 0, tmp_path / "ft", kind="ft", **FT)
    saved = load_run(tmp_path / "ft")
    losses = [row["train_loss"] for row in saved["history"]]
    assert saved["kind"] == "ft" and losses[-1] < 0.8 * losses[0], losses
    assert saved["cost"]["patches_scored"] == N_TRAIN * N_MAIN  # one VIB stage
    assert saved["cost"]["patches_seen"] == N_TRAIN * N_MAIN + 5 * N_TRAIN * 8


def test_workflow_trains_every_patch_kind():
    """common.smk keeps its own copy of PATCH_KINDS (no torch import when Snakemake parses)."""
    common = Path(__file__).parents[2] / "workflow" / "rules" / "common.smk"
    copy = re.search(r"^PATCH_KINDS = (\(.*\))$", common.read_text(), re.M)
    assert copy is not None and eval(copy.group(1)) == PATCH_KINDS
