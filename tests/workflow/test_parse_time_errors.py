"""Every mistake of issue #8 makes `snakemake -n` fail while parsing, before any job, with a
message naming the file or config key and what is allowed."""

import copy
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from abmilx.config import REPO_ROOT

BIN = Path(sys.executable).parent
SLIDES = "slide_id,case_id,path\ns1,c1,slides/a.svs\ns2,c1,slides/b.svs\ns3,c2,slides/c.svs\n"
LABELS = "slide_id,label\ns1,IDC\ns2,IDC\ns3,ILC\n"
CONFIG = {
    "datasets": {
        "mine": {
            "task": "subtyping",
            "classes": ["IDC", "ILC"],
            "slides": "slides.csv",
            "labels": "labels.csv",
        }
    },
    "tiling": {"scales": {"main": 1.0, "low": 2.0}},
    "feature_sets": {"r18": {"encoder": "resnet18_layer3", "weights": "random"}},
    "experiments": {
        "ts": {"kind": "two_stage", "features": "r18", "settings": {"mil": "abmil"}},
        "x": {
            "kind": "e2e",
            "settings": {"encoder_weights": "random", "mil_kwargs": {"n_heads": 2}},
        },
    },
}


def dry_run(workdir: Path, config=CONFIG, slides=SLIDES, labels=LABELS) -> str:
    """`snakemake -n` on a sheet-based cohort in ``workdir``; returns the output of a failure."""
    (workdir / "slides").mkdir(exist_ok=True)
    for name in ("a", "b", "c"):
        (workdir / "slides" / f"{name}.svs").write_bytes(b"not read at parse time")
    (workdir / "slides.csv").write_text(slides)
    (workdir / "labels.csv").write_text(labels)
    (workdir / "config.yaml").write_text(yaml.safe_dump(config))
    result = subprocess.run(
        [str(BIN / "snakemake"), "-n", "--snakefile", str(REPO_ROOT / "Snakefile"),
         "--directory", str(workdir)],
        env={**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}"},
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    output = result.stdout + result.stderr
    if result.returncode == 0:
        return ""
    assert "Job stats" not in output, output  # failed while parsing, before any job
    return output


def changed(edit) -> dict:
    config = copy.deepcopy(CONFIG)
    edit(config)
    return config


def settings(config: dict, experiment: str = "x") -> dict:
    return config["experiments"][experiment]["settings"]


def test_the_base_config_plans_every_stage(tmp_path):
    assert dry_run(tmp_path) == ""


def test_unknown_mil(tmp_path):
    output = dry_run(tmp_path, changed(lambda c: settings(c).update(mil="abmilz")))
    assert "config.yaml" in output and "'experiments/x/settings/mil'" in output
    assert "'abmilz' is not one of" in output and "'abmilx'" in output and "'transmil'" in output


def test_unknown_encoder(tmp_path):
    output = dry_run(tmp_path, changed(lambda c: c["feature_sets"]["r18"].update(encoder="r19")))
    assert "'feature_sets/r18/encoder'" in output
    assert "'r19' is not one of" in output and "'resnet18_layer3'" in output


def test_misspelled_model_option(tmp_path):
    output = dry_run(tmp_path, changed(lambda c: settings(c)["mil_kwargs"].update(n_headz=4)))
    assert "'experiments/x/settings/mil_kwargs'" in output
    assert "unknown option(s) of MIL model 'abmilx': 'n_headz'" in output
    assert "(allowed: act, alpha," in output and " n_heads," in output


def test_missing_weights_file(tmp_path):
    output = dry_run(
        tmp_path, changed(lambda c: settings(c).update(encoder_weights="weights/r18.pth"))
    )
    assert "'experiments/x/settings/encoder_weights'" in output
    assert "weights file 'weights/r18.pth' does not exist" in output
    assert "give imagenet, random, hub or the path of a local checkpoint" in output


def test_split_ratios_not_summing_to_one(tmp_path):
    edit = changed(lambda c: c["datasets"]["mine"].update(split={"ratios": [0.7, 0.2, 0.3]}))
    output = dry_run(tmp_path, edit)
    assert "'datasets/mine/split/ratios'" in output
    assert "fractions [0.7, 0.2, 0.3] sum to 1.2, not 1" in output


def test_experiment_on_an_unknown_dataset(tmp_path):
    output = dry_run(tmp_path, changed(lambda c: c["experiments"]["ts"].update(datasets=["min"])))
    assert "'experiments/ts/datasets': no dataset 'min' (datasets: mine)" in output


def test_header_only_slide_sheet(tmp_path):
    output = dry_run(tmp_path, slides="slide_id,case_id,path\n")
    assert "slides.csv: no rows: the sheet lists no slides" in output


def test_header_only_label_sheet(tmp_path):
    output = dry_run(tmp_path, labels="slide_id,label\n")
    assert "labels.csv: no rows: the sheet lists no labels" in output


def test_case_with_two_labels(tmp_path):
    output = dry_run(tmp_path, labels="slide_id,label\ns1,IDC\ns2,ILC\ns3,ILC\n")
    assert (
        "labels.csv, line 3, column 'label': case 'c1' has two labels: 'ILC' for slide 's2' "
        "here and 'IDC' for slide 's1' on line 2" in output
    )


def test_sheet_with_another_delimiter(tmp_path):
    output = dry_run(tmp_path, slides=SLIDES.replace(",", ";"))
    assert "slides.csv, line 1: the sheet is semicolon-separated" in output
    assert "write it comma-separated" in output


@pytest.mark.parametrize(
    ("edit", "key", "message"),
    [
        (
            lambda c: c["tiling"].update(scales={"main": 1.0}),
            "'experiments/x/settings/scale_ratio'",
            "scale_ratio 4 samples the low scale 'low', which is not tiled "
            "(tiling/scales has: main)",
        ),
        (
            lambda c: settings(c).update(scales={"main": "main", "low": "lo"}),
            "'experiments/x/settings/scale_ratio'",
            "samples the low scale 'lo', which is not tiled (tiling/scales has: low, main)",
        ),
    ],
    ids=["no-low-scale-tiled", "untiled-low-scale-named"],
)
def test_sampling_scales_the_tiling_does_not_produce(tmp_path, edit, key, message):
    output = dry_run(tmp_path, changed(edit))
    assert key in output and message in output


def test_unknown_feature_set(tmp_path):
    output = dry_run(tmp_path, changed(lambda c: c["experiments"]["ts"].update(features="r50")))
    assert "'experiments/ts/features': no feature set 'r50' (feature_sets: r18)" in output
