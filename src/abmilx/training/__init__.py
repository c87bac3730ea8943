"""The training engine: one trainer for every run kind, its task protocol and registry, and
the shared pieces (seeding, optimiser and schedule, losses, EMA, run files, prediction)."""

from abmilx.training.callbacks import AttentionSnapshot, Callback, EmbeddingSnapshot
from abmilx.training.ema import ModelEma
from abmilx.training.losses import bag_loss, nll_survival_loss, risk_from_logits, task_loss
from abmilx.training.optim import WarmupCosine, build_optimizer
from abmilx.training.predictions import predict
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
from abmilx.training.settings import TrainSettings
from abmilx.training.task import KINDS, BagResult, Task, task_type
from abmilx.training.trainer import FitResult, Trainer, train

__all__ = [
    "KINDS",
    "AttentionSnapshot",
    "BagResult",
    "Callback",
    "EmbeddingSnapshot",
    "FitResult",
    "ModelEma",
    "Task",
    "TrainSettings",
    "Trainer",
    "WarmupCosine",
    "bag_loss",
    "build_optimizer",
    "clear_resume",
    "count_parameters",
    "load_resume",
    "load_run",
    "nll_survival_loss",
    "peak_rss_mb",
    "predict",
    "risk_from_logits",
    "save_resume",
    "save_run",
    "seed_everything",
    "seed_worker",
    "selection_metric",
    "selection_metric_name",
    "task_loss",
    "task_type",
    "train",
    "write_train_log",
]
