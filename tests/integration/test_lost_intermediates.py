"""A deleted intermediate is rebuilt by the next run, and the results come out the same."""

import json

import pandas as pd
import pytest
from tiny_workflow import snakemake

pytestmark = pytest.mark.integration

EXPERIMENTS = ("abmil_two_stage", "abmilx_e2e")


def _results(runs):
    return {
        name: (
            json.loads((runs / name / "metrics.json").read_text())["metrics"],
            pd.read_csv(runs / name / "predictions.csv"),
        )
        for name in EXPERIMENTS
    }


def test_a_deleted_feature_file_and_model_are_rebuilt_with_equal_metrics(finished_tiny_run):
    results = finished_tiny_run / "results"
    runs = results / "runs" / "tiny"
    before = _results(runs)
    splits = pd.read_csv(results / "splits" / "tiny.csv")
    lost_slide = splits[splits.split == "test"].slide_id.iloc[0]
    (results / "features" / "tiny" / "r18" / f"{lost_slide}.pt").unlink()
    (runs / "abmilx_e2e" / "fold0" / "model.pt").unlink()

    dry = snakemake(finished_tiny_run, "-n", "--cores", "2")
    assert dry.returncode == 0, dry.stderr[-4000:]
    planned = dry.stdout + dry.stderr
    assert f"results/features/tiny/r18/{lost_slide}.pt" in planned
    for rule in ("rebuild_feature_file", "train_e2e", "evaluate_fold"):
        assert f"rule {rule}:" in planned, rule
    # only the lost slide is encoded again, to the same bytes: two-stage training need not rerun
    assert "rule extract_features:" not in planned and "rule train_two_stage:" not in planned

    run = snakemake(finished_tiny_run, "--cores", "2")
    assert run.returncode == 0, run.stderr[-8000:]
    after = _results(runs)
    for name in EXPERIMENTS:
        assert after[name][0] == before[name][0], name
        pd.testing.assert_frame_equal(after[name][1], before[name][1])
    again = snakemake(finished_tiny_run, "-n", "--cores", "2")
    assert "Nothing to be done" in again.stdout + again.stderr
