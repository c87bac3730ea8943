"""`abmilx predict` writes the evaluation stage's predictions table, for both task kinds."""

import numpy as np
import pandas as pd
import pytest

from abmilx.cli.predict import prediction_table
from abmilx.evaluation.evaluate import evaluate_predictions


@pytest.mark.parametrize(
    ("task", "classes"), [("classification", ["IDC", "ILC", "MIX"]), ("survival", [0, 1, 2, 3])]
)
def test_same_rows_as_evaluation_from_the_same_logits(task, classes):
    rng = np.random.default_rng(0)
    sheet = pd.DataFrame(
        {"slide_id": [f"S{i}" for i in range(8)], "case_id": [f"C{i // 2}" for i in range(8)]}
    )
    logits = pd.DataFrame(
        rng.normal(size=(8, len(classes))), columns=[f"logit_{i}" for i in range(len(classes))]
    )
    logits.insert(0, "slide_id", sheet.slide_id)
    truth = sheet.assign(label=[str(classes[i % len(classes)]) for i in range(8)])
    if task == "survival":
        logits[[c for c in logits if c.startswith("logit_")]] = np.repeat(
            logits.filter(like="logit_").to_numpy()[::2], 2, axis=0
        )  # a case's slides share the case's logits, as predict gives them
        truth = truth.assign(label=[i // 2 % 4 for i in range(8)], time=np.arange(8.0) + 1, event=1)
    checkpoint = {"task": task, "classes": classes}
    expected, _ = evaluate_predictions(
        logits, truth, checkpoint, fold=0, n_boot=5, seed=0, model_weights="main"
    )
    got = prediction_table(logits, checkpoint, sheet, truth)
    pd.testing.assert_frame_equal(
        got.reset_index(drop=True), expected.reset_index(drop=True), check_dtype=False
    )


def test_without_labels_the_label_column_is_blank():
    sheet = pd.DataFrame({"slide_id": ["A", "B"], "case_id": ["a", "b"]})
    logits = pd.DataFrame({"slide_id": ["B", "A"], "logit_0": [0.0, 2.0], "logit_1": [1.0, 0.0]})
    got = prediction_table(logits, {"task": "classification", "classes": ["x", "y"]}, sheet, None)
    assert list(got.columns) == ["slide_id", "case_id", "label", "prob_x", "prob_y", "pred"]
    assert got.label.isna().all()
    assert got.set_index("slide_id").pred.to_dict() == {"A": "x", "B": "y"}
