"""Two-stage MIL: an aggregator trained on offline patch features (batch 1, full bag)."""

from __future__ import annotations

import inspect
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import numpy as np
import torch
from torch import nn

from abmilx.integrity import load_torch_file
from abmilx.models import MILOutput, create_mil
from abmilx.provenance import files_digest
from abmilx.runtime.devices import autocast
from abmilx.training import trainer
from abmilx.training.bags import Bag
from abmilx.training.settings import TrainSettings
from abmilx.training.task import BagResult, Task


@dataclass(kw_only=True)
class TwoStageSettings(TrainSettings):
    """Settings of a two-stage run: the shared fields only (schema `$defs/two_stage_settings`)."""

    definition: ClassVar[str] = "two_stage_settings"


class FeatureBank:
    """Feature files of one directory, read on demand (a dataset may not fit in memory)."""

    def __init__(self, features_dir: str | Path) -> None:
        self.features_dir = Path(features_dir)
        self.paths = {path.stem: path for path in sorted(self.features_dir.glob("*.pt"))}
        if not self.paths:
            raise FileNotFoundError(f"no feature files (*.pt) in {self.features_dir}")

    def load(self, slide_id: str) -> dict:
        return load_torch_file(self.paths[slide_id])

    def bag(self, slide_ids: Sequence[str]) -> tuple[torch.Tensor, list[np.ndarray]]:
        """(N, d) features of the slides concatenated, and each slide's coords."""
        records = [self.load(slide_id) for slide_id in slide_ids]
        features = torch.cat([record["features"].float() for record in records])
        return features, [np.asarray(record["coords"], dtype=np.int64) for record in records]

    def in_dim(self) -> int:
        return int(self.load(next(iter(self.paths)))["features"].shape[1])


class TwoStageTask(Task):
    """Bags are feature files of a folder; the model is the MIL aggregator alone."""

    kind = "two_stage"
    settings_type = TwoStageSettings

    def __init__(self, source, config, device, amp_dtype, num_workers=None) -> None:
        super().__init__(source, config, device, amp_dtype, num_workers)
        self.bank = FeatureBank(source)

    def available(self) -> set[str]:
        return set(self.bank.paths)

    def identity(self) -> dict:
        digests = files_digest(self.bank.paths.values())  # content, not size and mtime
        return {name: digests[str(path)] for name, path in self.bank.paths.items()}

    def record(self) -> dict:
        return {"in_dim": self.bank.in_dim()}

    def build_model(self, n_classes: int, *, pretrained: bool) -> nn.Module:
        config = self.config
        mil = create_mil(config.mil, self.bank.in_dim(), n_classes, **config.mil_kwargs)
        return mil.to(self.device)

    def batches(self, bags: Sequence[Bag], epoch: int, steps: list[list[int]]) -> Iterator[dict]:
        for (index,) in steps:
            bag = bags[index]
            yield {
                "inputs": self.bank.bag(bag.slide_ids)[0].unsqueeze(0),
                "label": torch.tensor([bag.label]),
                "event": torch.tensor([bag.event]),
            }

    def forward(self, model: nn.Module, inputs: torch.Tensor, label: torch.Tensor) -> MILOutput:
        mil = getattr(model, "module", model)  # through a DDP wrapper, for its gradient hooks
        if "labels" in inspect.signature(mil.forward).parameters:
            return model(inputs, labels=label)
        return model(inputs)

    def infer(self, model: nn.Module, bags: Sequence[Sequence[str]]) -> Iterator[BagResult]:
        model.eval()
        for members in bags:
            features, coords = self.bank.bag(members)
            features = features.to(self.device)
            with torch.no_grad(), autocast(self.device, self.amp_dtype):
                output = model(features.unsqueeze(0))
            yield BagResult(output, coords, features)


def train(
    features_dir: str | Path,
    splits: str | Path,
    fold: int,
    out_dir: str | Path,
    threads: int = 1,
    **settings,
) -> Path:
    """Train on the fold's feature files (see `abmilx.training.trainer.train`); returns model.pt."""
    return trainer.train(TwoStageTask, features_dir, splits, fold, out_dir, threads, **settings)
