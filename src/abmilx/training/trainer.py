"""The one trainer: seeding, device, AMP, EMA, DDP, resume, selection, logging and cost record.

A `Task` (two-stage, E2E, ...) supplies the data and the model; everything else happens here,
the same way for every kind. `train` is what `python -m abmilx.<kind> train` calls.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import logging
import math
import shutil
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from abmilx.progress import Progress
from abmilx.provenance import changed_parts, files_digest, fingerprint
from abmilx.runtime.devices import autocast, resolve_amp, set_threads
from abmilx.runtime.seeding import capture_rng_state, restore_rng_state, seed_everything
from abmilx.training.bags import load_fold, selection_bags
from abmilx.training.callbacks import SNAPSHOT_DIR, Callback, builtin_callbacks
from abmilx.training.distributed import Distributed, accumulation_plan, global_batches
from abmilx.training.ema import ModelEma
from abmilx.training.fingerprint import code_closure_digest, split_rows_digest
from abmilx.training.losses import bag_loss
from abmilx.training.optim import WarmupCosine, build_optimizer
from abmilx.training.runs import (
    RESUME_DIR,
    clear_resume,
    count_parameters,
    load_resume,
    peak_rss_mb,
    save_resume,
    save_run,
    write_train_log,
)
from abmilx.training.selection import EarlyStopping, selection_metric, selection_metric_name
from abmilx.training.task import Task

log = logging.getLogger(__name__)


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


class Trainer:
    """Trains one fold of one kind into `out_dir` (model.pt, train_log.csv, snapshots/).

    Resume state in `<out_dir>/.resume/` is written after every epoch together with a
    fingerprint of the run (settings, the fold's split rows, the data read, the content of the
    other files read such as encoder weights, the code, the world size); a state whose
    fingerprint differs is discarded with one log line naming what changed.
    """

    def __init__(
        self,
        task_type: type[Task],
        source: str | Path,
        splits: str | Path,
        fold: int,
        out_dir: str | Path,
        threads: int = 1,
        *,
        extra_callbacks: Sequence[Callback] = (),
        **settings,
    ) -> None:
        config = task_type.settings_type.from_settings(settings)
        if config.fold_seed_step:  # the official survival folds: seed + 100 k
            config = dataclasses.replace(config, seed=config.seed + config.fold_seed_step * fold)
        self.config, self.fold, self.out_dir = config, int(fold), Path(out_dir)
        set_threads(threads)
        self.ddp = Distributed(config.device)
        self.device = self.ddp.device
        seed_everything(config.seed)  # identical initial weights (and EMA copies) on every rank
        self.task = task_type(source, config, self.device, resolve_amp(config.amp, self.device))
        self.micro_batch, self.accumulation = accumulation_plan(
            self.task.batch_size(), self.task.micro_batch_size(), self.ddp.world
        )
        self.bags, self.classes = load_fold(
            splits, fold, config.task, config.classes, self.task.available(), str(source)
        )
        self.train_bags = self.bags.get("train", [])
        if not self.train_bags:
            raise ValueError(
                f"fold {fold} of {splits} has no training slides with data in {source}"
            )
        self.val_bags, self.selection = selection_bags(self.bags, config.selection)
        if self.selection == "val" and not self.val_bags:
            log.warning("selection 'val' requested but the fold has no val split: using 'last'")
            self.selection = "last"
        self.metric_name = selection_metric_name(config.task, len(self.classes))
        if config.early_stopping["patience"] is not None and not self.val_bags:
            log.warning("early stopping needs a validation set (selection val or test_official)")
        self.model = self.task.build_model(len(self.classes), pretrained=True)
        self.ema = ModelEma(self.model, config.ema) if config.ema else None
        self.task.ema = self.ema
        self.wrapped: nn.Module = self.model
        if self.ddp.world > 1:
            if config.sync_bn and self.device.type == "cuda":
                self.wrapped = nn.SyncBatchNorm.convert_sync_batchnorm(self.model)
            index = self.device.index if self.device.type == "cuda" else None
            self.wrapped = DistributedDataParallel(
                self.wrapped, device_ids=[index] if index is not None else None
            )
        self.optimizer = build_optimizer(
            [p for p in self.model.parameters() if p.requires_grad],  # not a frozen encoder
            config.optimizer,
            config.lr,
            config.weight_decay,
        )
        self.schedule = WarmupCosine(self.optimizer, config.lr, config.epochs, config.warmup_epochs)
        self.scaler = torch.amp.GradScaler(
            self.device.type, enabled=self.task.amp_dtype == torch.float16
        )
        self.fingerprint = fingerprint(
            {
                "settings": config.as_dict(),
                "split": split_rows_digest(splits, fold),
                "data": self.task.identity(),
                "files": files_digest(self.task.read_files()),
                "code": code_closure_digest(task_type.__module__),
                "world_size": self.ddp.world,
                "accumulation": self.accumulation,
            }
        )
        self.callbacks = [*builtin_callbacks(config.callbacks, self.bags), *extra_callbacks]
        self.patches_seen = 0  # instances through the model in training steps, this rank
        # Different dropout draws per rank from here on, as the official seed_torch(seed + rank).
        seed_everything(config.seed + self.ddp.rank)

    @property
    def is_main(self) -> bool:
        return self.ddp.is_main

    def _resume_state(self) -> dict | None:
        """The resume state if it belongs to this very run, else None (and it is removed)."""
        reason = ""
        try:
            state = load_resume(self.out_dir)
        except Exception as error:  # e.g. written by an incompatible version: never reused
            state, reason = None, f"unreadable: {error}"
        if state is not None and "fingerprint" not in state:
            state, reason = None, "written without a fingerprint"
        elif state is not None and (
            changed := changed_parts(state["fingerprint"], self.fingerprint)
        ):
            state, reason = None, f"{', '.join(changed)} changed since it was written"
        if reason:
            log.warning(
                "discarding resume state in %s (%s): training starts at epoch 0",
                self.out_dir / RESUME_DIR,
                reason,
            )
        self.ddp.barrier()
        if state is None and self.is_main:
            clear_resume(self.out_dir)
            shutil.rmtree(self.out_dir / SNAPSHOT_DIR, ignore_errors=True)
        return state

    def _train_epoch(self, epoch: int) -> float:
        config = self.config
        steps = global_batches(
            len(self.train_bags),
            self.task.batch_size(),
            self.ddp.world,
            self.ddp.rank,
            config.seed,
            epoch,
            self.accumulation,
        )
        progress = Progress(f"epoch {epoch + 1}/{config.epochs}", len(steps), "steps")
        losses = []
        self.model.train()
        passes = iter(self.task.batches(self.train_bags, epoch, [p for s in steps for p in s]))
        for step, step_passes in enumerate(steps):
            self.optimizer.zero_grad(set_to_none=True)
            losses.append(self._backward_step([next(passes) for _ in step_passes]))
            self.scaler.step(self.optimizer)
            self.scaler.update()
            if self.ema is not None:
                self.ema.update(self.model)
            progress.update(loss=f"{np.mean(losses):.4f}")
            for callback in self.callbacks:
                callback.on_step(self, epoch, step, losses[-1])
        return float(np.mean(self.ddp.gather(losses)))  # over every rank's steps

    def _backward_step(self, batches: list[dict]) -> float:
        """Gradients of one optimisation step from this rank's forward passes: each pass's
        loss over the number of passes, so that with DDP's mean over ranks the gradient is the
        mean over the global batch (ranks synchronise on the last pass only)."""
        config, device = self.config, self.device
        total = 0.0
        for index, batch in enumerate(batches):
            last = index == len(batches) - 1
            sync = last or not isinstance(self.wrapped, DistributedDataParallel)
            with contextlib.nullcontext() if sync else self.wrapped.no_sync():
                inputs = batch["inputs"].to(device, non_blocking=True)
                label = batch["label"].to(device)
                with autocast(device, self.task.amp_dtype):
                    output = self.task.forward(self.wrapped, inputs, label)
                loss = bag_loss(
                    config.task, output, label, batch["event"].to(device), config.aux_weight
                )
                self.scaler.scale(loss / len(batches)).backward()
            total += loss.item() / len(batches)
            self.patches_seen += int(inputs.shape[0] * inputs.shape[1])
        return total

    def validate(self, module: nn.Module) -> float:
        """Selection metric of `module` on the selection bags, split over ranks."""
        self.ddp.sync_from_main(module)
        mine = self.val_bags[self.ddp.rank :: self.ddp.world]
        results = self.task.infer_logged(
            module, [bag.slide_ids for bag in mine], "validation", summary=False
        )
        local = [
            (bag, result.output.logits.float().cpu().numpy()[0])
            for bag, result in zip(mine, results, strict=True)
        ]
        gathered = self.ddp.gather(local)
        return selection_metric(
            self.config.task,
            np.stack([logits for _, logits in gathered]),
            np.array([bag.label for bag, _ in gathered]),
            np.array([bag.time for bag, _ in gathered]),
            np.array([bag.event for bag, _ in gathered]),
        )

    def fit(self) -> FitResult:
        """Epochs [start, epochs), start from a matching resume state; returns the selection."""
        config, ema = self.config, self.ema
        best_main, best_ema = _Best(), _Best()
        stopper = EarlyStopping(**config.early_stopping)
        history: list[dict] = []
        train_seconds, start, stopped = 0.0, 0, False
        state = self._resume_state()
        if state is not None:
            self.model.load_state_dict(state["model"])
            self.optimizer.load_state_dict(state["optimizer"])
            if state.get("scaler") is not None:
                self.scaler.load_state_dict(state["scaler"])
            if ema is not None:
                ema.load_state_dict(state["ema"])
            best_main, best_ema = _Best(**state["best_main"]), _Best(**state["best_ema"])
            history, train_seconds = state["history"], state["train_seconds"]
            start, stopped = state["next_epoch"], state["stopped"]
            stopper.load_state_dict(state["early_stopping"])
            self.patches_seen = state["patches_seen"]
            self.task.patches_scored = state["patches_scored"]
            self.task.load_state_dict(state["task"])
            restore_rng_state(state["rng"])
            log.info("resuming from %s at epoch %d", self.out_dir, start)
        for callback in self.callbacks:
            callback.on_fit_start(self, start)
        for epoch in range(start, config.epochs):
            if stopped:
                break
            started = time.perf_counter()
            lr = self.schedule.set_epoch(epoch)
            for callback in self.callbacks:
                callback.on_epoch_start(self, epoch)
            row = {"epoch": epoch, "lr": lr, "train_loss": self._train_epoch(epoch)}
            if self.val_bags:
                row[f"val_{self.metric_name}"] = metric = self.validate(self.model)
                best_main.offer(metric, epoch, self.model)
                if ema is not None:
                    row[f"ema_val_{self.metric_name}"] = ema_metric = self.validate(ema.module)
                    best_ema.offer(ema_metric, epoch, ema.module)
                # The official runs watch the EMA teacher when they keep one (both_ema).
                watched = row[f"{'ema_' if ema is not None else ''}val_{self.metric_name}"]
                stopped = stopper.update(epoch, watched)
                if stopped:
                    log.info("early stopping after epoch %d (%s)", epoch + 1, stopper.state_dict())
            row["seconds"] = seconds = time.perf_counter() - started
            train_seconds += seconds
            history.append(row)
            log.info(
                "epoch %d/%d lr %.3g loss %.4f%s (%.1fs)",
                epoch + 1,
                config.epochs,
                lr,
                row["train_loss"],
                "".join(f" {k} {v:.4f}" for k, v in row.items() if "val_" in k),
                seconds,
            )
            for callback in self.callbacks:
                callback.on_epoch_end(self, epoch, row)
            if self.is_main:
                write_train_log(self.out_dir, history)
                save_resume(
                    self.out_dir,
                    {
                        "fingerprint": self.fingerprint,
                        "next_epoch": epoch + 1,
                        "stopped": stopped,
                        "early_stopping": stopper.state_dict(),
                        "model": self.model.state_dict(),
                        "optimizer": self.optimizer.state_dict(),
                        "scaler": self.scaler.state_dict() if self.scaler.is_enabled() else None,
                        "ema": ema.state_dict() if ema is not None else None,
                        "best_main": vars(best_main),
                        "best_ema": vars(best_ema),
                        "history": history,
                        "train_seconds": train_seconds,
                        "patches_seen": self.patches_seen,
                        "patches_scored": self.task.patches_scored,
                        "task": self.task.state_dict(),
                        "rng": capture_rng_state(),
                    },
                )
        return self._select(history, train_seconds, best_main, best_ema, stopped)

    def _select(
        self, history, train_seconds, best_main: _Best, best_ema: _Best, stopped: bool
    ) -> FitResult:
        last_epoch = history[-1]["epoch"] if history else self.config.epochs - 1
        val = self.selection == "val"
        chosen, chosen_epoch = _cpu_state(self.model), last_epoch
        if val and best_main.state is not None:
            chosen, chosen_epoch = best_main.state, best_main.epoch
        ema_state, ema_epoch = None, None
        if self.ema is not None:
            ema_state, ema_epoch = _cpu_state(self.ema.module), last_epoch
            if val and best_ema.state is not None:
                ema_state, ema_epoch = best_ema.state, best_ema.epoch
        summary = {
            "mode": self.selection,
            "metric": self.metric_name,
            "epoch": chosen_epoch,
            "last_epoch": last_epoch,
            "stopped_early": stopped,
        }
        if val:
            summary["value"] = best_main.metric if best_main.state is not None else None
        if self.ema is not None:
            summary["ema_epoch"] = ema_epoch
        return FitResult(chosen, ema_state, copy.deepcopy(history), train_seconds, summary)

    def run(self) -> Path:
        """fit, then write model.pt (main process) and remove the resume state."""
        result = self.fit()
        scored = sum(self.ddp.gather([self.task.patches_scored]))
        cost = {
            "train_seconds": result.train_seconds,
            "peak_rss_mb": peak_rss_mb(),
            "params": count_parameters(self.model),
            # every instance the model processed for training, all ranks: steps + scoring
            "patches_seen": sum(self.ddp.gather([self.patches_seen])) + scored,
            "patches_scored": scored,
        }
        if self.device.type == "cuda":
            cost["peak_gpu_mb"] = torch.cuda.max_memory_allocated(self.device) / 2**20
        path = self.out_dir / "model.pt"
        if self.is_main:
            save_run(
                path,
                kind=self.task.kind,
                task=self.config.task,
                classes=self.classes,
                settings={
                    **self.config.as_dict(),
                    **self.task.record(),
                    "fold": self.fold,
                    "world_size": self.ddp.world,
                    "process_batch_size": self.micro_batch,
                    "accumulation_steps": self.accumulation,
                },
                state_dict=result.state_dict,
                ema_state_dict=result.ema_state_dict,
                history=result.history,
                cost=cost,
                selection={**result.selection, "protocol": self.config.selection},
            )
            clear_resume(self.out_dir)
        for callback in self.callbacks:
            callback.on_fit_end(self, result)
        self.ddp.close()
        return path


def train(task_type: type[Task], *args, **kwargs) -> Path:
    """`Trainer(task_type, source, splits, fold, out_dir, threads, **settings).run()`: train one
    fold of a kind and write `<out_dir>/model.pt` and `train_log.csv`.

    `settings` are the kind's schema settings plus seed, task, classes and device; missing keys
    take the schema's defaults. Resumes from `<out_dir>/.resume/` when it belongs to this run.
    """
    return Trainer(task_type, *args, **kwargs).run()
