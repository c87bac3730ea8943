"""`python -m abmilx.splits make`: sheets + QC records in, split CSV + sidecar JSON out."""

import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest


def write_inputs(tmp_path: Path, n_cases: int = 20) -> tuple[Path, Path, Path]:
    slides, labels = ["slide_id,case_id,path"], ["case_id,label"]
    qc_dir = tmp_path / "qc"
    qc_dir.mkdir()
    for case in range(n_cases):
        labels.append(f"P{case:02d},{'ILC' if case % 4 == 0 else 'IDC'}")
        for slide in range(2):
            slide_id = f"P{case:02d}-{slide}"
            slides.append(f"{slide_id},P{case:02d},slides/{slide_id}.svs")
            status = "failed" if slide_id == "P03-1" else "ok"
            record = {"dataset": "demo", "slide_id": slide_id, "status": status, "reason": "boom"}
            (qc_dir / f"{slide_id}.json").write_text(json.dumps(record))
    labels.append("P99,IDC")  # a label without slides: warned about
    (tmp_path / "slides.csv").write_text("\n".join(slides) + "\n")
    (tmp_path / "labels.csv").write_text("\n".join(labels) + "\n")
    return tmp_path / "slides.csv", tmp_path / "labels.csv", qc_dir


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "abmilx.splits", "make", *args],
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_make_writes_split_and_sidecar(tmp_path: Path) -> None:
    slides, labels, qc_dir = write_inputs(tmp_path)
    out = tmp_path / "splits" / "demo.csv"
    settings = {"classes": ["IDC", "ILC"], "scheme": "kfold", "k": 3, "seed": 4}
    result = run_cli(
        "--slides", str(slides), "--labels", str(labels), "--task", "classification",
        "--out", str(out), "--settings", json.dumps(settings), "--qc-dir", str(qc_dir),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "P03-1" in result.stderr and "P99" in result.stderr

    splits = pd.read_csv(out, dtype={"slide_id": str, "case_id": str})
    assert list(splits.columns) == ["slide_id", "case_id", "label", "split", "fold", "repeat"]
    assert "P03-1" not in set(splits["slide_id"])
    assert len(splits) == 3 * 39
    sidecar = json.loads(out.with_suffix(".json").read_text())
    assert sidecar["excluded"] == [{"slide_id": "P03-1", "status": "failed", "reason": "boom"}]
    assert sidecar["settings"]["k"] == 3
    assert any("P99" in w for w in sidecar["warnings"])
    assert (
        sum(sidecar["counts"]["0"]["test"].values())
        == (splits.query("fold == 0").split == "test").sum()
    )


def test_make_is_reproducible(tmp_path: Path) -> None:
    slides, labels, _ = write_inputs(tmp_path)
    outputs = []
    for name in ("a.csv", "b.csv"):
        out = tmp_path / name
        result = run_cli(
            "--slides", str(slides), "--labels", str(labels), "--task", "classification",
            "--out", str(out), "--settings", '{"seed": 1, "ratios": [0.7, 0.0, 0.3]}',
        )  # fmt: skip
        assert result.returncode == 0, result.stderr
        outputs.append(out.read_text())
    assert outputs[0] == outputs[1]


@pytest.mark.parametrize(
    ("settings", "message"),
    [('{"folds": 3}', "unknown settings key"), ('{"classes": ["IDC"]}', "unknown label 'ILC'")],
)
def test_make_rejects_bad_settings(tmp_path: Path, settings: str, message: str) -> None:
    slides, labels, _ = write_inputs(tmp_path)
    result = run_cli(
        "--slides", str(slides), "--labels", str(labels), "--task", "classification",
        "--out", str(tmp_path / "x.csv"), "--settings", settings,
    )  # fmt: skip
    assert result.returncode != 0
    assert message in result.stderr
    assert not (tmp_path / "x.csv").exists()
