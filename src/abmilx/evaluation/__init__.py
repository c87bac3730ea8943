"""Evaluation stage: bootstrap metrics, predictions and attention of trained runs."""

from abmilx.evaluation.aggregate import aggregate_files, aggregate_metrics
from abmilx.evaluation.bootstrap import bootstrap
from abmilx.evaluation.evaluate import evaluate, evaluate_predictions, write_outputs
from abmilx.evaluation.metrics import (
    ClassificationScores,
    SurvivalScores,
    binary_auc,
    c_index,
    classification_metrics,
    median_survival_bin,
    quadratic_weighted_kappa,
    softmax,
    survival_curve,
    survival_risk,
    weighted_auc,
    weighted_c_index,
    weighted_classification_metrics,
)

__all__ = [
    "ClassificationScores",
    "SurvivalScores",
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
    "weighted_auc",
    "weighted_c_index",
    "weighted_classification_metrics",
    "write_outputs",
]
