"""Metrics against sklearn and lifelines on small random examples."""

import numpy as np
import pytest
from lifelines.utils import concordance_index
from sklearn.metrics import (
    accuracy_score,
    balanced_accuracy_score,
    cohen_kappa_score,
    f1_score,
    roc_auc_score,
)

from abmilx.evaluation import (
    c_index,
    classification_metrics,
    survival_risk,
    weighted_c_index,
    weighted_classification_metrics,
)


@pytest.mark.parametrize("n_classes", [2, 3, 6])
def test_classification_metrics_match_sklearn(n_classes: int) -> None:
    rng = np.random.default_rng(n_classes)
    y = rng.integers(0, n_classes, 80)
    probs = rng.dirichlet(np.ones(n_classes), 80)
    probs[np.arange(40), y[:40]] += 0.5  # better than chance on half
    probs /= probs.sum(axis=1, keepdims=True)
    classes = [f"c{i}" for i in range(n_classes)]
    ours = classification_metrics(y, probs, classes)
    predicted = probs.argmax(axis=1)
    expected_auc = (
        roc_auc_score(y, probs[:, 1])
        if n_classes == 2
        else roc_auc_score(y, probs, multi_class="ovr", average="macro")
    )
    assert ours["auc"] == pytest.approx(expected_auc, abs=1e-12)
    assert ours["balanced_accuracy"] == pytest.approx(balanced_accuracy_score(y, predicted))
    assert ours["accuracy"] == pytest.approx(accuracy_score(y, predicted))
    assert ours["f1_macro"] == pytest.approx(f1_score(y, predicted, average="macro"))
    if n_classes > 2:
        expected_qwk = cohen_kappa_score(
            y, predicted, weights="quadratic", labels=list(range(n_classes))
        )
        assert ours["qwk"] == pytest.approx(expected_qwk)
    else:
        assert "qwk" not in ours
    by_name = classification_metrics(np.array(classes)[y], probs, classes)
    assert by_name == ours


def test_auc_counts_score_ties_as_half() -> None:
    y = np.array([0, 1, 0, 1])
    probs = np.array([[0.5, 0.5], [0.5, 0.5], [0.9, 0.1], [0.2, 0.8]])
    assert classification_metrics(y, probs, ["a", "b"])["auc"] == pytest.approx(
        roc_auc_score(y, probs[:, 1])
    )


def test_undefined_metrics_are_nan() -> None:
    probs = np.array([[0.7, 0.3], [0.6, 0.4]])
    metrics = classification_metrics([0, 0], probs, ["a", "b"])
    assert np.isnan(metrics["auc"])
    assert metrics["accuracy"] == 1.0
    assert np.isnan(c_index([1.0, 2.0], [0, 0], [0.1, 0.2]))  # no event: no comparable pair


def test_unknown_label_is_rejected() -> None:
    with pytest.raises(ValueError, match="not among the classes"):
        classification_metrics(["a", "z"], np.full((2, 2), 0.5), ["a", "b"])


def test_c_index_sign_and_lifelines() -> None:
    time = np.array([2.0, 4.0, 6.0, 8.0, 10.0])
    event = np.array([1, 1, 0, 1, 1])
    risk_ordered = -time  # earlier event = higher risk
    assert c_index(time, event, risk_ordered) == 1.0
    assert c_index(time, event, time) == 0.0

    rng = np.random.default_rng(0)
    time = rng.integers(1, 15, 60).astype(float)  # tied times on purpose
    event = rng.integers(0, 2, 60)
    risk = np.round(rng.normal(size=60), 1)  # tied risks on purpose
    assert c_index(time, event, risk) == pytest.approx(concordance_index(time, -risk, event))


def test_survival_risk_orders_by_hazard() -> None:
    low = np.full((1, 4), -3.0)
    high = np.full((1, 4), 3.0)
    risks = survival_risk(np.vstack([low, high]))
    assert risks[1] > risks[0]
    assert risks[0] == pytest.approx(-np.cumprod(np.full(4, 1 - 1 / (1 + np.exp(3.0)))).sum())


@pytest.mark.parametrize("n", [2, 7, 40, 300, 3000])
def test_c_index_equals_lifelines_on_tied_and_censored_data(n: int) -> None:
    rng = np.random.default_rng(n)
    for _ in range(20 if n < 1000 else 1):
        time = rng.integers(1, max(3, n // 4), n).astype(float)  # many tied times
        event = rng.random(n) < 0.6  # about 40 % censored
        risk = np.round(rng.normal(size=n), 1)  # many tied risks
        try:
            expected = concordance_index(time, -risk, event)
        except ZeroDivisionError:  # lifelines: no comparable pair
            assert np.isnan(c_index(time, event, risk))
            continue
        assert abs(c_index(time, event, risk) - expected) <= 1e-12


def test_weighted_metrics_equal_the_metrics_of_repeated_rows() -> None:
    rng = np.random.default_rng(3)
    n = 50
    time = rng.integers(1, 10, n).astype(float)
    event = rng.integers(0, 2, n)
    risk = np.round(rng.normal(size=n), 1)
    y = rng.integers(0, 3, n)
    probs = np.round(rng.dirichlet(np.ones(3), n), 1) + 1e-3  # tied scores on purpose
    counts = rng.integers(0, 3, (4, n))
    c_weighted = weighted_c_index(time, event, risk, counts)
    cls_weighted = weighted_classification_metrics(y, probs, ["a", "b", "c"], counts)
    for b, row in enumerate(counts):
        rows = np.repeat(np.arange(n), row)
        assert c_weighted[b] == pytest.approx(
            c_index(time[rows], event[rows], risk[rows]), abs=1e-12
        )
        expected = classification_metrics(y[rows], probs[rows], ["a", "b", "c"])
        assert {k: v[b] for k, v in cls_weighted.items()} == pytest.approx(expected, abs=1e-12)
