"""One picture per run for Snakemake's report: how it trained and how it predicts.

Per run (``results/runs/<dataset>/<experiment>/``): the training curves of fold 0 (loss, learning
rate and the validation metric where a validation split exists), then by task the ROC curves
(classification, one-vs-rest per class, test predictions pooled over folds), the confusion
matrix (classification), or Kaplan-Meier curves of the test cases split at the median predicted
risk (survival). Written as ``<out_dir>/<experiment>.png``, one folder per dataset.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from abmilx.report.figures.draw import save

TRAIN_LOG = "train_log.csv"


def class_columns(predictions: pd.DataFrame) -> list[str]:
    return [c for c in predictions.columns if c.startswith("prob_")]


def draw_curves(axis, log: pd.DataFrame | None) -> None:
    """Training loss per epoch, learning rate on a twin axis, validation metrics if logged."""
    if log is None or log.empty:
        axis.text(0.5, 0.5, "no training log", ha="center", va="center")
        return
    axis.plot(log["epoch"], log["train_loss"], marker=".", label="train loss", color="C0")
    for column in [c for c in log.columns if c.startswith("val_")]:
        axis.plot(log["epoch"], log[column], marker=".", label=column.replace("_", " "))
    axis.set_xlabel("epoch")
    axis.legend(fontsize=7, loc="upper right")
    if "lr" in log:
        rate = axis.twinx()
        rate.plot(log["epoch"], log["lr"], color="grey", linestyle=":", label="lr")
        rate.set_ylabel("learning rate", fontsize=7, color="grey")
        rate.tick_params(labelsize=6, colors="grey")
    axis.set_title("training (fold 0)", fontsize=9)


def draw_roc(axis, predictions: pd.DataFrame) -> None:
    """One-vs-rest ROC per class with its AUC; the chance diagonal."""
    from sklearn.metrics import roc_auc_score, roc_curve

    labels = predictions["label"].astype(str)
    for column in class_columns(predictions):
        name = column.removeprefix("prob_")
        truth = (labels == name).to_numpy()
        if truth.all() or not truth.any():
            continue  # a class absent from the test set has no curve
        fpr, tpr, _ = roc_curve(truth, predictions[column])
        auc = roc_auc_score(truth, predictions[column])
        axis.plot(fpr, tpr, label=f"{name} (AUC {auc:.3f})")
    axis.plot([0, 1], [0, 1], color="lightgrey", linestyle="--")
    axis.set_xlabel("false positive rate")
    axis.set_ylabel("true positive rate")
    axis.legend(fontsize=7, loc="lower right")
    axis.set_title(f"ROC, test set (n = {len(predictions)})", fontsize=9)


def draw_confusion(axis, predictions: pd.DataFrame) -> None:
    """Counts of true (rows) by predicted (columns) class."""
    from sklearn.metrics import confusion_matrix

    classes = [c.removeprefix("prob_") for c in class_columns(predictions)]
    matrix = confusion_matrix(
        predictions["label"].astype(str), predictions["pred"].astype(str), labels=classes
    )
    axis.imshow(matrix, cmap="Blues")
    for (row, column), count in np.ndenumerate(matrix):
        colour = "white" if count > matrix.max() / 2 else "black"
        axis.text(column, row, str(count), ha="center", va="center", fontsize=7, color=colour)
    axis.set_xticks(range(len(classes)), classes, fontsize=7)
    axis.set_yticks(range(len(classes)), classes, fontsize=7)
    axis.set_xlabel("predicted")
    axis.set_ylabel("true")
    axis.set_title("confusion matrix, test set", fontsize=9)


def draw_km(axis, predictions: pd.DataFrame) -> None:
    """Kaplan-Meier curves of the test cases at or below vs above the median risk."""
    from lifelines import KaplanMeierFitter
    from lifelines.statistics import logrank_test

    high = predictions["risk"] > predictions["risk"].median()
    for name, group in (("low risk", predictions[~high]), ("high risk", predictions[high])):
        if len(group):
            KaplanMeierFitter(label=f"{name} (n = {len(group)})").fit(
                group["time"], group["event"]
            ).plot_survival_function(ax=axis, ci_show=False)
    if high.any() and (~high).any():
        test = logrank_test(
            predictions.loc[~high, "time"],
            predictions.loc[high, "time"],
            predictions.loc[~high, "event"],
            predictions.loc[high, "event"],
        )
        axis.set_title(f"Kaplan-Meier, test cases (log-rank p = {test.p_value:.3g})", fontsize=9)
    axis.set_xlabel("time")
    axis.legend(fontsize=7)


def render_run(run_dir: Path, title: str, out: Path) -> Path:
    """``out`` (PNG and PDF): the run's training curves and its test predictions by task."""
    predictions = pd.read_csv(run_dir / "predictions.csv", dtype={"label": str})
    logs = sorted(run_dir.glob(f"fold*/{TRAIN_LOG}"))
    log = pd.read_csv(logs[0]) if logs else None
    survival = "risk" in predictions
    panels = 2 if survival else 3
    figure = Figure(figsize=(4.2 * panels, 3.6))
    axes = figure.subplots(1, panels)
    draw_curves(axes[0], log)
    if survival:
        draw_km(axes[1], predictions)
    else:
        draw_roc(axes[1], predictions)
        draw_confusion(axes[2], predictions)
    figure.suptitle(title, fontsize=10)
    figure.tight_layout()
    return save(figure, out)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m abmilx.report.runs", description=__doc__)
    parser.add_argument("--runs", required=True, help="JSON: {experiment: [run folder, title]}")
    parser.add_argument("--out-dir", required=True)
    args = parser.parse_args(argv)
    out_dir = Path(args.out_dir)
    for experiment, (folder, title) in sorted(json.loads(args.runs).items()):
        print(f"wrote {render_run(Path(folder), title, out_dir / f'{experiment}.png')}")


if __name__ == "__main__":
    main()
