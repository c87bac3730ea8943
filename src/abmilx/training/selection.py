"""Validation metric used for model selection (docs/method.md); never computed on the test set."""

from __future__ import annotations

import math

import numpy as np
import torch

from abmilx.training.losses import risk_from_logits


def selection_metric_name(task: str, n_classes: int) -> str:
    """AUC for binary, balanced accuracy for multiclass classification, C-index for survival."""
    if task == "survival":
        return "cindex"
    return "auc" if n_classes == 2 else "balanced_accuracy"


def selection_metric(
    task: str,
    logits: np.ndarray,
    labels: np.ndarray,
    times: np.ndarray | None = None,
    events: np.ndarray | None = None,
) -> float:
    """The selection metric of one validation pass; NaN when it is undefined (one class only)."""
    # Imported here: lifelines and scikit-learn cost ~1.5 CPU-s to import, and every process
    # that imports the engine (prediction, evaluation) would pay it without validating.
    from lifelines.utils import concordance_index
    from sklearn.metrics import balanced_accuracy_score, roc_auc_score

    logits = np.asarray(logits, dtype=np.float64)
    if task == "survival":
        risk = risk_from_logits(torch.from_numpy(logits)).numpy()
        if events is None or times is None or np.sum(events) == 0:
            return math.nan
        # lifelines scores higher predictions as longer survival: pass the negated risk.
        return float(concordance_index(times, -risk, events))
    labels = np.asarray(labels, dtype=np.int64)
    if logits.shape[1] == 2:
        if len(np.unique(labels)) < 2:
            return math.nan
        return float(roc_auc_score(labels, logits[:, 1] - logits[:, 0]))
    return float(balanced_accuracy_score(labels, logits.argmax(axis=1)))


class EarlyStopping:
    """The official early-stopping rule (`EarlyStopping` in utils.py of the official code).

    A score below the best so far counts one; a score equal to or above it becomes the best and
    resets the count. Training stops once the count reaches `patience` at an epoch after
    `after_epoch` (the official `max_epoch`). NaN scores (a metric undefined on the set) are
    skipped. `patience` None never stops.
    """

    def __init__(self, patience: int | None, after_epoch: int = 0) -> None:
        self.patience = patience
        self.after_epoch = after_epoch
        self.best: float | None = None
        self.count = 0

    def update(self, epoch: int, score: float | None) -> bool:
        """Record the score of a (0-based) epoch; True when training should stop now."""
        if score is None or math.isnan(score):
            return False
        if self.best is None or score >= self.best:
            self.best, self.count = score, 0
            return False
        self.count += 1
        return (
            self.patience is not None and self.count >= self.patience and epoch > self.after_epoch
        )

    def state_dict(self) -> dict:
        return {"best": self.best, "count": self.count}

    def load_state_dict(self, state: dict) -> None:
        self.best, self.count = state["best"], state["count"]
