"""The coverage ledger: every printed paper cell is produced, unavailable (with a computed reason)
or missing, for each config; the paper configs together account for all of them."""

import json

import pandas as pd
import pytest
import yaml
from paper_data import fake_paper_data

from abmilx.cli import main
from abmilx.config import REPO_ROOT, ConfigError, load_config, validate_config
from abmilx.experiments import resolve_experiments
from abmilx.report.__main__ import main as report_main
from abmilx.report.coverage import (
    check_strict,
    config_coverage,
    coverage_ledger,
    encode,
    printed_cells,
    summary_line,
)
from abmilx.report.tables import plan_tables, write_declared_tables

PAPER_CONFIGS = sorted((REPO_ROOT / "workflow" / "configs" / "paper").glob("*.yaml"))
WEIGHTS = [
    "weights/chief/CHIEF_CTransPath.pth",
    "weights/uni/pytorch_model.bin",
    "weights/gigapath/pytorch_model.bin",
]


@pytest.fixture
def placeholder_layout(tmp_path, monkeypatch):
    """The paper datasets as empty placeholder files, as the working folder; no weights."""
    fake_paper_data(tmp_path)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def _ledgers() -> pd.DataFrame:
    frames = []
    for path in PAPER_CONFIGS:
        ledger = config_coverage(load_config(path))
        frames.append(ledger.assign(config=path.stem))
    return pd.concat(frames, ignore_index=True)


def test_the_paper_configs_account_for_every_printed_cell(placeholder_layout):
    ledgers = _ledgers()
    assert (ledgers["status"] == "missing").sum() == 0
    printed = set(map(tuple, printed_cells()[["table", "row", "column"]].to_numpy()))
    assert len(printed) == 500
    counted = set(map(tuple, ledgers[["table", "row", "column"]].to_numpy()))
    assert counted == printed
    reasons = ledgers.loc[ledgers["status"] == "unavailable", "reason"]
    assert len(reasons) > 0
    for reason in set(reasons):  # each names the weights file that is not there
        assert any(f"not found at {weights}" in reason for weights in WEIGHTS), reason
        assert "not implemented" not in reason and "not declared" not in reason
    produced = ledgers[ledgers["status"] == "produced"]
    assert (produced["experiment"] != "").all() and (produced["metric"] != "").all()


def test_given_weights_turn_foundation_model_rows_into_runs(placeholder_layout):
    before = config_coverage(load_config(REPO_ROOT / "workflow/configs/paper/tcga_nsclc.yaml"))
    uni = before[before["row"].str.startswith("UNI / ")]
    assert set(uni["status"]) == {"unavailable"}
    (placeholder_layout / "weights/uni").mkdir(parents=True)
    (placeholder_layout / "weights/uni/pytorch_model.bin").write_bytes(b"")
    after = config_coverage(load_config(REPO_ROOT / "workflow/configs/paper/tcga_nsclc.yaml"))
    uni = after[after["row"].str.startswith("UNI / ")]
    assert set(uni["status"]) == {"produced"}
    assert set(uni["experiment"]) == {
        "abmil_fm__features-uni",
        "transmil_fm__features-uni",
        "abmilx_fm__features-uni",  # Table 6
    }


def test_strict_mode_names_the_dropped_paper_row(placeholder_layout):
    raw = yaml.safe_load((REPO_ROOT / "workflow/configs/paper/tcga_nsclc.yaml").read_text())
    raw["tables"]["table1"]["rows"].remove("clam_r50")
    del raw["tables"]["table1"]["paper"]["rows"]["clam_r50"]
    ledger = config_coverage(validate_config(raw))
    with pytest.raises(ConfigError, match=r"table1: ResNet-50 / CLAM \(TCGA-NSCLC\)"):
        check_strict(ledger)
    raw["coverage"] = "subset"  # a partial config: the row is unavailable, naming the paper config
    ledger = config_coverage(validate_config(raw))
    clam = ledger[(ledger["table"] == "table1") & (ledger["row"] == "ResNet-50 / CLAM")]
    assert clam["status"].tolist() == ["unavailable"]
    assert "workflow/configs/paper/tcga_nsclc.yaml" in clam["reason"].iloc[0]


def test_validate_prints_the_coverage_line_and_fails_strict_configs(placeholder_layout, capsys):
    config = REPO_ROOT / "workflow/configs/paper/tcga_nsclc.yaml"
    assert main(["validate", str(config), "--directory", str(placeholder_layout)]) == 0
    out = capsys.readouterr().out
    assert "paper coverage: 22 produced, 19 unavailable, 0 missing (of 41 printed cells)" in out
    raw = yaml.safe_load(config.read_text())
    raw["tables"]["table6"]["rows"].remove("dtfd_r50")
    del raw["tables"]["table6"]["paper"]["rows"]["dtfd_r50"]
    dropped = placeholder_layout / "dropped.yaml"
    dropped.write_text(yaml.safe_dump(raw, allow_unicode=True))
    assert main(["validate", str(dropped), "--directory", str(placeholder_layout)]) == 1
    err = capsys.readouterr().err
    assert "config key 'coverage' is strict" in err and "table6: ResNet-50 / DTFD (NSCLC)" in err


TOY = {
    "datasets": {"sub": {"task": "subtyping", "classes": ["a", "b"], "synthetic": {}}},
    "feature_sets": {"f": {}},
    "experiments": {
        "a": {"kind": "two_stage", "title": "A", "features": "f"},
        "b": {"kind": "two_stage", "title": "B", "features": "f", "settings": {"mil": "dsmil"}},
    },
}


def _toy_plans(best, paper=None, metrics=None):
    config = validate_config(
        {
            **TOY,
            "tables": {
                "t": {"rows": ["a"], "best": best, "metrics": metrics, "paper": paper or {}}
            },
        }
    )
    return plan_tables(config["tables"], resolve_experiments(config), {"sub": "subtyping"})


def _toy_run(run, auc, params):
    summary = {"point": auc, "mean": auc, "ci_low": auc - 0.05, "ci_high": auc + 0.05,
               "std": 0.02, "n": 10, "n_boot": 100}  # fmt: skip
    return {"experiment": run, "dataset": "sub", "metrics": {"auc": summary},
            "cost": {"params": params}, "provenance": {}}  # fmt: skip


def test_a_derived_row_reports_the_best_member_per_column(tmp_path):
    plans = _toy_plans({"Best of two": ["a", "b"]}, metrics=["auc", "cost.params"])
    runs = [_toy_run("a", 0.70, 1000), _toy_run("b", 0.80, 2000)]
    cells = write_declared_tables(runs, plans, tmp_path, None, n_boot=100, seed=0)["t"]
    best = cells[cells["row"] == "Best of two"].set_index("metric")
    assert best.loc["auc", "mean"] == 0.80 and best.loc["auc", "run"] == "b"
    assert best.loc["cost.params", "point"] == 2000  # the cost of the run it reports
    runs = [_toy_run("a", 0.90, 1000), _toy_run("b", 0.80, 2000)]
    cells = write_declared_tables(runs, plans, tmp_path, None, n_boot=100, seed=0)["t"]
    best = cells[cells["row"] == "Best of two"].set_index("metric")
    assert best.loc["auc", "run"] == "a" and best.loc["cost.params", "point"] == 1000


def test_a_derived_row_is_unavailable_only_when_every_member_is():
    config = validate_config(
        {**TOY, "tables": {"t": {"best": {"Best": ["a", "b"]},
                                 "paper": {"rows": {"Best": "ResNet-50 / Best-of-two-stage"},
                                           "columns": {"sub": {"table": "table1",
                                                               "column": "TCGA-BRCA"}}}}}}
    )  # fmt: skip
    experiments = resolve_experiments(config)
    tasks = {"sub": "subtyping"}
    one_out = plan_tables(config["tables"], experiments, tasks, {"a": "A weights not found"})
    assert [m["experiment"] for m in one_out["t"]["rows"][0]["best_of"]] == ["b"]
    ledger = coverage_ledger(one_out)
    best = (ledger["row"] == "ResNet-50 / Best-of-two-stage") & (ledger["column"] == "TCGA-BRCA")
    cell = ledger[best]
    assert cell["status"].tolist() == ["produced"] and cell["experiment"].tolist() == ["b"]
    both_out = plan_tables(config["tables"], experiments, tasks, {"a": "A gone", "b": "B gone"})
    ledger = coverage_ledger(both_out)
    cell = ledger[best]
    assert cell["status"].tolist() == ["unavailable"]
    assert cell["reason"].tolist() == ["A gone; B gone"]
    # a column of BRCA subtyping declares all its printed cells; this table has one of them
    assert summary_line(ledger) == (
        "paper coverage: 0 produced, 1 unavailable, 168 missing (of 169 printed cells)"
    )


def test_coverage_files(placeholder_layout, tmp_path):
    ledger = config_coverage(load_config(REPO_ROOT / "workflow/configs/paper/camelyon.yaml"))
    report_main(["coverage", "--ledger", json.dumps(encode(ledger)), "--out-dir", str(tmp_path)])
    written = pd.read_csv(tmp_path / "coverage.csv", keep_default_na=False)
    assert list(written.columns) == [
        "table", "row", "column", "status", "reason", "experiment", "dataset", "metric",
    ]  # fmt: skip
    assert len(written) == 26
    markdown = (tmp_path / "coverage.md").read_text()
    assert summary_line(ledger) in markdown
    assert "| sparsity | 5 | 0 | 0 |" in markdown


def test_the_demo_runs_a_subset_and_says_what_the_rest_needs():
    ledger = config_coverage(load_config(REPO_ROOT / "config.yaml"))
    counts = ledger["status"].value_counts()
    assert "missing" not in counts and counts["produced"] > 0
    unavailable = ledger[ledger["status"] == "unavailable"]
    assert (unavailable["reason"] != "").all()
    uni = unavailable[unavailable["row"] == "UNI / ABMIL"]
    assert set(uni["reason"]) >= {
        "this config runs a subset of the paper; the row needs the PANDA slides and the UNI "
        "weights (workflow/configs/paper/panda.yaml)"
    }
