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


def changed(edit) -> dict:
    config = copy.deepcopy(CONFIG)
    edit(config)
    return config


def settings(config: dict, experiment: str = "x") -> dict:
    return config["experiments"][experiment]["settings"]


# name -> what differs from the valid cohort above (config, slide sheet or label sheet)
MISTAKES = {
    "unknown_mil": {"config": changed(lambda c: settings(c).update(mil="abmilz"))},
    "unknown_encoder": {
        "config": changed(lambda c: c["feature_sets"]["r18"].update(encoder="r19"))
    },
    "misspelled_option": {"config": changed(lambda c: settings(c)["mil_kwargs"].update(n_headz=4))},
    "missing_weights": {
        "config": changed(lambda c: settings(c).update(encoder_weights="weights/r18.pth"))
    },
    "ratios": {
        "config": changed(lambda c: c["datasets"]["mine"].update(split={"ratios": [0.7, 0.2, 0.3]}))
    },
    "unknown_dataset": {
        "config": changed(lambda c: c["experiments"]["ts"].update(datasets=["min"]))
    },
    "header_only_slides": {"slides": "slide_id,case_id,path\n"},
    "header_only_labels": {"labels": "slide_id,label\n"},
    "two_labels": {"labels": "slide_id,label\ns1,IDC\ns2,ILC\ns3,ILC\n"},
    "delimiter": {"slides": SLIDES.replace(",", ";")},
    "no_low_scale_tiled": {"config": changed(lambda c: c["tiling"].update(scales={"main": 1.0}))},
    "untiled_low_scale": {
        "config": changed(lambda c: settings(c).update(scales={"main": "main", "low": "lo"}))
    },
    "unknown_feature_set": {
        "config": changed(lambda c: c["experiments"]["ts"].update(features="r50"))
    },
}


def start_dry_run(workdir: Path, config=CONFIG, slides=SLIDES, labels=LABELS) -> subprocess.Popen:
    """`snakemake -n` on a sheet-based cohort written to ``workdir``."""
    (workdir / "slides").mkdir()
    for name in ("a", "b", "c"):
        (workdir / "slides" / f"{name}.svs").write_bytes(b"not read at parse time")
    (workdir / "slides.csv").write_text(slides)
    (workdir / "labels.csv").write_text(labels)
    (workdir / "config.yaml").write_text(yaml.safe_dump(config))
    return subprocess.Popen(
        [str(BIN / "snakemake"), "-n", "--snakefile", str(REPO_ROOT / "Snakefile"),
         "--directory", str(workdir)],
        env={**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}"},
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip


@pytest.fixture(scope="module")
def dry_runs(tmp_path_factory) -> dict[str, tuple[int, str]]:
    """Exit status and output of the dry run of the valid cohort ("valid") and of each mistake,
    all run at once."""
    cases = {"valid": {}, **MISTAKES}
    started = {
        name: start_dry_run(tmp_path_factory.mktemp(name), **change)
        for name, change in cases.items()
    }
    outputs = {name: process.communicate(timeout=600)[0] for name, process in started.items()}
    return {name: (started[name].returncode, output) for name, output in outputs.items()}


@pytest.fixture
def failure(dry_runs):
    def output_of(mistake: str) -> str:
        returncode, output = dry_runs[mistake]
        assert returncode != 0, output
        assert "Job stats" not in output, output  # failed while parsing, before any job
        return output

    return output_of


def test_the_valid_cohort_plans_every_stage(dry_runs):
    returncode, output = dry_runs["valid"]
    assert returncode == 0, output
    assert "train_e2e" in output and "train_two_stage" in output


def test_unknown_mil(failure):
    output = failure("unknown_mil")
    assert "config.yaml" in output and "'experiments/x/settings/mil'" in output
    assert "'abmilz' is not one of" in output and "'abmilx'" in output and "'transmil'" in output


def test_unknown_encoder(failure):
    output = failure("unknown_encoder")
    assert "'feature_sets/r18/encoder'" in output
    assert "'r19' is not one of" in output and "'resnet18_layer3'" in output


def test_misspelled_model_option(failure):
    output = failure("misspelled_option")
    assert "'experiments/x/settings/mil_kwargs'" in output
    assert "unknown option(s) of MIL model 'abmilx': 'n_headz' (did you mean 'n_heads'?)" in output
    assert "(allowed: act, alpha," in output and " n_heads," in output


def test_missing_weights_file(failure):
    output = failure("missing_weights")
    assert "'experiments/x/settings/encoder_weights'" in output
    assert "weights file 'weights/r18.pth' does not exist" in output
    assert "give imagenet, random, hub or the path of a local checkpoint" in output


def test_split_ratios_not_summing_to_one(failure):
    output = failure("ratios")
    assert "'datasets/mine/split/ratios'" in output
    assert "fractions [0.7, 0.2, 0.3] sum to 1.2, not 1" in output


def test_experiment_on_an_unknown_dataset(failure):
    output = failure("unknown_dataset")
    assert "config.yaml" in output
    assert "'experiments/ts/datasets': no dataset ['min']; known: mine" in output


def test_header_only_slide_sheet(failure):
    assert "slides.csv: no rows: the sheet lists no slides" in failure("header_only_slides")


def test_header_only_label_sheet(failure):
    assert "labels.csv: no rows: the sheet lists no labels" in failure("header_only_labels")


def test_case_with_two_labels(failure):
    assert (
        "labels.csv, line 3, column 'label': case 'c1' has two labels: 'ILC' for slide 's2' "
        "here and 'IDC' for slide 's1' on line 2" in failure("two_labels")
    )


def test_sheet_with_another_delimiter(failure):
    output = failure("delimiter")
    assert "slides.csv, line 1: the sheet is semicolon-separated" in output
    assert "write it comma-separated" in output


@pytest.mark.parametrize(
    ("mistake", "message"),
    [
        (
            "no_low_scale_tiled",
            "scale_ratio 4 samples the low scale 'low', which is not tiled "
            "(tiling/scales has: main)",
        ),
        (
            "untiled_low_scale",
            "samples the low scale 'lo', which is not tiled (tiling/scales has: low, main)",
        ),
    ],
)
def test_sampling_scales_the_tiling_does_not_produce(failure, mistake, message):
    output = failure(mistake)
    assert "'experiments/x/settings/scale_ratio'" in output and message in output


def test_unknown_feature_set(failure):
    output = failure("unknown_feature_set")
    assert "'experiments/ts/features': no feature set 'r50'; known: r18" in output
