"""Classification and survival metrics on plain arrays (no torch, no sklearn in the hot path).

Bootstrapping calls these a thousand times per run, so they work from one confusion matrix and
one rank transform instead of sklearn's validated functions; the tests compare them with
sklearn and lifelines. An undefined value (e.g. AUC when a resample holds one class only) is
NaN, which `bootstrap` counts as skipped.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy.stats import rankdata

RISK_TIE_TOLERANCE = 1e-8  # as sksurv's concordance_index_censored(tied_tol=1e-8)


def softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits - logits.max(axis=1, keepdims=True)
    exp = np.exp(shifted)
    return exp / exp.sum(axis=1, keepdims=True)


def survival_curve(logits: np.ndarray) -> np.ndarray:
    """S_k = prod_{j<=k} (1 - sigmoid(hazard logit_j)), the discrete-time NLL-surv head."""
    hazards = 1.0 / (1.0 + np.exp(-np.asarray(logits, dtype=float)))
    return np.cumprod(1.0 - hazards, axis=1)


def survival_risk(logits: np.ndarray) -> np.ndarray:
    """Risk = -sum_k S_k (official): higher risk means shorter expected survival."""
    return -survival_curve(logits).sum(axis=1)


def median_survival_bin(logits: np.ndarray) -> np.ndarray:
    """Predicted time bin: the first bin whose survival S_k falls below 0.5 (else the last)."""
    survival = survival_curve(logits)
    return np.minimum((survival >= 0.5).sum(axis=1), survival.shape[1] - 1)


def binary_auc(positive: np.ndarray, score: np.ndarray) -> float:
    """ROC AUC by the rank-sum (Mann-Whitney) formula, ties counted half; NaN if one class."""
    positive = np.asarray(positive, dtype=bool)
    n_pos = int(positive.sum())
    n_neg = len(positive) - n_pos
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    ranks = rankdata(score)
    return float((ranks[positive].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def _class_indices(y_true: Sequence, classes: Sequence[str]) -> np.ndarray:
    y = np.asarray(y_true)
    if y.dtype.kind in "iu":
        if len(y) and (y.min() < 0 or y.max() >= len(classes)):
            raise ValueError(f"class index out of range 0..{len(classes) - 1}")
        return y.astype(int)
    index = {str(c): i for i, c in enumerate(classes)}
    unknown = sorted({str(v) for v in y} - set(index))
    if unknown:
        raise ValueError(f"labels {unknown} are not among the classes {list(classes)}")
    return np.array([index[str(v)] for v in y], dtype=int)


def classification_metrics(
    y_true: Sequence, probs: np.ndarray, classes: Sequence[str]
) -> dict[str, float]:
    """auc, balanced_accuracy, accuracy, f1_macro (+ qwk when there are more than 2 classes).

    y_true: class indices or class names. probs: (n, C) probabilities in `classes` order.
    auc: binary AUC of class 1 for C = 2; else macro one-vs-rest over the classes present in
    y_true (equal to sklearn's ovr macro when all are present). balanced_accuracy: mean recall
    over classes present in y_true (the official "Acc"). accuracy: top-1 (micro). f1_macro:
    mean F1 over classes in y_true or predicted. qwk: quadratic weighted kappa over all classes
    in their given order (for ordered grades).
    """
    n_classes = len(classes)
    probs = np.asarray(probs, dtype=float)
    if probs.ndim != 2 or probs.shape[1] != n_classes:
        raise ValueError(f"probs must have shape (n, {n_classes}), got {probs.shape}")
    y = _class_indices(y_true, classes)
    if len(y) != len(probs):
        raise ValueError(f"{len(y)} labels but {len(probs)} rows of probabilities")
    predicted = probs.argmax(axis=1)
    confusion = np.bincount(y * n_classes + predicted, minlength=n_classes**2).reshape(
        n_classes, n_classes
    )
    true_counts = confusion.sum(axis=1)
    predicted_counts = confusion.sum(axis=0)
    hits = np.diag(confusion)
    present = true_counts > 0

    if n_classes == 2:
        auc = binary_auc(y == 1, probs[:, 1])
    else:
        per_class = [binary_auc(y == c, probs[:, c]) for c in np.flatnonzero(present)]
        per_class = [a for a in per_class if not np.isnan(a)]
        auc = float(np.mean(per_class)) if len(per_class) >= 2 else float("nan")

    with np.errstate(invalid="ignore", divide="ignore"):
        recall = hits / true_counts
        f1 = 2 * hits / (true_counts + predicted_counts)
    seen = present | (predicted_counts > 0)
    metrics = {
        "auc": auc,
        "balanced_accuracy": float(recall[present].mean()) if present.any() else float("nan"),
        "accuracy": float(hits.sum() / len(y)) if len(y) else float("nan"),
        "f1_macro": float(f1[seen].mean()) if seen.any() else float("nan"),
    }
    if n_classes > 2:
        metrics["qwk"] = quadratic_weighted_kappa(confusion)
    return metrics


def quadratic_weighted_kappa(confusion: np.ndarray) -> float:
    """Cohen's kappa with weights (i - j)^2 from a C x C confusion matrix (rows = truth)."""
    n_classes = confusion.shape[0]
    total = confusion.sum()
    if total == 0:
        return float("nan")
    grid = np.arange(n_classes)
    weights = (grid[:, None] - grid[None, :]) ** 2
    expected = np.outer(confusion.sum(axis=1), confusion.sum(axis=0)) / total
    denominator = (weights * expected).sum()
    if denominator == 0:
        return float("nan")
    return float(1.0 - (weights * confusion).sum() / denominator)


def c_index(time: Sequence[float], event: Sequence[int], risk: Sequence[float]) -> float:
    """Harrell's C: the share of comparable pairs where the higher risk has the earlier event.

    A pair (i, j) is comparable when i has an event and t_i < t_j, or t_i == t_j and j is
    censored (sksurv/lifelines convention). Risk ties (within 1e-8) count one half. NaN when
    no pair is comparable (e.g. no event). Note: lifelines' concordance_index expects a
    predicted survival time, i.e. -risk.
    """
    time = np.asarray(time, dtype=float)
    event = np.asarray(event).astype(bool)
    risk = np.asarray(risk, dtype=float)
    if not len(time) == len(event) == len(risk):
        raise ValueError("time, event and risk must have the same length")
    concordant = 0.0
    comparable = 0
    block = 512  # bound memory: block x n boolean matrices
    event_rows = np.flatnonzero(event)
    for start in range(0, len(event_rows), block):
        rows = event_rows[start : start + block]
        t_i = time[rows, None]
        pairs = (t_i < time[None, :]) | ((t_i == time[None, :]) & ~event[None, :])
        difference = risk[rows, None] - risk[None, :]
        tie = np.abs(difference) <= RISK_TIE_TOLERANCE
        comparable += int(pairs.sum())
        concordant += float((pairs & (difference > 0) & ~tie).sum()) + 0.5 * float(
            (pairs & tie).sum()
        )
    if comparable == 0:
        return float("nan")
    return concordant / comparable
