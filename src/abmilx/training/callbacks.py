"""Trainer callbacks: hooks at fit start and end, epoch start and end, and after every step.

Built-in callbacks write per-epoch snapshots of a fixed set of bags under `<run>/snapshots/`
(attention for the attention-dynamics and sparsity figures, instance embeddings for the UMAP
figure). They run on the main process only and never influence training or selection (the
random number generators are restored after their inference).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from abmilx.training.bags import Bag

if TYPE_CHECKING:
    from abmilx.training.trainer import Trainer

SNAPSHOT_DIR = "snapshots"


class Callback:
    """Override the hooks you need; `trainer` gives the model, task, bags, out_dir and rank."""

    def on_fit_start(self, trainer: Trainer, start_epoch: int) -> None:
        pass

    def on_epoch_start(self, trainer: Trainer, epoch: int) -> None:
        pass

    def on_step(self, trainer: Trainer, epoch: int, step: int, loss: float) -> None:
        pass

    def on_epoch_end(self, trainer: Trainer, epoch: int, row: Mapping[str, Any]) -> None:
        pass

    def on_fit_end(self, trainer: Trainer, result: Any) -> None:
        pass


def snapshot_bags(bags: Mapping[str, list[Bag]], split: str, n: int) -> list[Bag]:
    """The first `n` distinct bags of `split` by key: the same bags every epoch."""
    unique = {bag.key: bag for bag in bags.get(split, [])}
    return [unique[key] for key in sorted(unique)[:n]]


class Snapshot(Callback):
    """Every `every` epochs and after the last one, run the model over fixed bags and write
    `<run>/snapshots/<what>_epoch{e}.npz` (e = 0-based epoch) with per-slide arrays."""

    what = "snapshot"

    def __init__(self, every: int, bags: Sequence[Bag]) -> None:
        self.every = every
        self.bags = list(bags)

    def arrays(self, slide_id: str, coords: np.ndarray, attention, features) -> dict:
        raise NotImplementedError

    def on_epoch_end(self, trainer: Trainer, epoch: int, row: Mapping[str, Any]) -> None:
        last = epoch == trainer.config.epochs - 1
        if not trainer.is_main or not self.bags or not ((epoch + 1) % self.every == 0 or last):
            return
        arrays: dict[str, np.ndarray] = {}
        device = trainer.device
        with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
            results = list(trainer.task.infer(trainer.model, [bag.slide_ids for bag in self.bags]))
        for bag, result in zip(self.bags, results, strict=True):
            attention = result.output.attention
            weights = None if attention is None else attention[0].float().cpu().numpy()
            offset = 0
            for slide_id, coords in zip(bag.slide_ids, result.coords, strict=True):
                n = len(coords)
                part = None if weights is None else weights[:, offset : offset + n]
                features = result.features[offset : offset + n].float().cpu().numpy()
                arrays.update(self.arrays(slide_id, coords, part, features))
                offset += n
        path = Path(trainer.out_dir) / SNAPSHOT_DIR / f"{self.what}_epoch{epoch}.npz"
        path.parent.mkdir(parents=True, exist_ok=True)
        np.savez_compressed(path, **arrays)


class AttentionSnapshot(Snapshot):
    """`<slide_id>/coords` (n, 2) int64 and `<slide_id>/attention` (H, n) float32."""

    what = "attention"

    def arrays(self, slide_id, coords, attention, features):
        if attention is None:
            return {}
        return {
            f"{slide_id}/coords": np.asarray(coords, dtype=np.int64),
            f"{slide_id}/attention": attention.astype(np.float32),
        }


class EmbeddingSnapshot(Snapshot):
    """`<slide_id>/coords` (n, 2) int64 and `<slide_id>/embeddings` (n, d) float32: the
    instance features the MIL model reads (the encoder's output in E2E runs)."""

    what = "embeddings"

    def arrays(self, slide_id, coords, attention, features):
        return {
            f"{slide_id}/coords": np.asarray(coords, dtype=np.int64),
            f"{slide_id}/embeddings": features.astype(np.float32),
        }


def builtin_callbacks(settings: Mapping[str, Any], bags: Mapping[str, list[Bag]]) -> list[Callback]:
    """The snapshot callbacks the settings' `callbacks` block switches on."""
    chosen = snapshot_bags(bags, settings["snapshot_split"], settings["snapshot_bags"])
    callbacks: list[Callback] = []
    if settings["attention_every"]:
        callbacks.append(AttentionSnapshot(settings["attention_every"], chosen))
    if settings["embeddings_every"]:
        callbacks.append(EmbeddingSnapshot(settings["embeddings_every"], chosen))
    return callbacks
