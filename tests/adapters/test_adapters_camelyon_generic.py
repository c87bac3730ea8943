"""CAMELYON16/17 and the generic adapter, plus the command line."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from adapters_support import joined, reasons, touch, write

from abmilx.adapters import adapt
from abmilx.sheets import SheetError

C16_REFERENCE = "test_001,Tumor,Macro,Field\ntest_002,Normal,,\ntest_049,Tumor,Micro,Field\n"
C17_LABELS = """patient,stage
patient_000.zip,pN0
patient_000_node_0.tif,negative
patient_000_node_1.tif,negative
patient_004.zip,pN1
patient_004_node_3.tif,macro
patient_004_node_4.tif,itc
patient_009.zip,pN1mi
patient_009_node_1.tif,micro
"""


@pytest.fixture
def camelyon(tmp_path):
    touch(
        tmp_path,
        "c16/training/normal/normal_001.tif", "c16/training/tumor/tumor_001.tif",
        "c16/testing/images/test_001.tif", "c16/testing/images/test_002.tif",
        "c16/testing/images/test_049.tif", "c16/testing/images/test_114.tif",
        "c17/centre_0/patient_000_node_0.tif", "c17/centre_0/patient_000_node_1.tif",
        "c17/centre_2/patient_004_node_3.tif", "c17/centre_2/patient_004_node_4.tif",
        "c17/centre_4/patient_100_node_0.tif",
    )  # fmt: skip
    return (
        write(tmp_path / "c16/testing/reference.csv", C16_REFERENCE),
        write(tmp_path / "c17/stage_labels.csv", C17_LABELS),
    )


def test_camelyon16_and_17(tmp_path, camelyon):
    reference, stage_labels = camelyon
    slides_csv, labels_csv, report = adapt(
        "camelyon", tmp_path / "out",
        c16_dir=str(tmp_path / "c16"), c16_reference=str(reference),
        c17_dir=str(tmp_path / "c17"), c17_labels=str(stage_labels),
    )  # fmt: skip
    table = joined(slides_csv, labels_csv, "classification", ["normal", "tumor"])
    label = dict(zip(table["slide_id"], table["label"], strict=True))
    assert label == {
        "normal_001": "normal", "tumor_001": "tumor", "test_001": "tumor", "test_002": "normal",
        "patient_000_node_0": "normal", "patient_000_node_1": "normal",
        "patient_004_node_3": "tumor", "patient_004_node_4": "tumor",
    }  # fmt: skip
    case = dict(zip(table["slide_id"], table["case_id"], strict=True))
    assert case["patient_004_node_4"] == "patient_004" and case["test_001"] == "test_001"
    excluded = reasons(report.excluded)
    assert set(excluded) == {"test_049", "test_114"} and "issue #21" in excluded["test_049"]
    assert [i["line"] for i in report.excluded if i["id"] == "test_049"] == [3]
    assert set(reasons(report.unmatched_slides)) == {"patient_100_node_0"}
    assert [(i["id"], i["file"], i["line"]) for i in report.unmatched_labels] == [
        ("patient_009_node_1", str(stage_labels), 9)
    ]


def test_camelyon17_bad_stage(tmp_path, camelyon):
    _, stage_labels = camelyon
    write(stage_labels, C17_LABELS.replace("node_4.tif,itc", "node_4.tif,isolated"))
    with pytest.raises(SheetError) as error:
        adapt(
            "camelyon", tmp_path / "o", c17_dir=str(tmp_path / "c17"), c17_labels=str(stage_labels)
        )
    assert (error.value.file, error.value.row, error.value.column) == (
        str(stage_labels),
        7,
        "stage",
    )


def test_generic_slide_level_with_label_map(tmp_path):
    touch(tmp_path, "wsi/s1.svs", "wsi/s2.ndpi", "wsi/s3.mrxs", "wsi/s9.svs")
    labels = write(
        tmp_path / "mine.csv",
        "Slide,Patient,Dx,Fold\ns1.svs,p1,benign,train\ns2,p1,malignant,test\n"
        "s3,p2,unsure,train\ns4,p3,benign,val\n",
    )
    slides_csv, labels_csv, report = adapt(
        "generic", tmp_path / "out", labels=str(labels), slide_dir=str(tmp_path / "wsi"),
        columns={"slide_id": "Slide", "case_id": "Patient", "label": "Dx", "split": "Fold"},
        classes=["normal", "tumor"], label_map={"benign": "normal", "malignant": "tumor"},
    )  # fmt: skip
    table = joined(slides_csv, labels_csv, "classification", ["normal", "tumor"])
    assert table[["slide_id", "case_id", "label", "split"]].values.tolist() == [
        ["s1", "p1", "normal", "train"], ["s2", "p1", "tumor", "test"],
    ]  # fmt: skip
    assert reasons(report.excluded) == {"s3": "label 'unsure' is not one of ['normal', 'tumor']"}
    assert set(reasons(report.unmatched_slides)) == {"s9"}
    assert [i["id"] for i in report.unmatched_labels] == ["s4"]


def test_generic_case_level_survival_in_days(tmp_path):
    touch(tmp_path, "wsi/P1_a.svs", "wsi/P1_b.svs", "wsi/P2_a.svs", "wsi/odd.svs")
    labels = write(tmp_path / "os.tsv", "pid\tdays\tdead\nP1\t304.4\t1\nP2\t60.88\t0\nP3\t10\t2\n")
    slides_csv, labels_csv, report = adapt(
        "generic", tmp_path / "out", labels=str(labels), slide_dir=str(tmp_path / "wsi"),
        columns={"case_id": "pid", "time": "days", "event": "dead"}, task="survival",
        case_pattern=r"^(P\d+)_", time_unit="days",
    )  # fmt: skip
    table = joined(slides_csv, labels_csv, "survival")
    assert table.groupby("case_id")["time"].first().to_dict() == pytest.approx(
        {"P1": 10.0, "P2": 2.0}
    )
    assert (table["case_id"] == "P1").sum() == 2
    assert reasons(report.excluded) == {"P3": "event must be 0 or 1, got '2'"}
    assert reasons(report.unmatched_slides) == {"odd": "case_pattern does not match"}


def test_generic_missing_column(tmp_path):
    touch(tmp_path, "wsi/s1.svs")
    labels = write(tmp_path / "mine.csv", "Slide,Dx\ns1,a\n")
    with pytest.raises(SheetError) as error:
        adapt(
            "generic", tmp_path / "o", labels=str(labels), slide_dir=str(tmp_path / "wsi"),
            columns={"slide_id": "Slide", "label": "Diagnosis"},
        )  # fmt: skip
    assert (error.value.file, error.value.row, error.value.column) == (str(labels), 1, "Diagnosis")
    assert "no label column" in str(error.value)


def test_cli_writes_sheets_and_reports_errors(tmp_path, camelyon):
    _, stage_labels = camelyon
    settings = {"c17_dir": str(tmp_path / "c17"), "c17_labels": str(stage_labels)}
    command = [
        sys.executable,
        "-m",
        "abmilx.adapters",
        "camelyon",
        "--out-dir",
        str(tmp_path / "o"),
    ]
    done = subprocess.run(
        [*command, "--settings", json.dumps(settings)], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["n_slides"] == 4
    assert "patient_100_node_0" in done.stderr  # unmatched slides are logged, not dropped silently
    assert (tmp_path / "o" / "slides.csv").is_file() and (tmp_path / "o" / "report.json").is_file()
    settings["c17_label"] = settings.pop("c17_labels")
    done = subprocess.run(
        [*command, "--settings", json.dumps(settings)], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 2 and "unknown option(s) ['c17_label']" in done.stderr
