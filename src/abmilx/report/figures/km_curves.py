"""Figure ``km_curves``: survival of the test cases split by predicted risk, per run.

Each fold's test cases are split at that fold's median predicted risk (risk above the median:
high-risk group; the median case itself, for an odd count, goes low), since risks of different
folds' models are not on one scale; the groups are then pooled over folds. Kaplan-Meier curves
(lifelines' ``KaplanMeierFitter``) and the log-rank test between the two groups
(``lifelines.statistics.logrank_test``) are drawn, with the p-value printed on each panel.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from abmilx.report.figures.draw import finish, main

GROUPS = {"low": "tab:blue", "high": "tab:red"}


def risk_groups(predictions: pd.DataFrame) -> pd.Series:
    """'high' where the risk is above its fold's median, else 'low' (index of ``predictions``)."""
    folds = predictions["fold"] if "fold" in predictions else pd.Series(0, predictions.index)
    median = predictions.groupby(folds)["risk"].transform("median")
    return pd.Series(np.where(predictions["risk"] > median, "high", "low"), predictions.index)


def km_analysis(predictions: pd.DataFrame) -> dict[str, Any]:
    """Kaplan-Meier curve of each risk group and the log-rank test between them.

    ``predictions``: one row per case with ``time``, ``event`` (1 = death observed), ``risk``
    and optionally ``fold``. Returns {"groups": {group: {"time", "survival", "n", "events",
    "censored_times"}}, "p": float, "statistic": float} (p is NaN when a group is empty or no
    event was observed).
    """
    from lifelines import KaplanMeierFitter
    from lifelines.statistics import logrank_test

    missing = {"time", "event", "risk"} - set(predictions.columns)
    if missing:
        raise ValueError(f"survival predictions need columns {sorted(missing)}")
    groups = risk_groups(predictions)
    result: dict[str, Any] = {"groups": {}, "p": float("nan"), "statistic": float("nan")}
    for group in GROUPS:
        rows = predictions[groups == group]
        if rows.empty:
            continue
        fitter = KaplanMeierFitter().fit(rows["time"], rows["event"].astype(bool), label=group)
        curve = fitter.survival_function_[group]
        result["groups"][group] = {
            "time": curve.index.to_numpy(dtype=float),
            "survival": curve.to_numpy(dtype=float),
            "n": len(rows),
            "events": int(rows["event"].sum()),
            "censored_times": np.sort(rows.loc[rows["event"] == 0, "time"].to_numpy(float)),
        }
    low, high = (predictions[groups == group] for group in GROUPS)
    if len(low) and len(high) and predictions["event"].sum() > 0:
        test = logrank_test(low["time"], high["time"], low["event"], high["event"])
        result["p"], result["statistic"] = float(test.p_value), float(test.test_statistic)
    return result


def p_text(p: float) -> str:
    return "log-rank p not computable" if np.isnan(p) else f"log-rank p = {p:.3g}"


def render(settings: Mapping, out: Path) -> Path:
    runs = settings["runs"]
    figure = Figure(figsize=(4.2 * len(runs), 3.8))
    axes = figure.subplots(1, len(runs), squeeze=False)[0]
    for axis, run in zip(axes, runs, strict=True):
        predictions = pd.read_csv(Path(run["dir"]) / "predictions.csv")
        analysis = km_analysis(predictions)
        for group, curve in analysis["groups"].items():
            axis.step(
                curve["time"],
                curve["survival"],
                where="post",
                color=GROUPS[group],
                label=f"{group} risk (n={curve['n']}, {curve['events']} events)",
            )
            at = np.searchsorted(curve["time"], curve["censored_times"], side="right") - 1
            axis.plot(
                curve["censored_times"],
                curve["survival"][at],
                "|",
                color=GROUPS[group],
                markersize=8,
            )
        axis.text(0.97, 0.97, p_text(analysis["p"]), transform=axis.transAxes, ha="right", va="top")
        axis.set_title(run["title"], fontsize=9)
        axis.set_xlabel("time")
        axis.set_ylabel("survival probability")
        axis.set_ylim(-0.02, 1.05)
        axis.legend(loc="lower left", fontsize=8)
    return finish(
        figure,
        settings,
        f"Kaplan-Meier curves of {settings['dataset']} test cases, split at the median "
        "predicted risk (| censored)",
        out,
    )


if __name__ == "__main__":
    main(render, __doc__)
