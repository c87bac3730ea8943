"""A deleted intermediate is rebuilt by the next run, and the results come out the same."""

import json
import os

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


def test_a_damaged_feature_manifest_stops_the_dry_run_naming_it(finished_tiny_run):
    manifest = finished_tiny_run / "results" / "features" / "tiny" / "r18.manifest.json"
    intact, stat = manifest.read_bytes(), manifest.stat()
    try:
        manifest.write_text("")  # a full disk, after the run
        dry = snakemake(finished_tiny_run, "-n", "--cores", "2")
        assert dry.returncode != 0
        assert (
            "results/features/tiny/r18.manifest.json: not a feature manifest: not valid JSON"
            " (Expecting value: line 1 column 1 (char 0)); delete it and run again"
        ) in dry.stdout + dry.stderr
    finally:  # as it was, modification time included: the other tests share the run
        manifest.write_bytes(intact)
        os.utime(manifest, ns=(stat.st_atime_ns, stat.st_mtime_ns))


def test_a_lost_segmentation_file_reruns_its_shard_and_a_damaged_manifest_is_named(
    finished_tiny_run,
):
    """Snakemake sees the segmentation shard's manifest only: a slide file it lists that is
    gone reruns that shard (which redoes that slide alone: tests/segmentation), and a damaged
    manifest stops the dry run naming it."""
    folder = finished_tiny_run / "results" / "qc" / "segmentation"
    overlay = sorted((folder / "tiny").glob("*.overlay.png"))[0]
    (manifest,) = folder.glob("tiny.shards/*/*.json")
    kept = {path: (path.read_bytes(), path.stat()) for path in (overlay, manifest)}
    try:
        overlay.unlink()
        dry = snakemake(finished_tiny_run, "-n", "--cores", "2")
        planned = dry.stdout + dry.stderr
        assert dry.returncode == 0, planned[-4000:]
        assert "rule segment_tissue:" in planned
        assert planned.count("rule segment_tissue:") == 1  # that shard, not tiny_pretraining's
        manifest.write_text('{"stage": "segmentation"}')  # edited by hand
        dry = snakemake(finished_tiny_run, "-n", "--cores", "2")
        assert dry.returncode != 0
        name = manifest.relative_to(finished_tiny_run)
        assert f"{name}: not a shard manifest: needs keys" in dry.stdout + dry.stderr, dry.stderr[
            -4000:
        ]
    finally:  # as it was, modification times included: the other tests share the run
        for path, (data, stat) in kept.items():
            path.write_bytes(data)
            os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
