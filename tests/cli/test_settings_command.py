"""`abmilx settings`: the JSON a training job gets, the protocol one of its keys."""

import json

import pytest

from abmilx.cli import main
from abmilx.config import REPO_ROOT, load_config
from abmilx.experiments import resolve_experiments, training_settings

PAPER = REPO_ROOT / "workflow" / "configs" / "paper" / "tcga_brca_subtyping.yaml"
DATASET = "tcga_brca_subtyping"


def _settings(capsys, *args):
    assert main(["settings", str(PAPER), *args, "--dataset", DATASET]) == 0
    out, err = capsys.readouterr()
    return json.loads(out), err


def test_it_prints_what_the_rule_passes(capsys):
    printed, _ = _settings(capsys, "e2e_r18_abmilx")
    config = load_config(PAPER)
    resolved = resolve_experiments(config)
    run = resolved.runs[resolved.run_of["e2e_r18_abmilx"]]
    assert printed == training_settings(config, run, DATASET)
    assert printed["protocol"] == "clean" and printed["batch_size"] == 6


def test_official_shows_the_official_training(capsys):
    printed, _ = _settings(capsys, "e2e_r18_abmilx", "--protocol", "official")
    assert printed["protocol"] == "official"
    assert (printed["batch_size"], printed["micro_batch_size"]) == (6, 3)
    assert printed["early_stopping"] == {"patience": 10, "after_epoch": 50}
    assert printed["ema"] == 0.9997 and printed["selection"] == "test_official"
    assert (printed["aug_chunks"], printed["channel_order"]) == (4, "bgr")


def test_a_swapped_aggregator_shows_the_shared_mil_settings(capsys):
    printed, err = _settings(capsys, "e2e_r18_transmil")
    assert printed["mil"] == "transmil"
    assert printed["mil_kwargs"] == {
        "hidden_dim": 256, "mil_norm": "ln", "mil_bias": False, "act": "gelu", "dropout": 0.25,
    }  # fmt: skip
    assert "mil abmilx -> transmil" in err and '"n_heads": 8' in err


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["nope", "--dataset", DATASET], "no experiment 'nope'"),
        (["e2e_r18_abmilx", "--dataset", "nope"], "no evaluation dataset 'nope'"),
    ],
)
def test_unknown_names_fail_naming_them(capsys, args, message):
    assert main(["settings", str(PAPER), *args]) == 1
    assert message in capsys.readouterr().err
