"""Tiny real patch stores and split files for E2E tests."""

import pandas as pd
import pytest
import torch
from e2e_toy_store import write_toy_store

torch.set_num_threads(1)


@pytest.fixture
def toy_dataset(tmp_path):
    """6 slides (3 per class): 4 train, 2 val; store + classification split file."""
    labels = {f"s{k}": k % 2 for k in range(6)}
    store = write_toy_store(tmp_path / "patches.lmdb", labels)
    splits = pd.DataFrame(
        {
            "slide_id": list(labels),
            "case_id": [f"c{k}" for k in range(6)],
            "label": ["tumor" if y else "normal" for y in labels.values()],
            "split": ["train", "train", "train", "train", "val", "val"],
            "fold": 0,
        }
    )
    splits_path = tmp_path / "splits.csv"
    splits.to_csv(splits_path, index=False)
    return store, splits_path
