"""Report stage: QC table and main table, on files made here (figures: test_figures.py)."""

import json

import pandas as pd
import pytest

from abmilx.integrity import DamagedFileError
from abmilx.report.qc import write_qc_table
from abmilx.report.tables import write_tables


def _record(slide_id, status, patches=None, **extra):
    return {
        "dataset": "d",
        "slide_id": slide_id,
        "status": status,
        "reason": "" if status == "ok" else f"{status} because",
        "vendor": "aperio",
        "mpp": 0.5,
        "mpp_source": "metadata",
        "objective_power": 20.0,
        "width": 800,
        "height": 600,
        "level_count": 2,
        "tissue_area_mm2": 0.05,
        "patches": patches or {},
        **extra,
    }


def test_qc_table_has_a_row_per_slide_and_zero_patches_for_failures(tmp_path):
    files = []
    for record in [
        _record("b", "ok", {"main": 12, "low": 3}),
        _record("a", "failed", vendor=None),
        _record("c", "no_tissue", {"main": 0, "low": 0}),
    ]:
        path = tmp_path / f"{record['slide_id']}.json"
        path.write_text(json.dumps(record))
        files.append(path)
    table = write_qc_table(files, tmp_path / "qc" / "slides.tsv")
    read = pd.read_csv(tmp_path / "qc" / "slides.tsv", sep="\t")
    assert list(read.slide_id) == ["a", "b", "c"]
    assert list(read.status) == ["failed", "ok", "no_tissue"]
    assert list(read.patches_main) == [0, 12, 0]
    assert read.loc[0, "reason"] == "failed because"
    assert list(table.columns[-2:]) == ["patches_low", "patches_main"]


def _metrics(experiment, auc, weights="random"):
    summary = {
        "point": auc,
        "mean": auc,
        "ci_low": auc - 0.1,
        "ci_high": auc + 0.05,
        "std": 0.04,
        "n_boot": 1000,
        "n": 12,
        "skipped": 0,
    }
    return {
        "dataset": "demo",
        "experiment": experiment,
        "task": "classification",
        "fold": 0,
        "n": 12,
        "metrics": {"auc": summary, "balanced_accuracy": {**summary, "mean": 0.5}},
        "cost": {"train_seconds": 10.0, "params": 1000, "inference_seconds_per_slide": 0.1},
        "provenance": {"encoder_weights": weights},
    }


def test_main_table_shows_each_run_with_its_interval(tmp_path):
    files = []
    for name, auc in [("e2e", 0.9), ("two", 0.75)]:
        path = tmp_path / f"{name}.json"
        metrics = _metrics(name, auc)
        if name == "two":
            metrics["selection"] = {"mode": "val", "protocol": "test_official"}
        path.write_text(json.dumps(metrics))
        files.append(path)
    settings = {
        "datasets": {"demo": "subtyping"},
        "experiments": {
            "two": {"title": "ABMIL", "kind": "two_stage"},
            "e2e": {"title": "ABMILX E2E", "kind": "e2e"},
        },
    }
    table = write_tables(files, tmp_path / "tables", settings)
    assert len(table) == 4
    csv = pd.read_csv(tmp_path / "tables" / "main.csv")
    assert set(csv.metric) == {"auc", "balanced_accuracy"}
    markdown = (tmp_path / "tables" / "main.md").read_text()
    assert "| ABMIL † | 75.00 [65.00, 80.00] |" in markdown
    assert "selected on the test set" in markdown
    assert "| ABMILX E2E | 90.00 [80.00, 95.00] |" in markdown
    assert "initialised at random" in markdown


def test_cohort_table_counts_statuses_and_patches(tmp_path):
    from abmilx.report.tables import cohort_table

    qc = pd.DataFrame(
        {
            "dataset": ["d", "d", "d"],
            "slide_id": ["a", "b", "c"],
            "status": ["ok", "ok", "failed"],
            "tissue_area_mm2": [1.0, 3.0, 0.0],
            "patches_main": [10, 30, 0],
        }
    )
    row = cohort_table(qc).iloc[0]
    assert (row.slides, row.ok, row.failed, row.no_tissue) == (3, 2, 1, 0)
    assert row.tissue_mm2_per_slide == 2.0
    assert (row.patches_main_per_slide, row.patches_main_total) == (20.0, 40)


def test_summary_quotes_each_datasets_headline_metric_from_the_metrics_files(tmp_path):
    from abmilx.report.__main__ import main

    files = []
    for dataset, name, auc in [("demo", "e2e", 0.9), ("demo", "two", 0.75), ("surv", "e2e", 0.6)]:
        metrics = _metrics(name, auc, weights="pretrain:r18")
        metrics["dataset"] = dataset
        if dataset == "surv":
            metrics["metrics"] = {"c_index": metrics["metrics"]["auc"]}
        if name == "two":
            metrics["selection"] = {"mode": "val", "protocol": "test_official"}
        path = tmp_path / f"{dataset}_{name}.json"
        path.write_text(json.dumps(metrics))
        files.append(str(path))
    settings = {
        "datasets": {"surv": "survival", "demo": "subtyping", "unrun": "grading"},
        "experiments": {
            "two": {"title": "ABMIL", "kind": "two_stage"},
            "e2e": {"title": "ABMILX E2E", "kind": "e2e"},
        },
    }
    summary = tmp_path / "summary.md"
    out_dir = str(tmp_path / "tables")
    args = ["--out-dir", out_dir, "--settings", json.dumps(settings), "--summary", str(summary)]
    main(["tables", "--metrics", *files, *args])
    text = summary.read_text()
    assert text.index("## surv (survival, C-index)") < text.index("## demo (subtyping, AUC)")
    assert "unrun" not in text
    assert "| ABMILX E2E | `e2e` | 60.00 [50.00, 65.00] | 12 |" in text
    assert "| ABMIL † | `two` | 75.00 [65.00, 80.00] | 12 |" in text
    assert "selected on the test set" in text
    assert "pretrain:r18" in text
    assert "Protocol: clean" in text  # runs from before the switch were clean


def test_tables_say_which_protocol_made_each_number(tmp_path):
    settings = {
        "datasets": {"demo": "subtyping"},
        "experiments": {"a": {"title": "A", "kind": "e2e"}, "b": {"title": "B", "kind": "e2e"}},
    }
    files = []
    for name, protocol in [("a", None), ("b", "official")]:
        metrics = _metrics(name, 0.8)
        if protocol:
            metrics["protocol"] = protocol
        files.append(tmp_path / f"{name}.json")
        files[-1].write_text(json.dumps(metrics))
    write_tables(files[:1], tmp_path / "clean", settings)
    assert "Protocol: clean" in (tmp_path / "clean" / "main.md").read_text()
    assert set(pd.read_csv(tmp_path / "clean" / "main.csv").protocol) == {"clean"}
    write_tables(files, tmp_path / "both", settings)
    markdown = (tmp_path / "both" / "main.md").read_text()
    assert "Protocol: clean for A; official for B." in markdown


def test_a_damaged_qc_record_fails_the_qc_table_naming_it(tmp_path):
    good, cut = tmp_path / "a.json", tmp_path / "b.json"
    good.write_text(json.dumps(_record("a", "ok", {"main": 1})))
    cut.write_text(json.dumps(_record("b", "ok"))[:40])  # a copy cut short
    with pytest.raises(DamagedFileError, match=r"b\.json: not valid JSON"):
        write_qc_table([good, cut], tmp_path / "slides.tsv")
    assert not (tmp_path / "slides.tsv").exists()
