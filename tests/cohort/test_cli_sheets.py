"""Sheets and the ``python -m abmilx.cohort`` commands, as Snakemake jobs call them."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import openslide
import pandas as pd
import pytest

from abmilx.cohort import (
    PLAN_COLUMNS,
    plan_cohort,
    plan_from_settings,
    slide_plan,
    split_settings,
    write_sheets,
)
from abmilx.cohort.__main__ import main

SETTINGS = {
    "task": "subtyping",
    "n_slides": 12,
    "n_cases": 9,
    "seed": 3,
    "width_um": 400,
    "height_um": 300,
}


def test_classification_sheets(tmp_path):
    plan = plan_cohort("demo", "subtyping", 12, 9, seed=3)
    slides_path, labels_path = write_sheets(plan, tmp_path)
    slides = pd.read_csv(slides_path)
    labels = pd.read_csv(labels_path)
    assert list(slides.columns) == ["slide_id", "case_id", "path", "mpp"]
    assert (slides["path"] == "slides/" + plan["file"]).all()
    nompp = plan["slide_format"] == "nompp"
    assert (slides.loc[nompp, "mpp"] == 0.5).all() and nompp.any()
    assert slides.loc[~nompp, "mpp"].isna().all()
    assert list(labels.columns) == ["slide_id", "case_id", "label"]
    assert labels["label"].tolist() == plan["label"].tolist()


def test_survival_label_sheet_has_one_row_per_case(tmp_path):
    plan = plan_cohort("demo", "survival", 12, 9, seed=3)
    _, labels_path = write_sheets(plan, tmp_path)
    labels = pd.read_csv(labels_path)
    assert list(labels.columns) == ["case_id", "time", "event"]
    assert labels["case_id"].is_unique and len(labels) == 9
    assert labels["event"].isin([0, 1]).all() and (labels["time"] > 0).all()


def test_settings_split_and_unknown_keys():
    plan_kw, render_kw = split_settings(SETTINGS | {"pen_probability": 0.5})
    assert plan_kw == {"task": "subtyping", "n_slides": 12, "n_cases": 9, "seed": 3}
    assert render_kw == {"width_um": 400, "height_um": 300, "pen_probability": 0.5}
    with pytest.raises(ValueError, match="unknown cohort settings \\['pen'\\]"):
        split_settings(SETTINGS | {"pen": 1})
    with pytest.raises(ValueError, match="lack required keys \\['seed'\\]"):
        split_settings({k: v for k, v in SETTINGS.items() if k != "seed"})
    assert len(plan_from_settings("demo", SETTINGS)) == 12


def test_slide_command_in_a_fresh_interpreter(tmp_path):
    """The exact command a Snakemake job runs; output equals the in-process rendering."""
    plan = plan_from_settings("demo", SETTINGS)
    row = plan[plan["slide_format"] == "nompp"].iloc[0]
    out = tmp_path / "slides" / row["file"]
    command = [
        sys.executable,
        "-m",
        "abmilx.cohort",
        "slide",
        "--dataset",
        "demo",
        "--slide-id",
        row["slide_id"],
        "--out",
        str(out),
        "--truth",
        str(tmp_path / "t.npz"),
        "--settings",
        json.dumps(SETTINGS),
        "--threads",
        "1",
    ]
    subprocess.run(command, check=True, timeout=120)
    with openslide.OpenSlide(out) as slide:
        assert slide.dimensions == (800, 600)
        assert "openslide.mpp-x" not in slide.properties
    again = tmp_path / "again" / row["file"]
    args = command[3:]
    args[args.index("--out") + 1] = str(again)
    args[args.index("--truth") + 1] = str(tmp_path / "again.npz")
    assert main(args) == 0
    assert out.read_bytes() == again.read_bytes()


@pytest.mark.parametrize(
    "settings",
    [SETTINGS, {"task": "pretraining", "n_slides": 9, "n_cases": 9, "seed": 5}],
    ids=["subtyping", "pretraining"],
)
def test_a_slide_job_plans_without_pandas_and_gets_the_plan_row(settings):
    """The per-slide plan is the DataFrame's row, and ``python -m abmilx.cohort slide`` loads no
    pandas (its import was over half of a synthesis job)."""
    plan = plan_from_settings("demo", settings)
    for row in plan.itertuples(index=False):
        record = slide_plan("demo", settings, row.slide_id)
        expected = row._asdict()
        assert all(
            record[key] == expected[key] or (pd.isna(record[key]) and pd.isna(expected[key]))
            for key in PLAN_COLUMNS
        )
    probe = (
        "import sys, runpy; sys.argv = ['abmilx.cohort', '--help']\n"
        "try: runpy.run_module('abmilx.cohort', run_name='__main__')\n"
        "except SystemExit: pass\n"
        "from abmilx.cohort import slide_plan, synthesize_slide\n"
        "assert 'pandas' not in sys.modules, 'pandas imported'"
    )
    subprocess.run([sys.executable, "-c", probe], check=True, timeout=120, capture_output=True)


def test_plan_and_sheets_commands(tmp_path, capsys):
    settings = json.dumps(SETTINGS)
    assert (
        main(
            ["plan", "--dataset", "demo", "--settings", settings, "--out", str(tmp_path / "p.csv")]
        )
        == 0
    )
    written = pd.read_csv(tmp_path / "p.csv")
    assert written["slide_id"].tolist() == plan_from_settings("demo", SETTINGS)["slide_id"].tolist()
    assert (
        main(["sheets", "--dataset", "demo", "--settings", settings, "--out-dir", str(tmp_path)])
        == 0
    )
    assert {p.name for p in Path(tmp_path).glob("*.csv")} == {"p.csv", "slides.csv", "labels.csv"}


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"settings": {**SETTINGS, "colour": 1}}, "unknown cohort settings ['colour']"),
        ({"slide_id": "SUB-0999"}, "SUB-0999"),
        ({"out": "SUB-0001.png"}, "must end in"),
    ],
)
def test_slide_command_errors_are_clear(tmp_path, capsys, change, message):
    args = {"settings": SETTINGS, "slide_id": "SUB-0001", "out": "SUB-0001.svs"} | change
    plan = plan_from_settings("demo", SETTINGS)
    if args["out"] == "SUB-0001.svs":
        args["out"] = plan.loc[plan["slide_id"] == "SUB-0001", "file"].iloc[0]
    code = main(
        [
            "slide",
            "--dataset",
            "demo",
            "--slide-id",
            args["slide_id"],
            "--out",
            str(tmp_path / args["out"]),
            "--truth",
            str(tmp_path / "t.npz"),
            "--settings",
            json.dumps(args["settings"]),
        ]
    )
    assert code == 2
    assert message in capsys.readouterr().err
    assert not np.any([p.suffix in {".svs", ".tif"} for p in tmp_path.iterdir()])
