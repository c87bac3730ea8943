"""Declared tables: rows resolved to runs at parse time, one renderer, the paper's value beside."""

import json

import numpy as np
import pandas as pd
import pytest

from abmilx.config import REPO_ROOT, evaluation_datasets, load_config, validate_config
from abmilx.experiments import resolve_experiments
from abmilx.report.__main__ import main
from abmilx.report.paper import load_paper_values, paper_cell
from abmilx.report.tables import plan_tables, write_declared_tables, write_tables

SHIPPED_CONFIGS = [
    REPO_ROOT / "config.yaml",
    *sorted(REPO_ROOT.glob("workflow/configs/paper/*.yaml")),
]

DATASETS = {
    "sub": {"task": "subtyping", "classes": ["a", "b"], "synthetic": {}},
    "surv": {"task": "survival", "synthetic": {}},
}
TASKS = {"sub": "subtyping", "surv": "survival"}
EXPERIMENTS = {
    "two": {"kind": "two_stage", "title": "ABMIL", "features": "f", "datasets": ["sub"]},
    "e2e": {"preset": "abmilx_e2e_r18_subtyping", "title": "ABMILX E2E"},
    "same": {"base": "e2e", "title": "again"},
    "heads": {"base": "e2e", "grid": {"settings.mil_kwargs.n_heads": [2, 8]}},
}


def _config(tables):
    return validate_config(
        {
            "datasets": DATASETS,
            "feature_sets": {"f": {}},
            "experiments": EXPERIMENTS,
            "tables": tables,
        }
    )


def _plan(tables):
    config = _config(tables)
    return plan_tables(config["tables"], resolve_experiments(config), TASKS)


def _run(run, dataset, value, weights="imagenet"):
    metric = "c_index" if dataset == "surv" else "auc"
    summary = {"point": value, "mean": value, "ci_low": value - 0.1, "ci_high": value + 0.05,
               "std": 0.03, "n": 10, "n_boot": 100}  # fmt: skip
    return {
        "experiment": run,
        "dataset": dataset,
        "metrics": {metric: summary},
        "cost": {"train_seconds": 12.5},
        "provenance": {"encoder_weights": weights},
    }


def test_rows_are_runs_and_grid_points():
    plan = _plan({"t": {"rows": ["two", "same"], "grid": "heads"}})["t"]
    assert [(r["label"], r["experiment"], r["run"]) for r in plan["rows"]] == [
        ("ABMIL", "two", "two"),
        ("again", "same", "e2e"),  # equal settings: e2e's run
        ("ABMILX E2E (n_heads=2)", "heads__n_heads-2", "heads__n_heads-2"),
        ("ABMILX E2E (n_heads=8)", "heads__n_heads-8", "e2e"),
    ]
    assert [(c["dataset"], c["metric"]) for c in plan["columns"]] == [
        ("sub", "auc"),
        ("surv", "c_index"),
    ]


@pytest.mark.parametrize(
    ("table", "message"),
    [
        ({"rows": ["nope"]}, "tables/t/rows': no experiment 'nope'"),
        ({"grid": "two"}, "tables/t/grid': no grid experiment 'two'"),
        ({"datasets": ["nope"]}, "tables/t/datasets': no dataset 'nope'"),
        ({"rows": ["two"], "paper": {"rows": {"e2e": "x"}}}, "tables/t/paper/rows'"),
        ({"rows": ["two"], "unavailable": {"ABMIL": "why"}}, r"labelled \['ABMIL'\]"),
        (
            {"paper": {"columns": {"sub": {"table": "table1", "column": "BRCA"}}}},
            "tables/t/paper/columns/sub': the paper's 'table1' has no column 'BRCA'",
        ),
        (
            {
                "rows": ["two"],
                "paper": {
                    "rows": {"two": "ResNet-50 / ABMLI"},
                    "columns": {"sub": {"table": "table1", "column": "TCGA-BRCA"}},
                },
            },
            "tables/t/paper/rows/two': no row 'ResNet-50 / ABMLI' in the paper's table1",
        ),
    ],
)
def test_unknown_names_fail_at_parse_time(table, message):
    with pytest.raises(ValueError, match=message):
        _plan({"t": table})


def test_render_with_paper_values_and_reasons(tmp_path):
    plans = _plan(
        {
            "t": {
                "title": "Two-stage vs E2E",
                "rows": ["two", "e2e"],
                "unavailable": {"UNI": "UNI weights not provided"},
                "paper": {
                    "rows": {"two": "ResNet-50 / ABMIL", "UNI": "UNI / ABMIL"},
                    "columns": {
                        "sub": {"table": "table1", "column": "TCGA-BRCA"},
                        "surv": {"table": "table2", "column": "TCGA-BRCA"},
                    },
                },
            },
            "cost": {
                "rows": ["e2e"],
                "datasets": ["sub"],
                "metrics": ["auc", "cost.train_seconds"],
            },
        }
    )
    runs = [_run("two", "sub", 0.75), _run("e2e", "sub", 0.9), _run("e2e", "surv", 0.6)]
    cells = write_declared_tables(runs, plans, tmp_path, None, n_boot=1000, seed=0)
    markdown = (tmp_path / "t.md").read_text()
    assert (
        "| Method | sub (AUC) | paper: table1 TCGA-BRCA | surv (C-index) | "
        "paper: table2 TCGA-BRCA |" in markdown
    )
    assert (
        "| ABMIL | 75.00 [65.00, 80.00] | 83.80 ± 6.55 | not run on surv (runs on sub) "
        "| 64.93 ± 9.1 |" in markdown
    )
    assert "| ABMILX E2E | 90.00 [80.00, 95.00] | – | 60.00 [50.00, 65.00] | – |" in markdown
    assert (
        "| UNI | UNI weights not provided | 94.05 ± 3.49 | UNI weights not provided "
        "| 67.05 ± 10.2 |" in markdown
    )
    csv = pd.read_csv(tmp_path / "t.csv")
    assert len(csv) == 6 and set(csv.columns) >= {"mean", "ci_low", "ci_high", "paper_value"}
    assert csv.loc[csv.row == "ABMIL", "paper_value"].tolist() == ["83.80 ± 6.55", "64.93 ± 9.1"]
    tex = (tmp_path / "t.tex").read_text()
    assert r"83.80 $\pm$ 6.55" in tex and r"\toprule" in tex and "paper: table1 TCGA-BRCA" in tex
    assert "| ABMILX E2E | 90.00 [80.00, 95.00] | 12.5 |" in (tmp_path / "cost.md").read_text()
    assert set(cells) == {"t", "cost"}


def test_missing_metrics_of_a_planned_run_fail(tmp_path):
    plans = _plan({"t": {"rows": ["e2e"], "datasets": ["sub"]}})
    with pytest.raises(ValueError, match=r"no metrics.json of run 'e2e' on 'sub'"):
        write_declared_tables([], plans, tmp_path, None, n_boot=1000, seed=0)


def test_demo_tables_render_beside_main_and_cohort(tmp_path):
    """The demo's declared tables on fabricated metrics and attention, through the rules' entry
    points: each table alone (rule table), then copied beside main (rule tables)."""
    config = load_config(REPO_ROOT / "config.yaml")
    experiments = resolve_experiments(config)
    tasks = {d: config["datasets"][d]["task"] for d in evaluation_datasets(config)}
    plans = json.loads(json.dumps(plan_tables(config["tables"], experiments, tasks)))
    files, attention = [], []
    for run in experiments.runs:
        for dataset, task in tasks.items():
            metrics = _run(run, "surv" if task == "survival" else "sub", 0.7, weights="random")
            metrics["dataset"] = dataset
            metrics["cost"].update(params=1e6, flops_per_slide=2e9, peak_rss_mb=900.0)
            metrics["cost"]["inference_seconds_per_slide"] = 0.4
            folder = tmp_path / "runs" / dataset / run
            (folder / "fold0").mkdir(parents=True)
            (folder / "metrics.json").write_text(json.dumps(metrics))
            files.append(folder / "metrics.json")
            # one peaked attention (1 of 4 patches activated) per run, none for TransMIL
            weights = {} if run == "e2e_transmil" else {"s/attention": np.array([[0, 0, 0, 1.0]])}
            np.savez(folder / "fold0" / "attention.npz", **weights)
            attention.append(folder / "fold0" / "attention.npz")
    cache = tmp_path / "cache"
    for name, plan in plans.items():
        main(["table", "--name", name, "--plan", json.dumps(plan), "--out-dir", str(cache / name),
              "--metrics", *map(str, files), "--attention", *map(str, attention)])  # fmt: skip
    settings = {
        "datasets": tasks,
        "experiments": {
            n: {"title": e["title"], "kind": e["kind"]} for n, e in experiments.runs.items()
        },
    }
    write_tables(files, tmp_path / "tables", settings, declared=sorted(cache.iterdir()))
    assert {p.name for p in (tmp_path / "tables").iterdir()} >= {"main.csv", "main.md"} | {
        f"{name}.{ext}" for name in plans for ext in ("csv", "md", "tex")
    }
    markdown = (tmp_path / "tables" / "table1.md").read_text()
    assert (
        "| ABMIL (two-stage, R50 layer3 features) | 70.00 [60.00, 75.00] | 83.80 ± 6.55 |"
        in markdown
    )
    assert "| ABMILX + MRIS (E2E, R18 layer3) | 70.00 [60.00, 75.00] | 93.97 |" in markdown
    assert "initialised at random" in markdown
    sparsity = (tmp_path / "tables" / "sparsity.md").read_text()
    assert "| ABMIL (E2E) | 75.00 [75.00, 75.00] | 80 | 70.00 [60.00, 75.00] | 89.23 |" in sparsity
    assert "| TransMIL (E2E) | the model gives no attention | 13 |" in sparsity
    assert "min-max normalised" in sparsity
    table7 = pd.read_csv(tmp_path / "tables" / "table7.csv", dtype={"paper_value": str})
    rows = table7.set_index("row")
    assert rows.loc["ABMILX (n_heads=1)", "paper_value"] == "90.12"  # table7_heads, w/o MH.
    assert rows.loc["ABMILX (n_heads=8)", "run"] == "ablation_base"
    assert rows.loc["ABMILX (ffn=false)", "run"] == "ablation_base"
    regional = rows.loc["ABMILX + regional sampling (regions=2)"]
    assert regional["run"] == "abl_regions__regions-2" and regional["paper_value"] == "93.26"
    cost = (tmp_path / "tables" / "cost.md").read_text()
    assert "| 1e+06 | 26M+0.66M | 2e+09 | 2.12T | 12.5 | 900 | 0.4 |" in cost


@pytest.mark.parametrize("path", SHIPPED_CONFIGS, ids=lambda p: p.name)
def test_shipped_tables_resolve_with_the_paper_beside(path):
    """Every row of every shipped table is a run, and every paper reference is a printed cell."""
    config = load_config(path)
    experiments = resolve_experiments(config)
    tasks = {d: config["datasets"][d]["task"] for d in evaluation_datasets(config)}
    plans = plan_tables(config["tables"], experiments, tasks)
    assert plans
    paper = load_paper_values()
    for name, plan in plans.items():
        for row in plan["rows"]:
            members = row.get("best_of", [row])  # a derived row: the runs it picks from
            assert all(m["run"] in experiments.runs for m in members) or row["reason"], (name, row)
            if row["paper"] is None:  # the cost rows, the frozen encoder (not in the paper's text)
                continue
            values = [
                paper_cell(
                    paper,
                    row["paper"]["table"] or column["paper"]["table"],
                    row["paper"]["row"],
                    column["paper"]["column"],
                )
                for column in plan["columns"]
                if column["paper"]
            ]
            assert any(value is not None for value in values), (name, row["label"])
