"""Bootstrap of every evaluation metric: 1000 resamples of 2,000 cases, in seconds (limit 1 s).

The metric sets are those `abmilx.evaluation` bootstraps: binary classification (subtyping,
diagnosis), six ordered grades (with QWK), and the survival C-index. The verdict is on the
process's CPU seconds (single-threaded numpy: the wall time of an idle core); the wall time is
printed beside it, since on a shared machine it also counts other people's work.

Run: ``.venv/bin/python -m bench.bootstrap_metrics [--cases 2000] [--resamples 1000]``
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from abmilx.evaluation import ClassificationScores, SurvivalScores, bootstrap
from bench.common import verdict

LIMIT_S = 1.0


def metric_sets(n_cases: int, seed: int = 0) -> dict:
    """(metric, data, groups) per task, with tied scores, tied times and censoring."""
    rng = np.random.default_rng(seed)
    sets = {}
    for name, n_classes in (("classification, 2 classes", 2), ("grading, 6 classes", 6)):
        classes = [str(c) for c in range(n_classes)]
        y = rng.integers(0, n_classes, n_cases)
        logits = rng.normal(size=(n_cases, n_classes))
        logits[np.arange(n_cases), y] += 1.0
        probs = np.round(np.exp(logits) / np.exp(logits).sum(1, keepdims=True), 3)
        data = {"y": np.array(classes)[y], "probs": probs}
        sets[name] = (ClassificationScores(classes), data, np.arange(n_cases))
    survival = {
        "time": np.round(rng.exponential(40.0, n_cases)),
        "event": (rng.random(n_cases) < 0.7).astype(int),
        "risk": rng.normal(size=n_cases),
    }
    sets["survival, C-index"] = (SurvivalScores(), survival, None)
    return sets


def main(argv: list[str] | None = None) -> dict[str, float]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", type=int, default=2000)
    parser.add_argument("--resamples", type=int, default=1000)
    args = parser.parse_args(argv)
    seconds = {}
    for name, (metric, data, groups) in metric_sets(args.cases).items():
        start, wall = time.process_time(), time.perf_counter()
        summary = bootstrap(metric, data, n=args.resamples, seed=0, groups=groups)
        seconds[name] = time.process_time() - start
        wall = time.perf_counter() - wall
        label = f"{name} ({', '.join(summary)}; wall {wall:.2f} s)"
        verdict(label, seconds[name], LIMIT_S, at_least=False, unit=" CPU s")
    return seconds


if __name__ == "__main__":
    main()
