"""Tiny real patch stores and split files for E2E tests."""

import pytest
import torch
from e2e_toy_store import write_toy_splits, write_toy_store

torch.set_num_threads(1)


@pytest.fixture
def toy_dataset(tmp_path):
    """6 slides (3 per class): 4 train, 2 val; store + classification split file."""
    labels = {f"s{k}": k % 2 for k in range(6)}
    store = write_toy_store(tmp_path / "patches.lmdb", labels)
    splits_path = write_toy_splits(tmp_path / "splits.csv", labels)
    return store, splits_path
