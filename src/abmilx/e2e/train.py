"""End-to-end training of encoder + MIL from LMDB patches, sampled by MRIS (or plain random,
regional or attention sampling: the `sampling` setting, see abmilx.e2e.sampling).

`PatchTask` is what every kind that reads the patch store shares (E2E here, C2C and FT in
their own modules): the settings, the model, the training loader and whole-slide inference.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from abmilx.config import ConfigError
from abmilx.e2e.data import MrisBags, PickedBags, TrainCollate
from abmilx.e2e.model import E2EModel
from abmilx.e2e.sampling import ATTENTION_NEEDS_EMA, vote_top_k
from abmilx.models import MILOutput, create_encoder, create_mil
from abmilx.patches.data import iter_slide_features, make_encode_fn
from abmilx.patches.store import PatchStore
from abmilx.provenance import config_hash
from abmilx.runtime.devices import autocast
from abmilx.runtime.seeding import seed_worker
from abmilx.training.bags import Bag
from abmilx.training.distributed import epoch_seed
from abmilx.training.settings import TrainSettings
from abmilx.training.task import BagResult, Task


@dataclass(kw_only=True)
class PatchSettings(TrainSettings):
    """Settings of every kind that trains its encoder from the patch store."""

    encoder: str
    encoder_weights: str
    batch_size: int
    micro_batch_size: int | None
    scales: dict
    train_size: int
    eval_size: int
    crop_scale: float
    flips: bool
    aug_chunks: int
    shift: float
    channel_order: str
    patch_batch_size: int
    eval_patch_batch_size: int
    channels_last: bool
    num_workers: int


@dataclass(kw_only=True)
class E2ESettings(PatchSettings):
    """Settings of an E2E run (schema `$defs/e2e_settings`); defaults = r18 BRCA subtyping."""

    definition: ClassVar[str] = "e2e_settings"

    n_patches: int
    scale_ratio: int | None
    sampling: str
    regions: int
    freeze_encoder: bool

    def __post_init__(self) -> None:
        if self.sampling == "attention" and self.ema is None:
            raise ConfigError(ATTENTION_NEEDS_EMA)


class PatchTask(Task):
    """Encoder + MIL trained from the patch store; inference on all main-scale patches.

    Subclasses say which patches each training step reads (`batches`), possibly using the
    current encoder (`self.model`, the model `build_model` made).
    """

    model: E2EModel | None = None

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

    def read_files(self) -> list[str]:
        return [self.config.encoder_weights]

    def build_model(self, n_classes: int, *, pretrained: bool) -> nn.Module:
        config = self.config
        weights = config.encoder_weights if pretrained else "random"
        encoder = create_encoder(config.encoder, weights=weights)
        mil = create_mil(config.mil, encoder.out_dim, n_classes, **config.mil_kwargs)
        model = self.wrap(encoder, mil, n_classes).to(self.device)
        if config.channels_last:
            model = model.to(memory_format=torch.channels_last)
        self.model = model
        return model

    def wrap(self, encoder: nn.Module, mil: nn.Module, n_classes: int) -> E2EModel:
        """The trained module around encoder and MIL (C2C adds its instance head)."""
        return E2EModel(encoder, mil, self.config.patch_batch_size, self.config.channels_last)

    def batch_size(self) -> int:
        return self.config.batch_size

    def micro_batch_size(self) -> int | None:
        return self.config.micro_batch_size

    def collate(self) -> TrainCollate:
        config = self.config
        return TrainCollate(
            config.train_size, config.crop_scale, config.flips, config.aug_chunks, config.shift
        )

    def load(self, dataset: Dataset, epoch: int, steps: list[list[int]]) -> Iterator[dict]:
        """The batches of `dataset` (a `StoreBags`) for `steps`, augmented by `TrainCollate`."""
        dataset.set_epoch(epoch)
        loader = DataLoader(
            dataset,
            batch_sampler=steps,
            num_workers=self.num_workers,
            collate_fn=self.collate(),
            pin_memory=self.device.type == "cuda",
            worker_init_fn=seed_worker,
            generator=torch.Generator().manual_seed(epoch_seed(self.config.seed, epoch)),
            prefetch_factor=3 if self.num_workers else None,
        )
        for batch in loader:
            yield step_batch(batch)

    def load_picked(
        self, bags: Sequence[Bag], picker: Callable, epoch: int, steps: list[list[int]]
    ) -> Iterator[dict]:
        """The batches of the main-scale patches that `picker` chooses (see `PickedBags`)."""
        config = self.config
        dataset = PickedBags(
            self.source, bags, picker, config.scales["main"], config.seed, config.channel_order
        )
        return self.load(dataset, epoch, steps)

    def forward(self, model: nn.Module, inputs: torch.Tensor, label: torch.Tensor) -> MILOutput:
        return model(inputs, labels=label)

    def slide_features(
        self, model: E2EModel, slide_ids: Sequence[str]
    ) -> Iterator[tuple[str, torch.Tensor, np.ndarray]]:
        """(slide_id, features, coords) of ALL main-scale patches of each slide, encoded by
        `model`'s encoder in eval mode, in chunks under no_grad (never a slide's images)."""
        config = self.config
        model.eval()
        encode = make_encode_fn(model.encoder, self.device, self.amp_dtype, model.channels_last)
        return iter_slide_features(
            self.source,
            slide_ids,
            encode,
            scale=config.scales["main"],
            chunk_size=config.eval_patch_batch_size,
            image_size=config.eval_size,
            channel_order=config.channel_order,
            num_workers=self.num_workers,
        )

    def distinct_bag_features(self, bags: Sequence[Bag]) -> Iterator[tuple[tuple, torch.Tensor]]:
        """(slide_ids, pooled features) of each distinct training bag (oversampling repeats
        bags), encoded once by the current model; counted in `patches_scored`."""
        distinct = list(dict.fromkeys(bag.slide_ids for bag in bags))
        slides = self.slide_features(self.model, [s for ids in distinct for s in ids])
        for slide_ids in distinct:
            features = torch.cat([next(slides)[1] for _ in slide_ids])
            self.patches_scored += len(features)
            yield slide_ids, features
        self.model.train()

    def infer(self, model: nn.Module, bags: Sequence[Sequence[str]]) -> Iterator[BagResult]:
        """The MIL on the features of every main-scale patch of each bag."""
        slides = self.slide_features(model, [slide_id for members in bags for slide_id in members])
        for members in bags:
            parts = [next(slides) for _ in members]
            features = torch.cat([features for _, features, _ in parts]).to(self.device)
            with torch.no_grad(), autocast(self.device, self.amp_dtype):
                output = model.mil(features.unsqueeze(0))
            yield BagResult(output, [coords for _, _, coords in parts], features)


def step_batch(batch: dict) -> dict:
    """A collated batch as the trainer takes it."""
    return {"inputs": batch["images"], "label": batch["label"], "event": batch["event"]}


class TeacherPicks:
    """Picker of `PickedBags` that returns the teacher's choice for a bag, set just before the
    bag is read; fewer than `n_patches` are padded with duplicates drawn uniformly."""

    def __init__(self, n_patches: int) -> None:
        self.n_patches = n_patches
        self.picks: dict[int, np.ndarray] = {}

    def __call__(self, index: int, rng: np.random.Generator) -> np.ndarray:
        picks = self.picks.pop(index)
        missing = self.n_patches - len(picks)
        return np.concatenate([picks, picks[rng.integers(0, len(picks), size=max(missing, 0))]])


class E2ETask(PatchTask):
    """Bags are samples of a patch store in training (`sampling`: MRIS, random, regional or
    attention) and all main-scale patches in inference; the model is encoder + MIL
    (`E2EModel`)."""

    kind = "e2e"
    settings_type = E2ESettings

    def wrap(self, encoder: nn.Module, mil: nn.Module, n_classes: int) -> E2EModel:
        config = self.config
        return E2EModel(
            encoder, mil, config.patch_batch_size, config.channels_last, config.freeze_encoder
        )

    def batches(self, bags: Sequence[Bag], epoch: int, steps: list[list[int]]) -> Iterator[dict]:
        config = self.config
        if config.sampling == "attention":
            return self.attention_batches(bags, epoch, steps)
        dataset = MrisBags(
            self.source,
            bags,
            config.n_patches,
            None if config.sampling == "random" else config.scale_ratio,
            config.scales,
            config.seed,
            config.channel_order,
            regions=config.regions if config.sampling == "regional" else None,
        )
        return self.load(dataset, epoch, steps)

    def attention_batches(
        self, bags: Sequence[Bag], epoch: int, steps: list[list[int]]
    ) -> Iterator[dict]:
        """Attention sampling (paper Sec. 4.3): before each step the EMA teacher (as updated by
        the previous step) encodes ALL main-scale patches of the step's bags without gradient
        and its heads vote for the `n_patches` kept (`vote_top_k`); those are read and
        augmented as any training bag. Runs in this process: the teacher changes every step.
        """
        if self.ema is None:
            raise ConfigError(ATTENTION_NEEDS_EMA)
        config = self.config
        picker = TeacherPicks(config.n_patches)
        dataset = PickedBags(
            self.source, bags, picker, config.scales["main"], config.seed, config.channel_order
        )
        dataset.set_epoch(epoch)
        collate = self.collate()
        for step in steps:
            # An oversampled bag may appear twice in a step: the teacher scores it once.
            distinct = list(dict.fromkeys(bags[index].slide_ids for index in step))
            picks = {}
            for slide_ids, result in zip(
                distinct, self.infer(self.ema.module, distinct), strict=True
            ):
                if result.output.attention is None:
                    raise ValueError(
                        f"sampling 'attention' needs a MIL with attention, not {config.mil}"
                    )
                self.patches_scored += len(result.features)
                attention = result.output.attention[0].float().cpu().numpy()
                picks[slide_ids] = vote_top_k(attention, config.n_patches)
            for index in step:
                picker.picks[index] = picks[bags[index].slide_ids]
            yield step_batch(collate([dataset[index] for index in step]))
