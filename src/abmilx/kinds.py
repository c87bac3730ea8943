"""Run kinds by name: the registry above the training engine and the kinds it runs.

A kind (two-stage, E2E, the C2C and FT baselines) is a `abmilx.training.task.Task` subclass in
its stage's package; the engine only knows the protocol. Whoever needs a kind by name (a
checkpoint's `kind`, the evaluation stage, the command line) resolves it here. The classes are
imported on first use, by name, so this module's static imports stay on the engine: a stage that
uses the registry does not take every kind's code into its code digest (a trained run's kind is
already in the digest of the rule that trained it). Adding a kind means one module with a `Task`
subclass and one entry in `_CLASSES`.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from torch import nn

from abmilx.runtime.devices import set_threads
from abmilx.training.predictions import WEIGHTS, build_trained, predict_loaded
from abmilx.training.runs import load_run
from abmilx.training.task import Task

_CLASSES = {
    "two_stage": "abmilx.two_stage.train:TwoStageTask",
    "e2e": "abmilx.e2e.train:E2ETask",
    "c2c": "abmilx.e2e.c2c:C2CTask",
    "ft": "abmilx.e2e.ft:FTTask",
}
KINDS = tuple(_CLASSES)


def task_type(kind: str) -> type[Task]:
    """The Task class of a run kind (a checkpoint's `kind`)."""
    if kind not in _CLASSES:
        raise ValueError(f"unknown run kind {kind!r}; known kinds: {', '.join(KINDS)}")
    module, _, name = _CLASSES[kind].partition(":")
    return getattr(importlib.import_module(module), name)


def load_trained(
    run: str | Path | Mapping[str, Any],
    source: str | Path,
    weights: str = "main",
    device: str = "auto",
    num_workers: int = 0,
) -> tuple[Task, nn.Module, Mapping[str, Any]]:
    """(task, model, checkpoint) of a trained run (its directory, model.pt, or the checkpoint
    already loaded): its kind's Task on ``source`` and the model with ``weights`` loaded."""
    if weights not in WEIGHTS:
        raise ValueError(f"weights must be one of {list(WEIGHTS)}, got {weights!r}")
    checkpoint = run if isinstance(run, Mapping) else load_run(run)
    if WEIGHTS[weights] not in checkpoint:
        where = "" if isinstance(run, Mapping) else f" {run}"
        raise ValueError(f"the {checkpoint['kind']} run{where} has no {weights} weights")
    kind = task_type(checkpoint["kind"])
    task, model = build_trained(kind, checkpoint, source, weights, device, num_workers)
    return task, model, checkpoint


def predict(
    run: str | Path | Mapping[str, Any],
    source: str | Path,
    slide_ids: Sequence[str],
    threads: int = 1,
    *,
    case_ids: Sequence[str] | None = None,
    weights: str = "main",
    device: str = "auto",
    num_workers: int = 0,
) -> tuple[pd.DataFrame, dict[str, dict[str, np.ndarray]]]:
    """Logits per slide and attention with coords, from a run directory, its model.pt, or the
    checkpoint already loaded from it (`load_run`).

    The kind (and so what `source` is: a feature folder, a patch store) comes from the
    checkpoint. Returns a DataFrame with `slide_id`, `logit_0..logit_{C-1}` (and `case_id` when
    given) and {slide_id: {"coords": (n, 2) int64, "attention": (H, n) float32}}. With
    `case_ids` (one per slide) the slides of a case form one bag, as in survival training: every
    slide of the case gets the case's logits and its own slice of the case's attention. Slides
    without data are skipped with a warning; models without attention give no attention entry.
    `weights` is "main" or "ema" (the EMA teacher, when the run kept one); `num_workers` are the
    loader processes of kinds that decode patches.
    """
    set_threads(threads)
    task, model, checkpoint = load_trained(run, source, weights, device, num_workers)
    return predict_loaded(task, model, len(checkpoint["classes"]), slide_ids, case_ids)
