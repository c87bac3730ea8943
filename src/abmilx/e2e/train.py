"""End-to-end training of encoder + MIL from LMDB patches (multi-scale random instance sampling)."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import torch
from torch import nn
from torch.utils.data import DataLoader

from abmilx.e2e.data import MrisBags, TrainCollate
from abmilx.e2e.model import E2EModel
from abmilx.features.data import iter_slide_features
from abmilx.features.extract import make_encode_fn
from abmilx.models import MILOutput, create_encoder, create_mil
from abmilx.provenance import config_hash
from abmilx.tiling.store import PatchStore
from abmilx.training import trainer
from abmilx.training.bags import Bag
from abmilx.training.devices import autocast
from abmilx.training.distributed import epoch_seed
from abmilx.training.seeding import seed_worker
from abmilx.training.settings import TrainSettings
from abmilx.training.task import BagResult, Task


@dataclass(kw_only=True)
class E2ESettings(TrainSettings):
    """Settings of an E2E run (schema `$defs/e2e_settings`); defaults = r18 BRCA subtyping."""

    definition: ClassVar[str] = "e2e_settings"

    encoder: str
    encoder_weights: str
    batch_size: int
    n_patches: int
    scale_ratio: int | None
    scales: dict
    train_size: int
    eval_size: int
    crop_scale: float
    flips: bool
    aug_chunks: int
    channel_order: str
    patch_batch_size: int
    eval_patch_batch_size: int
    channels_last: bool
    num_workers: int


class E2ETask(Task):
    """Bags are MRIS samples of a patch store in training and all main-scale patches in
    inference; the model is encoder + MIL (`E2EModel`)."""

    kind = "e2e"
    settings_type = E2ESettings

    def __init__(self, source, config, device, amp_dtype, num_workers=None) -> None:
        super().__init__(source, config, device, amp_dtype, num_workers)
        self.store = PatchStore(str(source))
        if self.num_workers is None:
            self.num_workers = config.num_workers

    def available(self) -> set[str]:
        main = self.config.scales["main"]
        slides = self.store.meta["slides"]
        return {slide_id for slide_id, counts in slides.items() if counts.get(main, 0) > 0}

    def identity(self) -> dict:
        stat = self.store.path.stat()
        return {
            "meta": config_hash(self.store.meta),
            "bytes": stat.st_size,
            "mtime_ns": stat.st_mtime_ns,
        }

    def build_model(self, n_classes: int, *, pretrained: bool) -> nn.Module:
        config = self.config
        weights = config.encoder_weights if pretrained else "random"
        encoder = create_encoder(config.encoder, weights=weights)
        mil = create_mil(config.mil, encoder.out_dim, n_classes, **config.mil_kwargs)
        model = E2EModel(encoder, mil, config.patch_batch_size, config.channels_last)
        model = model.to(self.device)
        return model.to(memory_format=torch.channels_last) if config.channels_last else model

    def batch_size(self) -> int:
        return self.config.batch_size

    def batches(self, bags: Sequence[Bag], epoch: int, steps: list[list[int]]) -> Iterator[dict]:
        config = self.config
        dataset = MrisBags(
            self.source,
            bags,
            config.n_patches,
            config.scale_ratio,
            config.scales,
            config.seed,
            config.channel_order,
        )
        dataset.set_epoch(epoch)
        loader = DataLoader(
            dataset,
            batch_sampler=steps,
            num_workers=self.num_workers,
            collate_fn=TrainCollate(
                config.train_size, config.crop_scale, config.flips, config.aug_chunks
            ),
            pin_memory=self.device.type == "cuda",
            worker_init_fn=seed_worker,
            generator=torch.Generator().manual_seed(epoch_seed(config.seed, epoch)),
            prefetch_factor=3 if self.num_workers else None,
        )
        for batch in loader:
            yield {"inputs": batch["images"], "label": batch["label"], "event": batch["event"]}

    def forward(self, model: nn.Module, inputs: torch.Tensor, label: torch.Tensor) -> MILOutput:
        return model(inputs, labels=label)

    def infer(self, model: nn.Module, bags: Sequence[Sequence[str]]) -> Iterator[BagResult]:
        """Encodes ALL main-scale patches of each bag in chunks under no_grad, so only the
        features of a whole slide are kept, never its images."""
        config = self.config
        model.eval()
        encode = make_encode_fn(model.encoder, self.device, self.amp_dtype, model.channels_last)
        slides = iter_slide_features(
            self.source,
            [slide_id for members in bags for slide_id in members],
            encode,
            scale=config.scales["main"],
            chunk_size=config.eval_patch_batch_size,
            image_size=config.eval_size,
            channel_order=config.channel_order,
            num_workers=self.num_workers,
        )
        for members in bags:
            parts = [next(slides) for _ in members]
            features = torch.cat([features for _, features, _ in parts]).to(self.device)
            with torch.no_grad(), autocast(self.device, self.amp_dtype):
                output = model.mil(features.unsqueeze(0))
            yield BagResult(output, [coords for _, _, coords in parts], features)


def train(
    store: str | Path,
    splits: str | Path,
    fold: int,
    out_dir: str | Path,
    threads: int = 1,
    **settings,
) -> Path:
    """Train encoder + MIL on the fold (see `abmilx.training.train`); under torchrun
    (WORLD_SIZE > 1) it runs DDP and only rank 0 writes files. Returns model.pt."""
    return trainer.train(E2ETask, store, splits, fold, out_dir, threads, **settings)
