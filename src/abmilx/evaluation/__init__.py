"""Evaluation stage: bootstrap metrics, predictions and attention of trained runs."""

from abmilx.evaluation.aggregate import aggregate_files, aggregate_metrics
from abmilx.evaluation.bootstrap import bootstrap
from abmilx.evaluation.evaluate import evaluate, evaluate_predictions, write_outputs
from abmilx.evaluation.metrics import (
    binary_auc,
    c_index,
    classification_metrics,
    median_survival_bin,
    quadratic_weighted_kappa,
    softmax,
    survival_curve,
    survival_risk,
)

__all__ = [
    "aggregate_files",
    "aggregate_metrics",
    "binary_auc",
    "bootstrap",
    "c_index",
    "classification_metrics",
    "evaluate",
    "evaluate_predictions",
    "median_survival_bin",
    "quadratic_weighted_kappa",
    "softmax",
    "survival_curve",
    "survival_risk",
    "write_outputs",
]
