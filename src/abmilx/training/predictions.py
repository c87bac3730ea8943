"""Prediction with a trained run: logits per slide and attention with coordinates.

The engine's half: the caller hands over the Task class of the run's kind (`abmilx.kinds`
resolves it by name), so nothing here imports a kind."""

from __future__ import annotations

import logging
from collections.abc import Collection, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from torch import nn

from abmilx.runtime.devices import resolve_amp, resolve_device
from abmilx.training.task import Task

log = logging.getLogger(__name__)
WEIGHTS = {"main": "state_dict", "ema": "ema_state_dict"}


def predict_loaded(
    task: Task,
    model: nn.Module,
    n_classes: int,
    slide_ids: Sequence[str],
    case_ids: Sequence[str] | None = None,
) -> tuple[pd.DataFrame, dict[str, dict[str, np.ndarray]]]:
    """:func:`abmilx.kinds.predict` with the (task, model) of :func:`build_trained`, for callers that run the
    same model more than once (evaluation's timed pass, then its FLOP-counting pass)."""
    groups = group_slides(slide_ids, case_ids, available=task.available())
    results = task.infer_logged(model, [members for _, members in groups], "predict")
    rows, attention = [], {}
    for (case_id, members), result in zip(groups, results, strict=True):
        logits = result.output.logits.float().cpu().numpy()[0]
        collect_predictions(
            rows, attention, case_id, members, result.coords, logits, result.output.attention
        )
    frame = pd.DataFrame(rows, columns=prediction_columns(n_classes, case_ids is not None))
    return frame, attention


def build_trained(
    task_type: type[Task],
    checkpoint: Mapping[str, Any],
    source: str | Path,
    weights: str = "main",
    device: str = "auto",
    num_workers: int = 0,
) -> tuple[Task, nn.Module]:
    """(task, model) of a loaded checkpoint: ``task_type`` (the Task class of its kind, which the
    caller resolves: the engine knows no kinds) on ``source`` and the model with ``weights``."""
    if weights not in WEIGHTS:
        raise ValueError(f"weights must be one of {list(WEIGHTS)}, got {weights!r}")
    torch_device = resolve_device(device)
    config = task_type.settings_type.from_checkpoint(checkpoint["settings"])
    amp_dtype = resolve_amp(config.amp, torch_device)
    task = task_type(source, config, torch_device, amp_dtype, num_workers)
    model = task.build_model(len(checkpoint["classes"]), pretrained=False)
    model.load_state_dict(checkpoint[WEIGHTS[weights]])
    # Inference needs no gradients; parameters that do not ask for one also keep torch's FLOP
    # counter from hooking a parameter a MIL passes to a submodule (QAMIL's queries).
    model.requires_grad_(False)
    return task, model


def group_slides(
    slide_ids: Sequence[str], case_ids: Sequence[str] | None, available: Collection[str]
) -> list[tuple[str | None, list[str]]]:
    """[(case_id or None, slide_ids of the bag)], keeping the first-seen order."""
    if case_ids is not None and len(case_ids) != len(slide_ids):
        raise ValueError("case_ids must have one entry per slide id")
    skipped = [slide_id for slide_id in slide_ids if slide_id not in available]
    if skipped:
        log.warning(
            "%d slides have no patches/features and are skipped: %s", len(skipped), skipped[:10]
        )
    groups: dict[str, list[str]] = {}
    for position, slide_id in enumerate(slide_ids):
        if slide_id in available:
            key = case_ids[position] if case_ids is not None else slide_id
            groups.setdefault(key, []).append(slide_id)
    if case_ids is None:
        return [(None, members) for members in groups.values()]
    return list(groups.items())


def prediction_columns(n_classes: int, with_case: bool) -> list[str]:
    """Columns of the predictions DataFrame: slide_id[, case_id], logit_0..logit_{C-1}."""
    return [
        "slide_id",
        *(["case_id"] if with_case else []),
        *(f"logit_{k}" for k in range(n_classes)),
    ]


def collect_predictions(rows, attention, case_id, members, coords, logits, bag_attention) -> None:
    """Append one row per member slide and split the bag's (1, H, N) attention by slide."""
    weights = None if bag_attention is None else bag_attention[0].float().cpu().numpy()
    offset = 0
    for slide_id, slide_coords in zip(members, coords, strict=True):
        rows.append([slide_id, *([case_id] if case_id is not None else []), *logits.tolist()])
        n = len(slide_coords)
        if weights is not None:
            attention[slide_id] = {
                "coords": slide_coords.astype(np.int64),
                "attention": weights[:, offset : offset + n].astype(np.float32),
            }
        offset += n
