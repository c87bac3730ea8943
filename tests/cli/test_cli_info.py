"""`abmilx info`: what a patch store or a run holds and how it was made, for people and machines."""

import json

import pytest

from abmilx.cli import main

pytestmark = pytest.mark.integration


def test_store_info_says_scales_patch_size_quality_counts_and_recipe(tiny_run, capsys):
    store = tiny_run / "results" / "tiles" / "tiny" / "patches.lmdb"
    assert main(["info", str(store), "--json"]) == 0
    found = json.loads(capsys.readouterr().out)
    assert found["type"] == "patch store"
    assert found["scales_mpp"] == {"main": 2.0, "low": 4.0}
    assert (found["patch_size"], found["jpeg_quality"]) == (32, 85)
    assert found["slides"] == len(found["per_slide"]) >= 8
    assert found["patches"]["main"] == sum(c["main"] for c in found["per_slide"].values())
    assert found["made_with"]["segmentation"]["min_tissue_area_um2"] == 20000
    assert main(["info", str(store)]) == 0
    text = capsys.readouterr().out
    assert "patch_size: 32" in text and "main: 2" in text
    mains = [c["main"] for c in found["per_slide"].values()]
    assert f"main: min {min(mains)}, median" in text and f"max {max(mains)}" in text
    assert next(iter(found["per_slide"])) not in text  # per-slide counts: --json only


def test_run_info_says_kind_task_settings_history_and_provenance(tiny_run, capsys):
    experiment = tiny_run / "results" / "runs" / "tiny" / "abmilx_e2e"
    assert main(["info", str(experiment / "fold0"), "--json"]) == 0
    found = json.loads(capsys.readouterr().out)
    assert (found["kind"], found["task"], found["classes"]) == (
        "e2e",
        "classification",
        ["IDC", "ILC"],
    )
    assert found["settings"]["mil_kwargs"]["n_heads"] == 4
    assert found["epochs_trained"] == 2 and found["selection"]["protocol"] == "last"
    assert found["provenance"]["encoder_weights"] == "pretrain:ssl"
    assert found["training_store"].endswith("tiles/tiny/patches.lmdb")
    assert main(["info", str(experiment)]) == 0
    text = capsys.readouterr().out
    assert "type: experiment" in text and "fold0:" in text and "kind: e2e" in text


def test_info_on_something_else_says_what_it_is_not(tmp_path, capsys):
    (tmp_path / "notes.txt").write_text("hello")
    assert main(["info", str(tmp_path / "notes.txt")]) == 1
    assert "neither a patch store nor a run" in capsys.readouterr().err
    assert main(["info", str(tmp_path)]) == 1
    assert "not a run folder" in capsys.readouterr().err
