"""`abmilx predict` on two test slides of a finished tiny run equals the evaluation stage."""

import json

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from abmilx.cli import main

EXPERIMENTS = ("abmilx_e2e", "abmil_two_stage")


def _new_slides(workdir, tmp_path) -> tuple[list[str], object]:
    """A slide sheet of one test slide per class, as a user would write it for new slides."""
    splits = pd.read_csv(workdir / "results" / "splits" / "tiny.csv")
    test = splits[splits.split == "test"].drop_duplicates("label")
    chosen = test.slide_id.tolist()
    cohort = workdir / "results" / "cohort" / "tiny"
    sheet = pd.read_csv(cohort / "slides.csv").set_index("slide_id").loc[chosen].reset_index()
    sheet["path"] = [str(cohort / path) for path in sheet.path]
    sheet.to_csv(tmp_path / "new_slides.csv", index=False)
    return chosen, tmp_path / "new_slides.csv"


@pytest.mark.integration
@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_predict_equals_the_evaluation_stage(tiny_run, tmp_path, experiment):
    slides, sheet = _new_slides(tiny_run, tmp_path)
    assert len(slides) == 2
    run = tiny_run / "results" / "runs" / "tiny" / experiment
    out = tmp_path / "predicted"
    labels = tiny_run / "results" / "cohort" / "tiny" / "labels.csv"
    code = main(["predict", "--run", str(run), "--slides", str(sheet), "--out", str(out),
                 "--labels", str(labels), "--device", "cpu"])  # fmt: skip
    assert code == 0

    evaluated = pd.read_csv(run / "fold0" / "predictions.csv")
    predicted = pd.read_csv(out / "predictions.csv")
    assert list(predicted.columns) == list(evaluated.columns)
    expected = evaluated.set_index("slide_id").loc[slides]
    got = predicted.set_index("slide_id").loc[slides]
    probs = [c for c in evaluated.columns if c.startswith("prob_")]
    np.testing.assert_allclose(got[probs], expected[probs], rtol=0, atol=1e-6)
    assert got.pred.tolist() == expected.pred.tolist()
    assert got.label.tolist() == expected.label.tolist()

    with np.load(run / "fold0" / "attention.npz") as a, np.load(out / "attention.npz") as b:
        for slide_id in slides:  # same patches (same tiling), same attention
            np.testing.assert_array_equal(b[f"{slide_id}/coords"], a[f"{slide_id}/coords"])
            np.testing.assert_allclose(
                b[f"{slide_id}/attention"], a[f"{slide_id}/attention"], rtol=0, atol=1e-6
            )
    heatmaps = sorted(path.stem for path in (out / "heatmaps").glob("*.png"))
    assert heatmaps == sorted(slides)
    for slide_id in slides:  # the same attention as QuPath GeoJSON: tissue, then one tile a patch
        features = json.loads((out / "qupath" / f"{slide_id}.geojson").read_text())["features"]
        tiles = [f for f in features if f["properties"]["objectType"] == "tile"]
        assert {f["properties"]["objectType"] for f in features} == {"annotation", "tile"}
        with np.load(out / "attention.npz") as stored:
            mean = stored[f"{slide_id}/attention"].astype(np.float64).mean(axis=0)
        measured = [t["properties"]["measurements"]["attention mean"] for t in tiles]
        np.testing.assert_allclose(measured, mean, rtol=1e-6)
    for slide_id in slides:
        with Image.open(out / "heatmaps" / f"{slide_id}.png") as image:
            assert image.width > 400 and image.height > 200
    qc = pd.read_csv(out / "slides.tsv", sep="\t")
    assert sorted(qc.slide_id) == sorted(slides) and set(qc.status) == {"ok"}


def test_predict_refuses_a_folder_that_is_not_empty(tmp_path, capsys):
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "keep.txt").write_text("mine")
    code = main(["predict", "--run", str(tmp_path), "--slides", str(tmp_path / "s.csv"),
                 "--out", str(tmp_path / "out")])  # fmt: skip
    assert code == 1
    assert "is not empty" in capsys.readouterr().err
    assert (tmp_path / "out" / "keep.txt").read_text() == "mine"


def test_predict_names_a_folder_that_is_not_a_run(tmp_path, capsys):
    (tmp_path / "a.svs").write_bytes(b"")
    (tmp_path / "s.csv").write_text("slide_id,case_id,path\nA,a,a.svs\n")
    code = main(["predict", "--run", str(tmp_path), "--slides", str(tmp_path / "s.csv"),
                 "--out", str(tmp_path / "out")])  # fmt: skip
    assert code == 1
    assert f"{tmp_path}: no model.pt" in capsys.readouterr().err


def test_a_bad_slide_sheet_fails_first_naming_file_row_and_column(tmp_path, capsys):
    sheet = tmp_path / "new.csv"
    sheet.write_text("slide_id,case_id,path\nS1,C1,missing.svs\n")
    code = main(["predict", "--run", str(tmp_path), "--slides", str(sheet),
                 "--out", str(tmp_path / "out")])  # fmt: skip
    assert code == 1
    err = capsys.readouterr().err
    assert str(sheet) in err and "line 2" in err and "'path'" in err and "missing.svs" in err


@pytest.mark.integration
def test_predict_fails_naming_slides_it_could_not_predict_unless_partial_is_allowed(
    tiny_run, tmp_path, capsys
):
    slides, sheet = _new_slides(tiny_run, tmp_path)
    (tmp_path / "broken.svs").write_bytes(b"II*\x00" + bytes(64))  # a TIFF header, no image
    with open(sheet, "a") as handle:
        handle.write(f"broken,broken_case,{tmp_path / 'broken.svs'}\n")
    run = tiny_run / "results" / "runs" / "tiny" / "abmil_two_stage"
    code = main(["predict", "--run", str(run), "--slides", str(sheet),
                 "--out", str(tmp_path / "strict"), "--device", "cpu"])  # fmt: skip
    assert code == 1
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert "1 slide(s) not predicted: broken (failed" in err and "--allow-partial" in err
    assert set(pd.read_csv(tmp_path / "strict" / "predictions.csv").slide_id) == set(slides)
    code = main(["predict", "--run", str(run), "--slides", str(sheet),
                 "--out", str(tmp_path / "partial"), "--device", "cpu", "--allow-partial"])  # fmt: skip
    assert code == 0
    assert set(pd.read_csv(tmp_path / "partial" / "predictions.csv").slide_id) == set(slides)
