"""Experiment presets, bases and grids: expansion, inheritance, run identity, stable names."""

import copy
import inspect
import re
from pathlib import Path

import pytest
import yaml

from abmilx.config import REPO_ROOT, ConfigError, load_config, validate_config
from abmilx.experiments import (
    evaluation_weights,
    get_preset,
    list_presets,
    resolve_experiments,
    run_identity,
)
from abmilx.models.mil.abmilx import ABMILX

# The shipped configs' experiments before presets existed: presets must keep their settings.
BEFORE_PRESETS = yaml.safe_load(
    (Path(__file__).with_name("experiments_before_presets.yaml")).read_text()
)
DATASETS = {
    "d": {"task": "subtyping", "classes": ["a", "b"], "synthetic": {}},
    "e": {"task": "survival", "synthetic": {}},
}
FEATURES = {"r50": {"encoder": "resnet50_layer3", "weights": "random"}}


def _resolve(experiments):
    config = validate_config(
        {"datasets": DATASETS, "feature_sets": FEATURES, "experiments": experiments}
    )
    return resolve_experiments(config)


def _effective(experiment):
    """Settings as the model sees them: options equal to ABMILX's constructor defaults (the
    presets state attn_plus, act and dropout) are left out."""
    experiment = {k: copy.deepcopy(v) for k, v in experiment.items() if k != "mil_handover"}
    settings = experiment["settings"]
    settings.pop("protocol", None)  # recorded since issue #23; clean, as before
    # attention snapshots for the paper's figures (issue #22) record, they do not change training
    settings.pop("callbacks", None)
    if settings["mil"] == "abmilx":
        parameters = inspect.signature(ABMILX).parameters
        for name in ("attn_plus", "act", "dropout"):
            if (
                settings["mil_kwargs"].get(name, parameters[name].default)
                == parameters[name].default
            ):
                settings["mil_kwargs"].pop(name, None)
    return experiment


@pytest.mark.parametrize("path", sorted(BEFORE_PRESETS))
def test_presets_keep_the_shipped_configs_settings(path):
    config = load_config(REPO_ROOT / path)
    resolved = resolve_experiments(config)
    before = validate_config({**config, "experiments": BEFORE_PRESETS[path]})["experiments"]
    # + grid points, + experiments added since (e.g. the C2C and FT baselines)
    assert [n for n in resolved.experiments if "__" not in n and n in before] == list(before)
    for name, experiment in before.items():
        expected = {
            k: experiment[k] for k in ("kind", "title", "datasets", "features", "settings", "gpus")
        }
        if experiment["kind"] == "e2e" and path != "config.yaml":
            # since issue #23 the paper presets carry the official two-GPU (global) batch
            expected["settings"]["batch_size"] *= 2
        handover = resolved.experiments[name]["mil_handover"]
        if handover:  # since issue #23 a changed aggregator also gets the shared MIL settings
            expected["settings"]["mil_kwargs"] = {
                **handover["handed"],
                **expected["settings"]["mil_kwargs"],
            }
        assert _effective(resolved.experiments[name]) == _effective(expected), name
        assert resolved.run_of[name] == name  # no two of them are one run


# Stated since issue #23 (the preset's ABMILX act and dropout, equal to its defaults).
STATED_SINCE_23 = {"act": "gelu", "dropout": 0.25}


def test_the_demo_keeps_its_exact_settings():
    """Not only the same model: the same dict, but for the options the presets state since
    issue #23 to hand them on to other aggregators."""
    config = load_config(REPO_ROOT / "config.yaml")
    before = validate_config({**config, "experiments": BEFORE_PRESETS["config.yaml"]})
    for name, experiment in before["experiments"].items():
        settings = copy.deepcopy(resolve_experiments(config).runs[name]["settings"])
        assert settings["protocol"] == "clean"
        for key, value in STATED_SINCE_23.items():
            if settings["mil"] == "abmilx" and settings["mil_kwargs"].get(key) == value:
                del settings["mil_kwargs"][key]
        assert settings == experiment["settings"], name


@pytest.mark.parametrize("name", list_presets())
def test_every_preset_resolves(name):
    preset = get_preset(name)
    extra = {"features": "r50"} if preset["kind"] == "two_stage" else {}
    experiment = _resolve({"x": {"preset": name, **extra}}).experiments["x"]
    assert (
        experiment["settings"] == _resolve({"y": {**preset, **extra}}).experiments["y"]["settings"]
    )
    assert experiment["title"] == preset["title"]


def test_grid_expands_every_combination_with_stable_names():
    experiments = {
        "a": {"preset": "abmilx_e2e_r18_subtyping", "settings": {"epochs": 3}},
        "heads": {
            "base": "a",
            "grid": {"settings.mil_kwargs.n_heads": [1, 2], "settings.scale_ratio": [None, 3]},
        },
    }
    resolved = _resolve(experiments)
    names = [
        "heads__n_heads-1__scale_ratio-none",
        "heads__n_heads-1__scale_ratio-3",
        "heads__n_heads-2__scale_ratio-none",
        "heads__n_heads-2__scale_ratio-3",
    ]
    assert list(resolved.experiments) == ["a", *names]
    assert [p["name"] for p in resolved.grids["heads"]["points"]] == names
    point = resolved.experiments["heads__n_heads-2__scale_ratio-none"]
    assert point["settings"]["mil_kwargs"] == {
        **get_preset("abmilx_e2e_r18_subtyping")["settings"]["mil_kwargs"],
        "n_heads": 2,
    }
    assert point["settings"]["scale_ratio"] is None and point["settings"]["epochs"] == 3
    assert point["title"] == "ABMILX + MRIS (E2E, R18) (n_heads=2, scale_ratio=none)"
    assert "heads" not in resolved.experiments  # a grid is its points
    assert _resolve(experiments) == resolved
    assert all(re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.+-]*", n) for n in resolved.experiments)


def test_grid_names_that_collide_fail():
    experiments = {"g": {"kind": "e2e", "grid": {"settings.encoder_weights": ["a b", "a-b"]}}}
    with pytest.raises(ConfigError, match=r"experiments/g/grid.*g__encoder_weights-a-b"):
        _resolve(experiments)


def test_user_names_cannot_look_like_grid_points():
    with pytest.raises(ConfigError, match="experiments"):
        _resolve({"a__b": {"kind": "e2e"}})


def test_base_inheritance():
    resolved = _resolve(
        {
            "a": {"preset": "abmilx_e2e_r18_grading", "datasets": ["d"]},
            "b": {"base": "a", "settings": {"lr": 0.001, "mil_kwargs": {"n_heads": 2}}},
            "c": {"base": "b", "title": "ABMIL", "settings": {"mil": "abmil"}},
        }
    ).experiments
    a, b, c = resolved["a"], resolved["b"], resolved["c"]
    assert b["settings"]["lr"] == 0.001 and b["settings"]["optimizer"] == "adam"
    assert b["settings"]["mil_kwargs"] == {**a["settings"]["mil_kwargs"], "n_heads": 2}
    assert b["title"] == a["title"] and b["datasets"] == ["d"]
    # Another MIL model: the shared MIL settings are handed on, ABMILX's own options are not.
    assert c["settings"]["mil"] == "abmil"
    assert c["settings"]["mil_kwargs"] == {
        "hidden_dim": 512,
        "mil_norm": "ln",
        "mil_bias": False,
        "act": "gelu",
        "dropout": 0.25,
    }
    assert c["mil_handover"]["left"] == {"n_heads": 2, "ffn": True, "attn_plus": True}
    assert c["settings"]["lr"] == 0.001 and c["title"] == "ABMIL"


@pytest.mark.parametrize(
    ("mil", "width"),
    [
        ("abmil", "hidden_dim"),
        ("dsmil", "hidden_dim"),
        ("transmil", "hidden_dim"),
        ("rrtmil", "hidden_dim"),
        ("vitmil", "hidden_dim"),
        ("qamil", "hidden_dim"),
    ],
)
def test_an_aggregator_changed_under_a_preset_keeps_the_shared_mil_settings(mil, width):
    """Table 5's aggregators train with the preset's LN input, bias-free layers, GELU, width
    and dropout, as the official build_mil gives them (not ReLU, biases and width 512)."""
    resolved = _resolve(
        {
            "x": {"preset": "abmilx_e2e_r18_survival"},
            "y": {"base": "x", "settings": {"mil": mil, "mil_kwargs": {"dropout": 0.1}}},
        }
    ).experiments["y"]
    assert resolved["settings"]["mil_kwargs"] == {
        width: 256,
        "mil_norm": "ln",
        "mil_bias": False,
        "act": "gelu",
        "dropout": 0.1,  # an explicit option still wins
    }
    assert resolved["mil_handover"]["left"] == {"n_heads": 8, "attn_bias": True, "attn_plus": True}


def test_options_an_aggregator_lacks_are_listed_not_handed():
    resolved = _resolve(
        {
            "x": {"preset": "abmilx_e2e_r18_subtyping"},
            "y": {"base": "x", "settings": {"mil": "chief_aggregator"}},
        }
    ).experiments["y"]
    assert resolved["settings"]["mil_kwargs"] == {"hidden_dim": 256, "dropout": 0.25}
    assert resolved["mil_handover"]["left"] == {
        "n_heads": 8,
        "attn_plus": True,
        "mil_norm": "ln",
        "mil_bias": False,
        "act": "gelu",
    }


@pytest.mark.parametrize(
    ("path", "message"),
    [
        ("settings.n_head", "grid/settings.n_head': unknown key 'n_head'"),
        ("settings.mil_kwargs.n_head", "grid/settings.mil_kwargs.n_head': unknown key 'n_head'"),
        ("settings.scales.middle", "grid/settings.scales.middle': unknown key 'middle'"),
        ("kind", "grid/kind'"),
    ],
)
def test_unknown_grid_path_names_the_key(path, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        _resolve({"g": {"preset": "abmilx_e2e_r18_subtyping", "grid": {path: [1]}}})


def test_bad_override_of_a_preset_names_the_key():
    """Settings of preset and base experiments are checked once inherited (at resolution)."""
    with pytest.raises(ConfigError, match="experiments/a/settings/lr"):
        _resolve({"a": {"preset": "abmilx_e2e_r18_subtyping", "settings": {"lr": -1}}})


def test_bad_grid_value_names_the_point():
    with pytest.raises(ConfigError, match=r"g/grid \(g__lr--1\)/settings/lr"):
        _resolve({"g": {"preset": "abmilx_e2e_r18_subtyping", "grid": {"settings.lr": [-1]}}})


@pytest.mark.parametrize(
    ("experiments", "message"),
    [
        ({"a": {"base": "nope"}}, "experiments/a/base': no experiment 'nope'"),
        ({"a": {"preset": "nope"}}, "experiments/a/preset': unknown preset 'nope'"),
        ({"a": {"base": "b"}, "b": {"base": "a"}}, "circular bases: a -> b -> a"),
        ({"a": {"settings": {}}}, "kind"),
        ({"a": {"preset": "abmil_two_stage_grading"}}, "experiments/a/features"),
        (
            {"a": {"preset": "abmil_two_stage_grading", "features": "r18"}},
            "experiments/a/features': no feature set 'r18'; known: r50",
        ),
        (
            {"a": {"preset": "abmilx_e2e_r18_grading", "datasets": ["d", "x"]}},
            "experiments/a/datasets': no dataset ['x']; known: d, e",
        ),
        (
            {"a": {"kind": "e2e", "settings": {"sampling": "attention"}}},
            "experiments/a/settings/ema': sampling 'attention' scores the patches with the EMA",
        ),
        (
            {
                "a": {"preset": "abmilx_e2e_r18_survival"},  # keeps no EMA
                "b": {"base": "a", "grid": {"settings.sampling": ["mris", "attention"]}},
                "c": {"base": "a", "settings": {"sampling": "attention", "ema": 0.99}},
            },
            "b/grid (b__sampling-attention)/settings/ema': sampling 'attention'",
        ),
    ],
)
def test_bad_references_fail_early(experiments, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        _resolve(experiments)


def test_equal_settings_are_one_run():
    resolved = _resolve(
        {
            "x": {"preset": "abmilx_e2e_r18_subtyping", "datasets": ["d"]},
            "y": {"preset": "abmilx_e2e_r18_subtyping", "title": "again", "datasets": ["e"]},
            "g": {"base": "x", "grid": {"settings.mil_kwargs.n_heads": [4, 8]}},
            "z": {"base": "x", "settings": {"lr": 0.001}},
        }
    )
    assert resolved.run_of == {
        "x": "x",
        "y": "x",
        "g__n_heads-4": "g__n_heads-4",
        "g__n_heads-8": "x",  # the preset has 8 heads: the grid point is experiment x
        "z": "z",
    }
    assert list(resolved.runs) == ["x", "g__n_heads-4", "z"]
    assert resolved.runs["x"]["datasets"] == ["d", "e"]
    assert run_identity(resolved.experiments["y"]) == run_identity(resolved.experiments["x"])
    assert run_identity(resolved.experiments["z"]) != run_identity(resolved.experiments["x"])


def test_explicit_names_win_over_grid_points():
    resolved = _resolve(
        {
            "g": {"preset": "abmilx_e2e_r18_subtyping", "grid": {"settings.epochs": [75, 3]}},
            "paper": {"preset": "abmilx_e2e_r18_subtyping"},
        }
    )
    assert resolved.run_of["g__epochs-75"] == "paper"
    assert list(resolved.runs) == ["g__epochs-3", "paper"]


def test_the_demo_ablation_grids_share_the_ablation_run():
    """Each Table 7 grid of the demo includes ablation_base's own value, which is that run: the
    ablations train 18 E2E runs (base, 6 aggregators, multi-head, frozen encoder, random and
    attention sampling, 5 grid points, 2 regional points), not 23."""
    resolved = resolve_experiments(load_config(REPO_ROOT / "config.yaml"))
    base_points = [
        "abl_ffn__ffn-false",
        "abl_inner_dim__inner_dim-256",
        "abl_heads__n_heads-8",
        "abl_scale_ratio__scale_ratio-4",
        "abl_n_patches__n_patches-32",
    ]
    assert {resolved.run_of[name] for name in base_points} == {"ablation_base"}
    budget = resolved.runs["ablation_base"]["settings"]["epochs"]
    e2e = [
        name
        for name, run in resolved.runs.items()
        if run["kind"] == "e2e" and run["settings"]["epochs"] == budget
    ]
    assert len(e2e) == 18 and "ablation_base" in e2e, e2e


def test_gpus_come_from_the_base_or_preset_unless_given():
    resolved = _resolve(
        {
            "root": {"preset": "abmilx_e2e_r18_subtyping", "gpus": 0},
            "child": {"base": "root", "settings": {"epochs": 3}},
            "two": {"base": "root", "gpus": 2},
            "from_preset": {"preset": "abmilx_e2e_r18_subtyping"},
        }
    ).experiments
    gpus = {name: experiment["gpus"] for name, experiment in resolved.items()}
    assert gpus == {"root": 0, "child": 0, "two": 2, "from_preset": 1}


def test_official_runs_evaluate_model_and_ema_unless_the_config_says_otherwise():
    official = {"settings": {"protocol": "official"}}
    clean = {"settings": {"protocol": "clean"}}
    config = validate_config({"datasets": DATASETS})
    assert config["evaluation"]["model_weights"] is None
    assert evaluation_weights(config, official) == "both"
    assert evaluation_weights(config, clean) == "main"
    config["evaluation"]["model_weights"] = "ema"
    assert evaluation_weights(config, official) == "ema"


def test_an_experiment_protocol_wins_over_the_config_and_reaches_its_children():
    resolved = _resolve(
        {
            "a": {"preset": "abmilx_e2e_r18_subtyping", "protocol": "official"},
            "b": {"base": "a", "settings": {"epochs": 3}},
            "c": {"base": "a", "protocol": "clean"},
            "d": {"preset": "abmilx_e2e_r18_subtyping"},
        }
    ).experiments
    assert {n: e["settings"]["protocol"] for n, e in resolved.items()} == {
        "a": "official", "b": "official", "c": "clean", "d": "clean",
    }  # fmt: skip
    assert resolved["b"]["settings"]["early_stopping"]["patience"] == 10
    assert resolved["b"]["settings"]["epochs"] == 3
    assert resolved["c"]["settings"]["early_stopping"]["patience"] is None
    assert resolved["c"]["settings"] == {**resolved["d"]["settings"]}


def test_the_protocol_is_set_on_the_experiment_not_in_its_settings():
    with pytest.raises(ConfigError, match="settings/protocol': set the experiment's protocol"):
        _resolve(
            {"a": {"preset": "abmilx_e2e_r18_subtyping", "settings": {"protocol": "official"}}}
        )
