"""Classification and survival metrics on plain arrays (no torch, no sklearn in the hot path).

Every metric is computed for a batch of case weights at once: a bootstrap resample is a vector
of how often each case was drawn, so 1000 resamples are one (1000, n) weight matrix and a few
array operations over it instead of 1000 Python calls. The plain functions are the same code
with a single weight vector of ones. The tests compare them with sklearn and lifelines. An
undefined value (e.g. AUC when a resample holds one class only) is NaN, which `bootstrap`
counts as skipped.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

RISK_TIE_TOLERANCE = 1e-8  # as sksurv's concordance_index_censored(tied_tol=1e-8)
CHUNK = 128  # resamples per array operation: bounds memory at CHUNK x (n log n) floats


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


def _ones(n: int) -> np.ndarray:
    return np.ones((1, n))


def _check_weights(weights: np.ndarray, n: int) -> np.ndarray:
    weights = np.asarray(weights, dtype=float)
    if weights.ndim != 2 or weights.shape[1] != n:
        raise ValueError(f"weights must have shape (resamples, {n}), got {weights.shape}")
    return weights


def _accumulate_rows(values: np.ndarray) -> None:
    """Cumulative sum down the rows, in place (twice as fast as np.cumsum(axis=0) here)."""
    np.add.accumulate(values, axis=0, out=values)


def _dense_ranks(values: np.ndarray, tolerance: float = 0.0) -> np.ndarray:
    """0-based ranks where equal values (neighbours within `tolerance`) share one rank."""
    order = np.argsort(values, kind="stable")
    starts = np.ones(len(values), dtype=bool)
    starts[1:] = np.diff(values[order]) > tolerance
    ranks = np.empty(len(values), dtype=np.int64)
    ranks[order] = np.cumsum(starts) - 1
    return ranks


def _auc(positive: np.ndarray, score: np.ndarray, by_case: np.ndarray) -> np.ndarray:
    """Weighted AUC of each column of `by_case` (n, B); see `weighted_auc`."""
    if not len(positive):
        return np.full(by_case.shape[1], np.nan)
    order = np.argsort(score, kind="stable")
    bounds = np.flatnonzero(np.concatenate([[True], np.diff(score[order]) > 0, [True]]))
    sizes = np.diff(bounds)  # tied scores form one level; per sorted case, its level's bounds:
    level_start, level_end = np.repeat(bounds[:-1], sizes), np.repeat(bounds[1:], sizes)
    weights = by_case[order]
    side = positive[order]
    below = np.empty((len(order) + 1, weights.shape[1]))  # negatives' weight below each rank
    below[0] = 0.0
    np.multiply(weights, ~side[:, None], out=below[1:])
    _accumulate_rows(below[1:])
    rows = np.flatnonzero(side)
    start, end = below[level_start[rows]], below[level_end[rows]]
    pairs = (weights[rows] * (start + end)).sum(axis=0) / 2  # below + tied / 2
    total = weights[rows].sum(axis=0) * below[-1]
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(total > 0, pairs / total, np.nan)


def weighted_auc(positive: np.ndarray, score: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """ROC AUC per weight row (B, n): P(score_pos > score_neg) + P(tie) / 2 over weighted pairs.

    One sort of the scores serves every row; NaN where a row has no positive or no negative.
    """
    positive = np.asarray(positive, dtype=bool)
    weights = _check_weights(weights, len(positive))
    return _auc(positive, np.asarray(score, dtype=float), np.ascontiguousarray(weights.T))


def binary_auc(positive: np.ndarray, score: np.ndarray) -> float:
    """ROC AUC by the rank-sum (Mann-Whitney) formula, ties counted half; NaN if one class."""
    return float(weighted_auc(positive, score, _ones(len(positive)))[0])


def _class_indices(y_true: Sequence, classes: Sequence[str]) -> np.ndarray:
    y = np.asarray(y_true)
    if y.dtype.kind in "iu":
        if len(y) and (y.min() < 0 or y.max() >= len(classes)):
            raise ValueError(f"class index out of range 0..{len(classes) - 1}")
        return y.astype(int)
    names = np.asarray([str(c) for c in classes])
    values, inverse = np.unique(y.astype(str), return_inverse=True)
    unknown = sorted(set(values.tolist()) - set(names.tolist()))
    if unknown:
        raise ValueError(f"labels {unknown} are not among the classes {list(classes)}")
    position = {name: i for i, name in enumerate(names.tolist())}
    return np.array([position[v] for v in values.tolist()], dtype=int)[inverse.reshape(-1)]


def _quadratic_weighted_kappa(confusion: np.ndarray) -> np.ndarray:
    """QWK of each (C, C) matrix of a (B, C, C) stack (rows = truth); NaN when undefined."""
    n_classes = confusion.shape[-1]
    total = confusion.sum(axis=(1, 2))
    grid = np.arange(n_classes)
    penalty = (grid[:, None] - grid[None, :]) ** 2
    with np.errstate(invalid="ignore", divide="ignore"):
        expected = confusion.sum(axis=2)[:, :, None] * confusion.sum(axis=1)[:, None, :]
        expected = expected / total[:, None, None]
        denominator = (penalty * expected).sum(axis=(1, 2))
        kappa = 1.0 - (penalty * confusion).sum(axis=(1, 2)) / denominator
    return np.where((total > 0) & (denominator != 0), kappa, np.nan)


def quadratic_weighted_kappa(confusion: np.ndarray) -> float:
    """Cohen's kappa with weights (i - j)^2 from a C x C confusion matrix (rows = truth)."""
    return float(_quadratic_weighted_kappa(np.asarray(confusion, dtype=float)[None])[0])


def weighted_classification_metrics(
    y_true: Sequence, probs: np.ndarray, classes: Sequence[str], weights: np.ndarray
) -> dict[str, np.ndarray]:
    """`classification_metrics` for each row of case weights (B, n): {name: (B,) values}."""
    n_classes = len(classes)
    probs = np.asarray(probs, dtype=float)
    if probs.ndim != 2 or probs.shape[1] != n_classes:
        raise ValueError(f"probs must have shape (n, {n_classes}), got {probs.shape}")
    y = _class_indices(y_true, classes)
    if len(y) != len(probs):
        raise ValueError(f"{len(y)} labels but {len(probs)} rows of probabilities")
    weights = _check_weights(weights, len(y))
    predicted = probs.argmax(axis=1) if len(probs) else np.zeros(0, dtype=int)
    cells = np.zeros((len(y), n_classes * n_classes))
    cells[np.arange(len(y)), y * n_classes + predicted] = 1.0
    confusion = (weights @ cells).reshape(-1, n_classes, n_classes)
    true_counts = confusion.sum(axis=2)
    predicted_counts = confusion.sum(axis=1)
    hits = np.diagonal(confusion, axis1=1, axis2=2)
    present = true_counts > 0
    seen = present | (predicted_counts > 0)

    by_case = np.ascontiguousarray(weights.T)
    if n_classes == 2:
        auc = _auc(y == 1, probs[:, 1], by_case)
    else:
        # one-vs-rest over the classes present; NaN for absent ones, so nan-aware means
        per_class = np.stack([_auc(y == c, probs[:, c], by_case) for c in range(n_classes)])
        valid = np.isfinite(per_class)
        auc = np.where(valid, per_class, 0.0).sum(axis=0) / np.maximum(valid.sum(axis=0), 1)
        auc = np.where(valid.sum(axis=0) >= 2, auc, np.nan)

    with np.errstate(invalid="ignore", divide="ignore"):
        recall = np.where(present, hits / true_counts, 0.0)
        f1 = np.where(seen, 2 * hits / (true_counts + predicted_counts), 0.0)
        metrics = {
            "auc": auc,
            "balanced_accuracy": recall.sum(axis=1) / present.sum(axis=1),
            "accuracy": hits.sum(axis=1) / true_counts.sum(axis=1),
            "f1_macro": f1.sum(axis=1) / seen.sum(axis=1),
        }
    if n_classes > 2:
        metrics["qwk"] = _quadratic_weighted_kappa(confusion)
    return metrics


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
    n = len(np.asarray(probs))
    batch = weighted_classification_metrics(y_true, probs, classes, _ones(n))
    return {name: float(values[0]) for name, values in batch.items()}


class _ConcordancePairs:
    """Harrell's C for many weight vectors over one fixed set of (time, event, risk).

    Sort the cases by time (events before censored cases at the same time): the cases that
    event i is comparable with are then a suffix, positions >= first_after[i]. The number of
    those with lower risk is split by the highest bit where the two risk ranks differ (a wavelet
    tree): on level b, the suffix cases whose rank has bit b = 0 and the same higher bits as
    i's, which lie in one contiguous run once sorted by (higher bits, position). So every count
    is a difference of two prefix sums of weights, O(n log n) ranges in all, built once.
    """

    def __init__(self, time: np.ndarray, event: np.ndarray, risk: np.ndarray) -> None:
        n = len(time)
        self.n = n
        key = _dense_ranks(time) * 2 + ~event  # time order, events first on tied times
        order = np.argsort(key, kind="stable")
        position = np.empty(n, dtype=np.int64)
        position[order] = np.arange(n)
        first_after = np.searchsorted(key[order], key - ~event + 1, side="left")
        rank = _dense_ranks(risk, RISK_TIE_TOLERANCE)
        everyone = np.arange(n)
        events = np.flatnonzero(event)
        self._gather: list[np.ndarray] = []
        self._starts: list[np.ndarray] = []
        self._ends: list[np.ndarray] = []
        self._owners: list[np.ndarray] = []
        self._kind: list[np.ndarray] = []  # 0 comparable, 1 tied risk, 2 lower risk
        self._offset = 0

        def add(points, point_group, queries, query_group, kind: int) -> None:
            keys = point_group * (n + 1) + position[points]
            sort = np.argsort(keys, kind="stable")
            keys = keys[sort]
            start = np.searchsorted(keys, query_group * (n + 1) + first_after[queries], "left")
            end = np.searchsorted(keys, query_group * (n + 1) + n, "right")
            self._gather.append(points[sort])
            self._starts.append(start + self._offset)
            self._ends.append(end + self._offset)
            self._owners.append(queries)
            self._kind.append(np.full(len(queries), kind))
            self._offset += len(points)

        zeros = np.zeros(n, dtype=np.int64)
        add(everyone, zeros, events, zeros[events], 0)
        add(everyone, rank, events, rank[events], 1)
        n_bits = max(1, int(rank.max()).bit_length()) if n else 1
        for bit in range(n_bits):
            low = ((rank >> bit) & 1) == 0
            points, queries = everyone[low], events[~low[events]]
            add(points, rank[points] >> (bit + 1), queries, rank[queries] >> (bit + 1), 2)
        self.gather = np.concatenate(self._gather)
        self.starts = np.concatenate(self._starts)
        self.ends = np.concatenate(self._ends)
        self.owners = np.concatenate(self._owners)
        kind = np.concatenate(self._kind)
        # columns: comparable pairs, twice the concordant pairs (ties count one)
        self.coefficients = np.stack([kind == 0, (kind == 1) + 2.0 * (kind == 2)], axis=1)

    def __call__(self, weights: np.ndarray) -> np.ndarray:
        out = np.empty(len(weights))
        by_case = np.ascontiguousarray(weights.T)  # (n, B): row gathers are cheap copies
        for first in range(0, len(weights), CHUNK):
            w = by_case[:, first : first + CHUNK]
            prefix = np.empty((len(self.gather) + 1, w.shape[1]))
            prefix[0] = 0.0
            prefix[1:] = np.take(w, self.gather, axis=0)
            _accumulate_rows(prefix[1:])
            sums = (prefix[self.ends] - prefix[self.starts]) * w[self.owners]
            comparable, concordant2 = self.coefficients.T @ sums
            with np.errstate(invalid="ignore", divide="ignore"):
                out[first : first + CHUNK] = np.where(
                    comparable > 0, concordant2 / (2 * comparable), np.nan
                )
        return out


def weighted_c_index(
    time: Sequence[float], event: Sequence[int], risk: Sequence[float], weights: np.ndarray
) -> np.ndarray:
    """`c_index` for each row of case weights (B, n), a case drawn k times counting k times."""
    time = np.asarray(time, dtype=float)
    event = np.asarray(event).astype(bool)
    risk = np.asarray(risk, dtype=float)
    if not len(time) == len(event) == len(risk):
        raise ValueError("time, event and risk must have the same length")
    weights = _check_weights(weights, len(time))
    if not event.any():
        return np.full(len(weights), np.nan)
    return _ConcordancePairs(time, event, risk)(weights)


def c_index(time: Sequence[float], event: Sequence[int], risk: Sequence[float]) -> float:
    """Harrell's C: the share of comparable pairs where the higher risk has the earlier event.

    A pair (i, j) is comparable when i has an event and t_i < t_j, or t_i == t_j and j is
    censored (sksurv/lifelines convention). Risk ties (within 1e-8 of a neighbour) count one
    half. NaN when no pair is comparable (e.g. no event). O(n log n). Note: lifelines'
    concordance_index expects a predicted survival time, i.e. -risk.
    """
    return float(weighted_c_index(time, event, risk, _ones(len(np.asarray(time))))[0])


class ClassificationScores:
    """Bootstrap metric of {"y": labels, "probs": (n, C)}: per sample and per weight matrix."""

    def __init__(self, classes: Sequence[str]) -> None:
        self.classes = list(classes)

    def __call__(self, data: Mapping) -> dict[str, float]:
        return classification_metrics(data["y"], data["probs"], self.classes)

    def weighted(self, data: Mapping, weights: np.ndarray) -> dict[str, np.ndarray]:
        return weighted_classification_metrics(data["y"], data["probs"], self.classes, weights)


class SurvivalScores:
    """Bootstrap metric of {"time", "event", "risk"}: {"c_index": ...}."""

    def __call__(self, data: Mapping) -> dict[str, float]:
        return {"c_index": c_index(data["time"], data["event"], data["risk"])}

    def weighted(self, data: Mapping, weights: np.ndarray) -> dict[str, np.ndarray]:
        return {"c_index": weighted_c_index(data["time"], data["event"], data["risk"], weights)}
