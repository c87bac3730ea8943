"""Figure ``performance_vs_cost`` (the paper's Fig. 1 kind): each run's headline metric with its
95 % bootstrap interval against its training cost, one panel per dataset.

Cost comes from the run's metrics.json ``cost`` (train seconds, patches seen, peak memory, ...);
two-stage runs do not include the feature extraction they read. E2E runs are drawn as circles,
two-stage runs as squares.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from matplotlib.figure import Figure
from matplotlib.ticker import NullFormatter

from abmilx.integrity import read_json_object
from abmilx.report.figures.draw import finish, main

COST_LABELS = {
    "train_seconds": "training time (s)",
    "train_seconds_total": "training time incl. extra stages (s)",
    "patches_seen": "patches seen in training",
    "peak_rss_mb": "peak memory (MB)",
    "params": "parameters",
    "inference_seconds_per_slide": "inference time per slide (s)",
}
MARKERS = {"two_stage": "s"}


def panel_points(panel: Mapping, cost: str) -> list[dict[str, Any]]:
    """One point per run: title, kind, cost, metric mean and interval (None where absent)."""
    points = []
    for run in panel["runs"]:
        metrics = read_json_object(Path(run["dir"]) / "metrics.json")
        summary = metrics["metrics"].get(panel["metric"])
        value = metrics.get("cost", {}).get(cost)
        if summary is None or summary.get("mean") is None or value is None:
            continue
        points.append(
            {
                "title": run["title"],
                "kind": run["kind"],
                "cost": float(value),
                "mean": summary["mean"],
                "low": summary["ci_low"] if summary["ci_low"] is not None else summary["mean"],
                "high": summary["ci_high"] if summary["ci_high"] is not None else summary["mean"],
            }
        )
    return points


def render(settings: Mapping, out: Path) -> Path:
    panels = settings["panels"]
    cost = settings["cost"]
    figure = Figure(figsize=(6.4 * len(panels), 4.6))
    axes = figure.subplots(1, len(panels), squeeze=False)[0]
    for axis, panel in zip(axes, panels, strict=True):
        points = panel_points(panel, cost)
        for index, point in enumerate(points):
            axis.errorbar(
                point["cost"],
                100 * point["mean"],
                yerr=[
                    [100 * (point["mean"] - point["low"])],
                    [100 * (point["high"] - point["mean"])],
                ],
                fmt=MARKERS.get(point["kind"], "o"),
                color=f"C{index % 10}",
                capsize=3,
                label=point["title"],
            )
        if settings["log_x"] and points and min(p["cost"] for p in points) > 0:
            axis.set_xscale("log")
            axis.xaxis.set_minor_formatter(NullFormatter())  # minor labels overlap
        axis.set_xlabel(COST_LABELS[cost])
        axis.set_ylabel(f"{panel['metric']} (×100, 95 % CI)")
        axis.set_title(panel["dataset"], fontsize=10)
        axis.grid(alpha=0.3)
        if points:
            axis.legend(fontsize=7, loc="best")
        else:
            axis.text(0.5, 0.5, f"no run has {panel['metric']} and {cost}", ha="center")
    return finish(figure, settings, f"Performance vs training cost ({COST_LABELS[cost]})", out)


if __name__ == "__main__":
    main(render, __doc__)
