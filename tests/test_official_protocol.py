"""Every preset under `protocol: official` trains with the official values, key by key.

The values and their sources (file and key in the official repository) live in
src/abmilx/schemas/official_protocol.yaml; docs/protocol.md shows them beside ours.
"""

import copy

import pytest
import yaml

from abmilx.config import REPO_ROOT, validate_config
from abmilx.experiments import list_presets, resolve_experiments
from abmilx.provenance import PACKAGE_ROOT

OFFICIAL_FILE = PACKAGE_ROOT / "schemas" / "official_protocol.yaml"
OFFICIAL = yaml.safe_load(OFFICIAL_FILE.read_text())
DATASETS = {"d": {"task": "subtyping", "classes": ["a", "b"], "synthetic": {}}}
FEATURES = {"r50": {"encoder": "resnet50_layer3", "weights": "random"}}


def resolved_settings(preset: str, protocol: str) -> dict:
    experiment = {"preset": preset}
    if preset.endswith(("two_stage_subtyping", "two_stage_grading", "two_stage_survival")):
        experiment["features"] = "r50"
    config = validate_config(
        {
            "protocol": protocol,
            "datasets": DATASETS,
            "feature_sets": FEATURES,
            "experiments": {"x": experiment},
        }
    )
    return resolve_experiments(config).experiments["x"]["settings"]


def mismatches(settings: dict, official: dict) -> list[str]:
    """Dotted keys whose resolved value is not the official one."""
    wrong = []
    for path, entry in official["settings"].items():
        node = settings
        for part in path.split("."):
            node = node.get(part, KeyError) if isinstance(node, dict) else KeyError
        value = entry["value"]
        if node is KeyError or node != value or isinstance(node, bool) != isinstance(value, bool):
            wrong.append(f"{path}: ours {node!r}, official {value!r}")
    return wrong


def test_every_preset_has_official_values_with_sources():
    assert set(OFFICIAL["presets"]) == set(list_presets())
    for name, official in OFFICIAL["presets"].items():
        for path, entry in official["settings"].items():
            assert entry["source"].strip(), f"{name}: {path} has no source"
        assert set(official["differences"]) <= set(OFFICIAL["differences"]), name


@pytest.mark.parametrize("preset", sorted(OFFICIAL["presets"]))
def test_official_protocol_equals_the_official_values(preset):
    settings = resolved_settings(preset, "official")
    assert mismatches(settings, OFFICIAL["presets"][preset]) == []
    assert settings["protocol"] == "official"


def test_a_changed_value_is_caught():
    preset = "abmilx_e2e_r18_subtyping"
    settings = resolved_settings(preset, "official")
    for path in ("lr", "mil_kwargs.n_heads", "early_stopping.patience", "channel_order"):
        changed = copy.deepcopy(OFFICIAL["presets"][preset])
        value = changed["settings"][path]["value"]
        changed["settings"][path]["value"] = "bgr2" if isinstance(value, str) else value * 2
        assert [m.split(":")[0] for m in mismatches(settings, changed)] == [path]


def test_clean_keeps_its_own_choices_where_official_differs():
    clean = resolved_settings("abmilx_e2e_r18_subtyping", "clean")
    wrong = {
        m.split(":")[0] for m in mismatches(clean, OFFICIAL["presets"]["abmilx_e2e_r18_subtyping"])
    }
    assert wrong == {
        "micro_batch_size", "aug_chunks", "channel_order", "early_stopping.patience",
        "early_stopping.after_epoch", "selection",
    }  # fmt: skip


def _shown(value) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    return "{}" if value == {} else str(value)


def test_the_protocol_table_in_the_docs_shows_every_official_value():
    doc = (REPO_ROOT / "docs" / "protocol.md").read_text()
    for preset, official in OFFICIAL["presets"].items():
        section = doc.split(f"### `{preset}`", 1)[1].split("\n### ", 1)[0]
        for path, entry in official["settings"].items():
            assert f"| `{path}` | {_shown(entry['value'])} | {entry['source']} |" in section, (
                preset,
                path,
            )
