"""The task protocol that the one trainer drives.

A kind (two-stage, E2E, the C2C and FT baselines) says where bags come from and how
its model turns a batch into a MILOutput; the trainer owns everything else. The kinds live in
their stages and register by name in `abmilx.kinds`; the engine never imports them.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from torch import nn

from abmilx.models import MILOutput
from abmilx.progress import Progress
from abmilx.training.bags import Bag
from abmilx.training.settings import TrainSettings


@dataclass
class BagResult:
    """Inference on one bag: the MIL output, each member slide's coords, the instance features."""

    output: MILOutput
    coords: list[np.ndarray]
    features: torch.Tensor


class Task(ABC):
    """One kind of run: its settings type, data source, model and data path.

    `source` is what the kind reads (a feature folder, a patch store); `amp_dtype` is the
    autocast dtype the trainer chose; `num_workers` overrides the settings' loader workers.
    """

    kind: ClassVar[str]
    settings_type: ClassVar[type[TrainSettings]]

    def __init__(
        self,
        source: str | Path,
        config: TrainSettings,
        device: torch.device,
        amp_dtype: torch.dtype | None,
        num_workers: int | None = None,
    ) -> None:
        self.source = source
        self.config = config
        self.device = device
        self.amp_dtype = amp_dtype
        self.num_workers = num_workers

    @abstractmethod
    def available(self) -> set[str]:
        """Slide ids that have data (features or patches); the others are skipped."""

    @abstractmethod
    def identity(self) -> dict[str, Any]:
        """What identifies the data read (names, sizes, mtimes or a meta digest), for resume."""

    @abstractmethod
    def build_model(self, n_classes: int, *, pretrained: bool) -> nn.Module:
        """The model on self.device; `pretrained` loads initial weights (False: a checkpoint
        will be loaded into it)."""

    def read_files(self) -> list[str]:
        """Files the kind reads besides its data source and the split (encoder weights, user
        checkpoints): their content digests join the resume fingerprint, so a file replaced at
        the same path discards the resume state."""
        return []

    def record(self) -> dict[str, Any]:
        """Extra settings saved in model.pt (e.g. the feature dimension)."""
        return {}

    def batch_size(self) -> int:
        """Bags per optimisation step over all ranks (the global batch)."""
        return 1

    def micro_batch_size(self) -> int | None:
        """Bags one rank runs per forward; None: the global batch split over the ranks."""
        return None

    # The trainer's EMA teacher (a `ModelEma`, or None), for kinds that sample with it.
    ema: Any = None

    # Instances the kind ran through its encoder for training OUTSIDE the steps (no gradient:
    # re-clustering, mask scoring); the trainer adds them to the run's `patches_seen`.
    patches_scored: int = 0

    def state_dict(self) -> dict[str, Any]:
        """What the kind learned outside the model (clusters, masks), kept in the resume
        state so that a resumed run repeats an uninterrupted one."""
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore `state_dict()` from a resume state (kinds without state ignore it)."""
        del state

    @abstractmethod
    def batches(self, bags: Sequence[Bag], epoch: int, steps: list[list[int]]) -> Iterable[dict]:
        """One batch dict per entry of `steps` (indices into `bags`), with "inputs", "label"
        and "event" tensors (CPU is fine, the trainer moves them)."""

    @abstractmethod
    def forward(self, model: nn.Module, inputs: torch.Tensor, label: torch.Tensor) -> MILOutput:
        """Training forward of `model` (possibly a DDP wrapper) on a batch."""

    @abstractmethod
    def infer(self, model: nn.Module, bags: Sequence[Sequence[str]]) -> Iterator[BagResult]:
        """Inference on every instance of each bag (a list of slide ids), in order."""

    def infer_logged(
        self, model: nn.Module, bags: Sequence[Sequence[str]], what: str, summary: bool = True
    ) -> Iterator[BagResult]:
        """`infer` with a progress line at least every 30 s (whole slides can take minutes),
        and a closing line when `summary`."""
        progress = Progress(what, len(bags), "bags")
        for result in self.infer(model, bags):
            progress.update()
            yield result
        if summary:
            progress.finish()
