"""The config schema: every key described and defaulted, configs shipped with the repo valid."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from abmilx.cli.validate import error_message, validate
from abmilx.config import (
    MODELS_SCHEMA_PATH,
    REPO_ROOT,
    ConfigError,
    check_config,
    device_problem,
    load_config,
    load_schema,
    models_schema,
    name_problem,
    read_yaml,
    validate_config,
)
from abmilx.experiments import resolve_experiments

SHIPPED_CONFIGS = [
    REPO_ROOT / "config.yaml",
    *sorted((REPO_ROOT / "workflow/configs").rglob("*.yaml")),
]


def _walk_properties(node, path=""):
    """Yield (key path, property schema, parent schema) for every property in the schema."""
    if not isinstance(node, dict):
        return
    for name, sub in (node.get("properties") or {}).items():
        yield f"{path}/{name}", sub, node
        yield from _walk_properties(sub, f"{path}/{name}")
    for keyword in ("additionalProperties", "items", "then", "if"):
        yield from _walk_properties(node.get(keyword), f"{path}/*")
    for keyword in ("allOf", "oneOf", "anyOf"):
        for sub in node.get(keyword, []):
            yield from _walk_properties(sub, path)
    for name, sub in (node.get("$defs") or {}).items():
        yield from _walk_properties(sub, f"$defs/{name}")


def _is_alternative(name, parent):
    """Keys that select one of the parent's alternatives (oneOf) need no default."""
    return any(name in alternative.get("required", []) for alternative in parent.get("oneOf", []))


def test_every_key_has_a_description():
    undocumented = [
        path
        for path, sub, _ in _walk_properties(load_schema())
        if "description" not in sub and "$ref" not in sub and "const" not in sub
    ]
    assert undocumented == []


def _branch_default(name, parent):
    """A default given in the parent's if/then branch, where it applies (an experiment's gpus:
    1 without a preset or base, the parent's otherwise)."""
    branches = [b.get("then", {}).get("properties", {}) for b in parent.get("allOf", [])]
    return any("default" in branch.get(name, {}) for branch in branches)


def test_every_optional_key_has_a_default():
    missing = [
        path
        for path, sub, parent in _walk_properties(load_schema())
        if not {"default", "$ref", "const"} & set(sub)
        and path.rsplit("/", 1)[-1] not in parent.get("required", [])
        and not _is_alternative(path.rsplit("/", 1)[-1], parent)
        and not _branch_default(path.rsplit("/", 1)[-1], parent)
    ]
    # classes: required by classification tasks only, checked against the label sheet. Model
    # options: the constructor's default applies (stated in the description, never filled in, as
    # a factory such as qamil's sets its own).
    assert [p for p in missing if not p.endswith("/classes") and "/mil_" not in p] == []


def test_models_schema_is_generated_from_the_registries():
    """In a fresh interpreter, so that models other tests register do not count."""
    generate = (
        "import json; from abmilx.config import models_schema; print(json.dumps(models_schema()))"
    )
    result = subprocess.run(
        [sys.executable, "-c", generate], capture_output=True, text=True, check=True
    )
    written = yaml.safe_load(MODELS_SCHEMA_PATH.read_text())
    assert written == json.loads(result.stdout), "run: python -m abmilx.config models-schema"


def test_models_registered_at_run_time_are_known_names():
    from abmilx.models import register_encoder, registry

    register_encoder("runtime_only_encoder")(lambda weights="random": None)
    try:
        assert "runtime_only_encoder" in load_schema()["$defs"]["encoder_name"]["enum"]
    finally:
        del registry._ENCODERS["runtime_only_encoder"]


def test_model_options_come_from_the_constructors():
    defs = models_schema()["$defs"]
    from abmilx.models import list_encoders, list_mils

    assert defs["mil_name"]["enum"] == list_mils()
    assert defs["encoder_name"]["enum"] == list_encoders()
    abmilx = defs["mil_abmilx"]["properties"]
    assert abmilx["n_heads"]["type"] == "integer"
    assert abmilx["attn_dim"]["type"] == ["null", "number"]
    assert "gated" not in defs["mil_gated_abmil"]["properties"]  # fixed by the factory
    assert "gated" in defs["mil_abmil"]["properties"]
    assert "'ca'" in defs["mil_qamil"]["properties"]["attn_type"]["description"]


def test_model_option_types_are_checked():
    config = {
        "datasets": {"d": {"task": "subtyping", "classes": ["a", "b"], "synthetic": {}}},
        "experiments": {"x": {"kind": "e2e", "settings": {"mil_kwargs": {"n_heads": "8"}}}},
    }
    with pytest.raises(ConfigError, match="settings/mil_kwargs/n_heads': '8' is not of type"):
        validate_config(config)


@pytest.mark.parametrize("path", SHIPPED_CONFIGS, ids=lambda p: str(p.relative_to(REPO_ROOT)))
def test_shipped_configs_validate(path):
    config = load_config(path)
    assert config["datasets"]
    config["experiments"] = resolve_experiments(config).runs
    check_config(config)  # scales, weights, ratios, as the Snakefile checks them


def test_defaults_are_filled_in_nested_objects():
    config = validate_config(
        {
            "datasets": {"d": {"task": "subtyping", "classes": ["a", "b"], "synthetic": {}}},
            "experiments": {"x": {"kind": "e2e"}},
        }
    )
    assert config["datasets"]["d"]["synthetic"]["n_slides"] == 40
    assert config["datasets"]["d"]["split"]["ratios"] == [0.7, 0.0, 0.3]
    assert config["experiments"]["x"]["settings"]["mil"] == "abmilx"
    assert config["tiling"]["scales"] == {"main": 1.0, "low": 2.0}


@pytest.mark.parametrize(
    ("change", "named"),
    [
        (lambda c: c["tiling"].update(patch_size="big"), "tiling/patch_size"),
        (lambda c: c["tiling"].update(colour=True), "tiling"),
        (
            lambda c: c["datasets"]["demo_subtyping"].update(task="staging"),
            "datasets/demo_subtyping/task",
        ),
        (
            lambda c: c["experiments"]["abmil_r50"]["settings"].update(lr=-1),
            "experiments/abmil_r50/settings/lr",
        ),
    ],
)
def test_bad_config_names_the_key(change, named):
    raw = yaml.safe_load((REPO_ROOT / "config.yaml").read_text())
    change(raw)
    with pytest.raises(ConfigError, match=named):
        validate_config(raw)


def test_given_folds_belong_to_the_given_scheme_and_its_fold_files():
    def problems(split: dict, options: dict) -> str:
        dataset = {"task": "survival", "split": split,
                   "adapter": {"name": "tcga_survival", "options": options}}  # fmt: skip
        config = validate_config(
            {"datasets": {"d": dataset}, "experiments": {"x": {"kind": "e2e"}}}
        )
        with pytest.raises(ConfigError) as error:
            check_config(config)
        return str(error.value)

    assert "'datasets/d/split/given_folds': applies to scheme given, not kfold" in problems(
        {"scheme": "kfold", "k": 3, "given_folds": 3}, {"slide_dir": "s", "clinical": "c"}
    )
    assert "3 given fold(s), but the adapter's fold_files lists 2" in problems(
        {"scheme": "given", "given_folds": 3}, {"slide_dir": "s", "fold_files": ["a", "b"]}
    )


def test_dataset_needs_synthetic_or_sheets(tmp_path: Path):
    with pytest.raises(ConfigError, match="datasets/d"):
        validate_config({"datasets": {"d": {"task": "survival"}}})


def test_a_figures_normalisation_defaults_to_percentile():
    """The renderer reads it from the validated config (a default under a $ref was not
    filled in: the tiny run failed in figure_attention_heatmaps)."""
    config = load_config(REPO_ROOT / "tests" / "integration" / "tiny_config.yaml")
    assert config["figures"]["attention_heatmaps"]["normalisation"] == "percentile"


# --- names, YAML faults (issue #26) --------------------------------------------------------
NAMES_IN_USE = [
    "demo_subtyping", "abl_heads__n_heads-1", "table7", "r18_simclr", "main", "low",
    "TCGA-A1-A0SB-01Z-00-DX1.9D6E6A6C-6B9F-4D60-9B1A-1C0B3F5F0B5E",  # TCGA diagnostic slide
    "0005f7aaab2800f6170c399693a96917",  # PANDA image id
    "tumor_001", "test_042", "patient_004_node_4", "ABMILX+", "1.0",
]  # fmt: skip


@pytest.mark.parametrize("name", NAMES_IN_USE)
def test_the_naming_rule_admits_the_names_in_use(name):
    assert name_problem(name) is None


@pytest.mark.parametrize(
    "name", ["a&b", "a;b", "$(x)", "`x`", "a'b", 'a"b', "../x", "a/b", "-rf", ".hidden", "a..b",
             "a b", "", "a\nb", "a*", "é"],
)  # fmt: skip
def test_the_naming_rule_rejects_what_a_shell_or_a_path_would_read(name):
    assert "is not allowed" in name_problem(name)


def test_every_name_in_the_shipped_configs_follows_the_rule():
    for path in SHIPPED_CONFIGS:
        config = load_config(path)
        named = [
            *config["datasets"], *config["feature_sets"], *config["pretrain"],
            *config["tables"], *config["figures"], *config["tiling"]["scales"],
            *resolve_experiments(config).experiments,
        ]  # fmt: skip
        assert [n for n in named if name_problem(n)] == [], path


def test_a_key_given_twice_names_file_and_line(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("datasets:\n  d:\n    task: subtyping\n    task: grading\n")
    with pytest.raises(ConfigError, match=rf"{path}:4:5: .*'task' appears twice.*line 3"):
        read_yaml(path)


def test_a_yaml_syntax_error_names_file_line_and_column(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("seed: 1\ntables: {t: {rows: [a]\n")
    with pytest.raises(ConfigError, match=rf"{path}:3:1: invalid YAML"):
        read_yaml(path)


def test_equal_values_under_different_keys_are_fine(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("a: {x: 1}\nb: {x: 1}\n")
    assert read_yaml(path) == {"a": {"x": 1}, "b": {"x": 1}}


def test_validate_shows_a_yaml_error_with_line_and_column(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("datasets:\n  d: {task: subtyping\n")
    validation = validate(path, directory=tmp_path)
    assert not validation.ok and f"{path}:3:1: invalid YAML" in validation.message


def test_validate_keeps_the_first_line_of_snakemakes_message():
    output = "Config file config.yaml is extended by additional config\nWorkflowError:\nboom\n"
    assert error_message(output) == "WorkflowError:\nboom"
    assert error_message("Config file is not valid JSON or YAML.\n") != ""


def test_device_cuda_is_checked_only_when_asked():
    assert device_problem({"device": "cpu"}) is None and device_problem({"device": "auto"}) is None


def test_an_encoder_registered_after_the_schema_was_read_is_a_valid_name(monkeypatch):
    """A plug-in may register its encoder after a stage function read the schema (the DDP test's
    `groupnorm_cnn` failed to validate when another test had read it first)."""
    from abmilx.config import cached_schema
    from abmilx.models import registry

    assert "late_encoder" not in cached_schema()["$defs"]["encoder_name"]["enum"]
    monkeypatch.setitem(registry._ENCODERS, "late_encoder", object)
    assert "late_encoder" in cached_schema()["$defs"]["encoder_name"]["enum"]


def test_an_unknown_key_is_named_with_the_key_it_likely_misspells():
    with pytest.raises(ConfigError) as raised:
        validate_config({"datasets": {}, "segmentaton": {}, "qqq": 1})
    message = str(raised.value)
    assert "'qqq', 'segmentaton' (did you mean 'segmentation'?) (allowed: coverage," in message
