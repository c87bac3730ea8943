"""The epoch loop shared by two-stage and E2E training: schedule, validation, selection, resume."""

from __future__ import annotations

import copy
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from abmilx.training.ema import ModelEma
from abmilx.training.optim import WarmupCosine
from abmilx.training.runs import load_resume, save_resume, write_train_log
from abmilx.training.seeding import capture_rng_state, restore_rng_state

log = logging.getLogger(__name__)

SELECTIONS = ("last", "val")


def _cpu_state(module: nn.Module) -> dict[str, torch.Tensor]:
    return {
        name: value.detach().to("cpu", copy=True) for name, value in module.state_dict().items()
    }


@dataclass
class _Best:
    """Best validation epoch seen so far for one model (main or EMA)."""

    metric: float = -math.inf
    epoch: int = -1
    state: dict | None = None

    def offer(self, metric: float | None, epoch: int, module: nn.Module) -> None:
        if metric is not None and not math.isnan(metric) and metric > self.metric:
            self.metric, self.epoch, self.state = metric, epoch, _cpu_state(module)


@dataclass
class FitResult:
    """Weights chosen by the selection rule, plus the per-epoch history."""

    state_dict: dict[str, torch.Tensor]
    ema_state_dict: dict[str, torch.Tensor] | None
    history: list[dict]
    train_seconds: float
    selection: dict = field(default_factory=dict)


def fit(
    *,
    out_dir: str | Path,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    schedule: WarmupCosine,
    epochs: int,
    train_epoch: Callable[[int], float],
    validate: Callable[[nn.Module], float] | None,
    selection: str = "last",
    metric_name: str = "metric",
    ema: ModelEma | None = None,
    scaler: torch.amp.GradScaler | None = None,
    is_main: bool = True,
) -> FitResult:
    """Run epochs [start, epochs), where start comes from `<out_dir>/.resume/` when present.

    `train_epoch(epoch)` trains one epoch and returns its mean loss; `validate(module)` returns the
    selection metric on the validation split (None when the fold has no val split, which forces
    selection "last"). Resume state (weights, optimiser, scaler, EMA, best weights, history and the
    global RNG states) is written after every epoch on the main process only.
    """
    if selection not in SELECTIONS:
        raise ValueError(f"selection must be one of {SELECTIONS}, got {selection!r}")
    if selection == "val" and validate is None:
        log.warning("selection 'val' requested but the fold has no val split: using 'last'")
        selection = "last"
    best_main, best_ema = _Best(), _Best()
    history: list[dict] = []
    train_seconds = 0.0
    start = 0
    state = load_resume(out_dir)
    if state is not None:
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        if scaler is not None and state.get("scaler") is not None:
            scaler.load_state_dict(state["scaler"])
        if ema is not None and state.get("ema") is not None:
            ema.load_state_dict(state["ema"])
        best_main = _Best(**state["best_main"])
        best_ema = _Best(**state["best_ema"])
        history = state["history"]
        train_seconds = state["train_seconds"]
        start = state["next_epoch"]
        restore_rng_state(state["rng"])
        log.info("resuming from %s at epoch %d", out_dir, start)

    for epoch in range(start, epochs):
        started = time.perf_counter()
        lr = schedule.set_epoch(epoch)
        model.train()
        train_loss = train_epoch(epoch)
        row = {"epoch": epoch, "lr": lr, "train_loss": train_loss}
        if validate is not None:
            metric = validate(model)
            row[f"val_{metric_name}"] = metric
            best_main.offer(metric, epoch, model)
            if ema is not None:
                ema_metric = validate(ema.module)
                row[f"ema_val_{metric_name}"] = ema_metric
                best_ema.offer(ema_metric, epoch, ema.module)
        seconds = time.perf_counter() - started
        row["seconds"] = seconds
        train_seconds += seconds
        history.append(row)
        log.info(
            "epoch %d/%d lr %.3g loss %.4f%s (%.1fs)",
            epoch + 1,
            epochs,
            lr,
            train_loss,
            "".join(f" {k} {v:.4f}" for k, v in row.items() if k.startswith(("val_", "ema_val_"))),
            seconds,
        )
        if is_main:
            write_train_log(out_dir, history)
            save_resume(
                out_dir,
                {
                    "next_epoch": epoch + 1,
                    "model": model.state_dict(),
                    "optimizer": optimizer.state_dict(),
                    "scaler": scaler.state_dict() if scaler is not None else None,
                    "ema": ema.state_dict() if ema is not None else None,
                    "best_main": vars(best_main),
                    "best_ema": vars(best_ema),
                    "history": history,
                    "train_seconds": train_seconds,
                    "rng": capture_rng_state(),
                },
            )

    last_epoch = epochs - 1
    chosen, chosen_epoch = _cpu_state(model), last_epoch
    if selection == "val" and best_main.state is not None:
        chosen, chosen_epoch = best_main.state, best_main.epoch
    ema_state, ema_epoch = None, None
    if ema is not None:
        ema_state, ema_epoch = _cpu_state(ema.module), last_epoch
        if selection == "val" and best_ema.state is not None:
            ema_state, ema_epoch = best_ema.state, best_ema.epoch
    summary = {"mode": selection, "metric": metric_name, "epoch": chosen_epoch}
    if selection == "val":
        summary["value"] = best_main.metric if best_main.state is not None else None
    if ema is not None:
        summary["ema_epoch"] = ema_epoch
    return FitResult(
        state_dict=chosen,
        ema_state_dict=ema_state,
        history=copy.deepcopy(history),
        train_seconds=train_seconds,
        selection=summary,
    )
