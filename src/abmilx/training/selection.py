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
