"""Gradient of the first optimisation step of a toy kind with a global batch of 4 slides in
passes of 2: run as one process (2 passes accumulated) or under torchrun with 2 processes
(1 pass each). Writes the gradients (rank 0) to the file given as the only argument."""

import dataclasses
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from abmilx.models import create_mil
from abmilx.training.distributed import global_batches
from abmilx.training.settings import TrainSettings
from abmilx.training.task import Task
from abmilx.training.trainer import Trainer

GLOBAL_BATCH, PASS = 4, 2


@dataclasses.dataclass(kw_only=True)
class ToySettings(TrainSettings):
    definition = "two_stage_settings"


class ToyBatchTask(Task):
    """Bags of 5 four-dimensional instances from one .npz; several bags per pass."""

    kind = "toy"
    settings_type = ToySettings

    def __init__(self, source, config, device, amp_dtype, num_workers=None):
        super().__init__(source, config, device, amp_dtype, num_workers)
        with np.load(source) as data:
            self.data = {name: torch.from_numpy(data[name]) for name in data.files}

    def available(self):
        return set(self.data)

    def identity(self):
        return {}

    def batch_size(self):
        return GLOBAL_BATCH

    def micro_batch_size(self):
        return PASS

    def build_model(self, n_classes, *, pretrained):
        return create_mil("abmil", 4, n_classes, dropout=0.0)

    def batches(self, bags, epoch, steps):
        for indices in steps:
            chosen = [bags[i] for i in indices]
            yield {
                "inputs": torch.stack([self.data[b.slide_ids[0]] for b in chosen]),
                "label": torch.tensor([b.label for b in chosen]),
                "event": torch.ones(len(chosen)),
            }

    def forward(self, model, inputs, label):
        return model(inputs)

    def infer(self, model, bags):
        raise NotImplementedError  # never validates: selection is last


def write_data(folder: Path) -> None:
    rng = np.random.default_rng(0)
    labels = {f"t{k}": k % 2 for k in range(8)}
    arrays = {n: (rng.normal(size=(5, 4)) + y).astype(np.float32) for n, y in labels.items()}
    np.savez(folder / "toy.npz", **arrays)
    pd.DataFrame(
        {
            "slide_id": list(labels),
            "case_id": list(labels),
            "label": ["a" if y == 0 else "b" for y in labels.values()],
            "split": "train",
            "fold": 0,
        }
    ).to_csv(folder / "splits.csv", index=False)


def main(out: Path) -> None:
    folder = out.parent
    trainer = Trainer(
        ToyBatchTask, folder / "toy.npz", folder / "splits.csv", 0, folder / "run",
        classes=["a", "b"], device="cpu", seed=3,
    )  # fmt: skip
    world, rank = trainer.ddp.world, trainer.ddp.rank
    plan = global_batches(8, GLOBAL_BATCH, world, rank, 3, 0, trainer.accumulation)
    trainer.model.train()
    trainer.optimizer.zero_grad()
    trainer._backward_step(list(trainer.task.batches(trainer.train_bags, 0, plan[0])))
    if trainer.ddp.is_main:
        grads = {n: p.grad.clone() for n, p in trainer.model.named_parameters()}
        torch.save({"grads": grads, "accumulation": trainer.accumulation, "world": world}, out)
    trainer.ddp.close()


if __name__ == "__main__":
    main(Path(sys.argv[1]))
