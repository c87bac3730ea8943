"""Builders of tiny real patch stores and their split files for the E2E tests (class 1 = reddish,
class 0 = bluish)."""

import numpy as np
import pandas as pd

from abmilx.patches.store import PatchStoreWriter

PATCH = 32


def write_toy_store(path, labels, n_main=20, n_low=6, seed=0):
    """Class-1 slides have reddish patches, class-0 slides bluish ones (plus noise)."""
    rng = np.random.default_rng(seed)
    with PatchStoreWriter(
        path, patch_size=PATCH, jpeg_quality=90, scales={"main": 1.0, "low": 2.0}
    ) as writer:
        for slide_id, label in labels.items():
            for scale, count in (("main", n_main), ("low", n_low)):
                base = np.array([200, 60, 60] if label == 1 else [60, 60, 200], dtype=np.int16)
                noise = rng.integers(-40, 40, size=(count, PATCH, PATCH, 3))
                images = np.clip(base + noise, 0, 255).astype(np.uint8)
                coords = np.stack([np.arange(count) * 64, np.full(count, 128)], axis=1)
                writer.add_images(slide_id, scale, coords, list(images), extent_level0=64)
    return path


def write_toy_splits(path, labels):
    """A classification split file for `labels` (slide id -> 0/1): 4 train slides, the rest val."""
    pd.DataFrame(
        {
            "slide_id": list(labels),
            "case_id": [f"c{k}" for k in range(len(labels))],
            "label": ["tumor" if y else "normal" for y in labels.values()],
            "split": ["train" if k < 4 else "val" for k in range(len(labels))],
            "fold": 0,
        }
    ).to_csv(path, index=False)
    return path
