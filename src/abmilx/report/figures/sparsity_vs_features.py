"""Figure ``sparsity_vs_features`` (the paper's Fig. 2 kind): how aggregators of different
attention sparsity fare as the offline features get better.

The figure's two-stage experiments are grouped by aggregator (one line each) and placed by
feature set along the x axis, in the order the experiments name them (weakest first, e.g. ImageNet
R50, then foundation models). The left panel is each run's headline metric with its 95 % bootstrap
interval, the right one its attention sparsity on the test slides (abmilx.report.sparsity, the
project's definition of the paper's Sec. 3.3 measure), so a reader sees whether the sparse
aggregator gains more from better features.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from abmilx.integrity import read_json_object
from abmilx.report.figures.draw import finish, left_out_note, main
from abmilx.report.sparsity import sparsity_summary

N_BOOT = 1000


def points(settings: Mapping) -> list[dict]:
    """Per run: aggregator, feature set, metric and sparsity summaries (None where absent)."""
    found = []
    for run in settings["runs"]:
        folder = Path(run["dir"])
        metrics = read_json_object(folder / "metrics.json")["metrics"]
        attention = sorted(folder.glob("fold*/attention.npz"))
        found.append(
            {
                "mil": run["mil"],
                "features": run["features"],
                "metric": metrics.get(settings["metric"]),
                "sparsity": sparsity_summary(attention, N_BOOT, settings["seed"]),
            }
        )
    return found


def render(settings: Mapping, out: Path) -> Path:
    found = points(settings)
    feature_sets = list(dict.fromkeys(run["features"] for run in settings["runs"]))
    mils = list(dict.fromkeys(run["mil"] for run in settings["runs"]))
    figure = Figure(figsize=(12, 4.6))
    metric_axis, sparsity_axis = figure.subplots(1, 2)
    for colour, mil in enumerate(mils):
        for axis, key, scale in ((metric_axis, "metric", 100), (sparsity_axis, "sparsity", 100)):
            line = [
                (feature_sets.index(p["features"]), p[key])
                for p in found
                if p["mil"] == mil and p[key] is not None and p[key].get("mean") is not None
            ]
            if not line:
                continue
            x = np.array([position for position, _ in line])
            mean = np.array([s["mean"] for _, s in line]) * scale
            low = np.array([s["ci_low"] if s["ci_low"] is not None else s["mean"] for _, s in line])
            high = np.array(
                [s["ci_high"] if s["ci_high"] is not None else s["mean"] for _, s in line]
            )
            axis.errorbar(
                x,
                mean,
                yerr=[mean - low * scale, high * scale - mean],
                fmt="o-",
                color=f"C{colour}",
                capsize=3,
                label=mil,
            )
    for axis, label in (
        (metric_axis, f"{settings['metric']} (×100, 95 % CI)"),
        (sparsity_axis, "attention sparsity (% of patches not activated)"),
    ):
        axis.set_xticks(range(len(feature_sets)), feature_sets)
        axis.set_xlim(-0.5, len(feature_sets) - 0.5)
        axis.set_xlabel("offline features")
        axis.set_ylabel(label)
        axis.grid(alpha=0.3)
        if axis.get_lines():
            axis.legend(fontsize=8, title="aggregator", title_fontsize=8)
        else:
            axis.text(0.5, 0.5, "no run has this value", ha="center", transform=axis.transAxes)
    return finish(
        figure,
        settings,
        f"Attention sparsity vs feature quality on {settings['dataset']}: "
        f"{settings['metric']} and sparsity per aggregator and feature set"
        f"{left_out_note(settings)}",
        out,
    )


if __name__ == "__main__":
    main(render, __doc__)
