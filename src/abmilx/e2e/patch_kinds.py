"""The kinds that train from the patch store (E2E and the C2C and FT baselines) and their one
training entry point, which `python -m abmilx.e2e` and the train_e2e rule serve. The Task classes
are imported here, not looked up by name, so that every kind's code is in the e2e command's code
digest: editing the C2C baseline reruns the runs of this stage, and nothing else."""

from __future__ import annotations

from pathlib import Path

from abmilx.e2e.c2c import C2CTask
from abmilx.e2e.ft import FTTask
from abmilx.e2e.train import E2ETask
from abmilx.training import trainer

PATCH_TASKS = {"e2e": E2ETask, "c2c": C2CTask, "ft": FTTask}
PATCH_KINDS = tuple(PATCH_TASKS)


def train(
    store: str | Path,
    splits: str | Path,
    fold: int,
    out_dir: str | Path,
    threads: int = 1,
    kind: str = "e2e",
    **settings,
) -> Path:
    """Train encoder + MIL of `kind` (one of PATCH_KINDS) on the fold (see
    `abmilx.training.trainer.train`); under torchrun (WORLD_SIZE > 1) it runs DDP and only rank 0
    writes files. Returns model.pt."""
    if kind not in PATCH_TASKS:
        raise ValueError(f"kind {kind!r} does not train from a patch store ({PATCH_KINDS})")
    return trainer.train(PATCH_TASKS[kind], store, splits, fold, out_dir, threads, **settings)
