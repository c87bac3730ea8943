"""Shared training machinery: seeding, optimiser and schedule, losses, EMA, run files, epoch loop."""

from abmilx.training.ema import ModelEma
from abmilx.training.loop import FitResult, fit
from abmilx.training.losses import bag_loss, nll_survival_loss, risk_from_logits, task_loss
from abmilx.training.optim import WarmupCosine, build_optimizer
from abmilx.training.runs import (
    clear_resume,
    count_parameters,
    load_resume,
    load_run,
    peak_rss_mb,
    save_resume,
    save_run,
    write_train_log,
)
from abmilx.training.seeding import seed_everything, seed_worker
from abmilx.training.selection import selection_metric, selection_metric_name

__all__ = [
    "FitResult",
    "ModelEma",
    "WarmupCosine",
    "bag_loss",
    "build_optimizer",
    "clear_resume",
    "count_parameters",
    "fit",
    "load_resume",
    "load_run",
    "nll_survival_loss",
    "peak_rss_mb",
    "risk_from_logits",
    "save_resume",
    "save_run",
    "seed_everything",
    "seed_worker",
    "selection_metric",
    "selection_metric_name",
    "task_loss",
    "write_train_log",
]
