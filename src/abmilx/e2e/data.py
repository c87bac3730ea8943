"""E2E training data: bags of JPEG patches read from the PatchStore, sampled by MRIS (random or
regional within each scale) or chosen by a kind's picker (C2C clusters, FT masks, the
attention-sampling teacher).

Every random choice of an item is drawn from a generator seeded by (seed, epoch, item index),
and the batch augmentation from the seeds of its items, so results do not depend on the number
of DataLoader workers and a resumed run repeats exactly what an uninterrupted run would do.

Speed: DataLoader worker processes read and decode (libjpeg-turbo, straight into one array per
bag) and augment whole batches (`training_view`, no per-patch Python) while the model steps;
batches leave the workers channels_last, the layout the encoder runs in.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from abmilx.e2e.sampling import mris_counts, sample_pooled, sample_regional_pooled, split_pooled
from abmilx.patches.augment import training_view
from abmilx.patches.data import to_chw_tensor
from abmilx.patches.store import PatchStore
from abmilx.training.bags import Bag


class StoreBags(Dataset):
    """One item per bag, read lazily from the patch store (opened once per worker)."""

    def __init__(
        self, store_path: str | Path, bags: Sequence[Bag], seed: int, channel_order: str
    ) -> None:
        self.store_path = str(store_path)
        self.bags = list(bags)
        self.seed = seed
        self.channel_order = channel_order
        self.epoch = 0
        self._store: PatchStore | None = None

    def set_epoch(self, epoch: int) -> None:
        """Fresh samples every epoch (workers are re-created per epoch and see the new value)."""
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.bags)

    @property
    def store(self) -> PatchStore:
        if self._store is None:
            self._store = PatchStore(self.store_path)
        return self._store

    def item(self, bag: Bag, patches: np.ndarray, rng: np.random.Generator) -> dict:
        """The item dict of `bag` with its (n, P, P, 3) patches."""
        return {
            "images": to_chw_tensor(patches, self.channel_order),
            "label": bag.label,
            "event": bag.event,
            "aug_seed": int(rng.integers(2**62)),
        }


def fill_pooled(
    store: PatchStore,
    slide_ids: Sequence[str],
    scale: str,
    slide: np.ndarray,
    index: np.ndarray,
    out: np.ndarray,
) -> None:
    """Fill `out` (n, P, P, 3): row i is patch `index[i]` of slide `slide_ids[slide[i]]`."""
    for position, slide_id in enumerate(slide_ids):
        rows = np.flatnonzero(slide == position)
        if len(rows):
            out[rows] = store.read(slide_id, scale, index[rows])


class MrisBags(StoreBags):
    """One item per bag: (N, 3, P, P) uint8 patches at store size, [low scale ; main scale].

    Each scale's patches are drawn uniformly, or with `regions` = G regionally: stratified over
    a G x G grid of each slide's patch coordinates at that scale (`sample_regional_pooled`).
    """

    def __init__(
        self,
        store_path: str | Path,
        bags: Sequence[Bag],
        n_patches: int,
        scale_ratio: float | None,
        scales: Mapping[str, str],
        seed: int,
        channel_order: str = "rgb",
        regions: int | None = None,
    ) -> None:
        super().__init__(store_path, bags, seed, channel_order)
        self.regions = regions
        self.n_low, self.n_main = mris_counts(n_patches, scale_ratio)
        self.main_scale = scales["main"]
        self.low_scale = scales.get("low")
        if self.n_low and not self.low_scale:
            raise ValueError("scale_ratio > 0 needs a 'low' entry in scales")

    def _read_sample(
        self,
        slide_ids: Sequence[str],
        scale: str,
        rng: np.random.Generator,
        out: np.ndarray,
    ) -> None:
        """Fill `out` (n, P, P, 3) with patches sampled from the slides' pooled patches."""
        if self.regions:
            coords = [self.store.coords(slide_id, scale) for slide_id in slide_ids]
            slide, index = sample_regional_pooled(coords, len(out), self.regions, rng)
        else:
            counts = [self.store.count(slide_id, scale) for slide_id in slide_ids]
            slide, index = sample_pooled(counts, len(out), rng)
        fill_pooled(self.store, slide_ids, scale, slide, index, out)

    def _has_patches(self, slide_ids: Sequence[str], scale: str | None) -> bool:
        return scale is not None and any(
            scale in self.store.meta["slides"][slide_id] and self.store.count(slide_id, scale)
            for slide_id in slide_ids
        )

    def __getitem__(self, index: int) -> dict:
        bag = self.bags[index]
        rng = np.random.default_rng([self.seed, self.epoch, index])
        n_low, n_main = self.n_low, self.n_main
        if n_low and not self._has_patches(bag.slide_ids, self.low_scale):
            n_low, n_main = 0, n_low + n_main  # no low-magnification patches: all from main
        size = self.store.patch_size
        patches = np.empty((n_low + n_main, size, size, 3), dtype=np.uint8)
        if n_low:
            self._read_sample(bag.slide_ids, self.low_scale, rng, patches[:n_low])
        self._read_sample(bag.slide_ids, self.main_scale, rng, patches[n_low:])
        return self.item(bag, patches, rng)


class PickedBags(StoreBags):
    """One item per bag: the patches at `scale` that `picker(bag_index, rng)` chooses.

    The picker returns indices into the bag's pooled patches (its slides' patches concatenated
    in order) and must be picklable (DataLoader workers). Seeding as in `MrisBags`.
    """

    def __init__(
        self,
        store_path: str | Path,
        bags: Sequence[Bag],
        picker: Callable[[int, np.random.Generator], np.ndarray],
        scale: str,
        seed: int,
        channel_order: str = "rgb",
    ) -> None:
        super().__init__(store_path, bags, seed, channel_order)
        self.picker = picker
        self.scale = scale

    def picks(self, index: int) -> tuple[np.ndarray, np.random.Generator]:
        """The pooled indices item `index` reads this epoch, and the generator after drawing."""
        rng = np.random.default_rng([self.seed, self.epoch, index])
        return np.asarray(self.picker(index, rng), dtype=np.int64), rng

    def __getitem__(self, index: int) -> dict:
        bag = self.bags[index]
        flat, rng = self.picks(index)
        counts = [self.store.count(slide_id, self.scale) for slide_id in bag.slide_ids]
        slide, patch = split_pooled(counts, flat)
        size = self.store.patch_size
        patches = np.empty((len(flat), size, size, 3), dtype=np.uint8)
        fill_pooled(self.store, bag.slide_ids, self.scale, slide, patch, patches)
        return self.item(bag, patches, rng)


class TrainCollate:
    """Stack a batch of bags and apply the training view to all of its patches at once.

    The views come out channels_last, (B, N, 3, S, S) with channel stride 1.
    """

    def __init__(
        self, train_size: int, crop_scale: float, flips: bool, aug_chunks: int, shift: float = 0.0
    ) -> None:
        self.train_size = train_size
        self.crop_scale = crop_scale
        self.flips = flips
        self.aug_chunks = aug_chunks
        self.shift = shift

    def __call__(self, items: list[dict]) -> dict:
        images = torch.stack([item["images"] for item in items])
        batch, n_patches = images.shape[:2]
        seed = np.random.default_rng([item["aug_seed"] for item in items]).integers(2**62)
        generator = torch.Generator().manual_seed(int(seed))
        views = training_view(
            images.flatten(0, 1),
            self.train_size,
            self.crop_scale,
            self.flips,
            generator,
            self.aug_chunks,
            self.shift,
        )
        views = views.contiguous(memory_format=torch.channels_last)
        return {
            "images": views.view(batch, n_patches, *views.shape[1:]),
            "label": torch.tensor([item["label"] for item in items], dtype=torch.long),
            "event": torch.tensor([item["event"] for item in items], dtype=torch.float32),
        }
