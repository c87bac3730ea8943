"""Training through a dataset index of per-slide stores sees exactly what it sees through a
packed copy of the same stores: the same batches (bytes, order, augmentation) and weights."""

import pytest
import torch
from e2e_toy_store import write_toy_splits, write_toy_store
from test_e2e_training import SETTINGS, _assert_same_weights
from torch.utils.data import DataLoader

from abmilx.e2e import train
from abmilx.e2e.data import MrisBags, TrainCollate
from abmilx.patches.store import PatchStore, index_stores, pack_stores
from abmilx.runtime.seeding import seed_worker
from abmilx.training.bags import Bag
from abmilx.training.runs import load_run


@pytest.fixture
def joined(tmp_path):
    """6 per-slide stores under slides/, their index and their packed copy, and a split file."""
    labels = {f"s{k}": k % 2 for k in range(6)}
    stores = [
        write_toy_store(tmp_path / "slides" / f"{slide_id}.lmdb", {slide_id: label}, seed=k)
        for k, (slide_id, label) in enumerate(labels.items())
    ]
    index_stores(stores, tmp_path / "patches.lmdb")
    pack_stores(stores, tmp_path / "packed.lmdb")
    write_toy_splits(tmp_path / "splits.csv", labels)
    return tmp_path / "patches.lmdb", tmp_path / "packed.lmdb", tmp_path / "splits.csv"


def _batches(store, regions, workers):
    bags = [Bag(f"s{k}", (f"s{k}",), k % 2) for k in range(6)]
    bags.append(Bag("s0+s3", ("s0", "s3"), 0))  # a bag of two slides reads two stores
    dataset = MrisBags(store, bags, 10, 4, {"main": "main", "low": "low"}, 3, regions=regions)
    dataset.set_epoch(2)
    loader = DataLoader(
        dataset,
        batch_sampler=[[0, 6], [5, 1], [2, 3], [4, 6]],
        num_workers=workers,
        collate_fn=TrainCollate(24, 0.5, True, 1),
        worker_init_fn=seed_worker,
        generator=torch.Generator().manual_seed(11),
    )
    return list(loader)


@pytest.mark.parametrize("regions", [None, 2])
def test_index_gives_the_packed_batches(joined, regions):
    index, packed, _ = joined
    assert PatchStore(index).is_index and not PatchStore(packed).is_index
    expected = _batches(packed, regions, workers=0)
    for got in (_batches(index, regions, workers=0), _batches(index, regions, workers=2)):
        assert len(got) == len(expected)
        for mine, theirs in zip(got, expected, strict=True):
            assert torch.equal(mine["images"], theirs["images"])
            assert torch.equal(mine["label"], theirs["label"])


def test_training_from_the_index_equals_training_from_the_packed_copy(joined, tmp_path):
    index, packed, splits = joined
    settings = {**SETTINGS, "epochs": 2}
    train(packed, splits, 0, tmp_path / "packed_run", **settings)
    train(index, splits, 0, tmp_path / "index_run", **{**settings, "num_workers": 1})
    first, second = load_run(tmp_path / "packed_run"), load_run(tmp_path / "index_run")
    _assert_same_weights(first["state_dict"], second["state_dict"])
    assert [row["train_loss"] for row in first["history"]] == [
        row["train_loss"] for row in second["history"]
    ]
