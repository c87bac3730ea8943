"""Bootstrap: seeded, same resamples for every metric, CI ordering, skipped resamples."""

import numpy as np
import pytest

from abmilx.evaluation import (
    ClassificationScores,
    SurvivalScores,
    bootstrap,
    classification_metrics,
)


def mean_of(data) -> float:
    return float(np.mean(data["x"]))


def test_deterministic_for_a_seed_and_different_for_another() -> None:
    data = {"x": np.random.default_rng(0).normal(size=50)}
    first = bootstrap(mean_of, data, n=200, seed=3)
    assert first == bootstrap(mean_of, data, n=200, seed=3)
    assert first["mean"] != bootstrap(mean_of, data, n=200, seed=4)["mean"]
    assert first["ci_low"] <= first["mean"] <= first["ci_high"]
    assert first["ci_low"] <= first["point"] <= first["ci_high"]
    assert first["n_boot"] == 200 and first["n"] == 50 and first["skipped"] == 0
    # the bootstrap std of a mean is about the standard error
    assert first["std"] == pytest.approx(np.std(data["x"], ddof=1) / np.sqrt(50), rel=0.25)


def test_every_metric_sees_the_same_resamples() -> None:
    data = {"x": np.arange(30, dtype=float)}
    both = bootstrap(lambda d: {"mean": mean_of(d), "twice": 2 * mean_of(d)}, data, n=100, seed=1)
    single = bootstrap(mean_of, data, n=100, seed=1)
    assert both["mean"] == single
    assert both["twice"]["mean"] == pytest.approx(2 * single["mean"])
    assert both["twice"]["ci_high"] == pytest.approx(2 * single["ci_high"])


def test_undefined_resamples_are_skipped_and_counted() -> None:
    y = np.array([0] * 9 + [1])
    probs = np.column_stack([1 - np.linspace(0, 1, 10), np.linspace(0, 1, 10)])
    summary = bootstrap(
        lambda d: classification_metrics(d["y"], d["probs"], ["a", "b"]),
        {"y": y, "probs": probs},
        n=300,
        seed=0,
    )
    auc = summary["auc"]
    # P(the single positive is never drawn) = 0.9 ** 10, about 35 %
    assert 60 < auc["skipped"] < 160
    assert summary["accuracy"]["skipped"] == 0
    assert auc["point"] == 1.0 and auc["mean"] == 1.0


def test_groups_are_drawn_whole() -> None:
    groups = np.array(["a", "a", "a", "b", "c", "c"])
    data = {"g": groups}
    seen = []

    def record(sample) -> float:
        values, counts = np.unique(sample["g"], return_counts=True)
        seen.append(dict(zip(values, counts, strict=True)))
        return 0.0

    summary = bootstrap(record, data, n=50, seed=2, groups=groups)
    assert summary["n"] == 3
    for drawn in seen:
        assert drawn.get("a", 0) % 3 == 0 and drawn.get("c", 0) % 2 == 0


def test_weighted_metrics_give_the_same_summary_as_per_resample_calls() -> None:
    rng = np.random.default_rng(5)
    n = 120
    groups = rng.integers(0, 80, n)  # cases with several slides, drawn whole
    classes = ["x", "y", "z"]
    data = {"y": rng.choice(classes, n), "probs": rng.dirichlet(np.ones(3), n)}
    scores = ClassificationScores(classes)
    fast = bootstrap(scores, data, n=60, seed=4, groups=groups)
    slow = bootstrap(lambda d: scores(d), data, n=60, seed=4, groups=groups)
    assert fast.keys() == slow.keys()
    for name in fast:
        assert fast[name] == pytest.approx(slow[name], abs=1e-12)
    survival = {
        "time": rng.integers(1, 20, n).astype(float),
        "event": rng.integers(0, 2, n),
        "risk": np.round(rng.normal(size=n), 1),
    }
    fast = bootstrap(SurvivalScores(), survival, n=60, seed=4)
    slow = bootstrap(lambda d: SurvivalScores()(d), survival, n=60, seed=4)
    assert fast["c_index"] == pytest.approx(slow["c_index"], abs=1e-12)
