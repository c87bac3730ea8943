"""Typed settings of the segmentation and tiling blocks, and the run-kind registry: both must
name exactly what the schema and the kinds' own classes name."""

from __future__ import annotations

import dataclasses

import pytest

from abmilx.config import load_schema, schema_defaults
from abmilx.e2e import PATCH_KINDS
from abmilx.kinds import KINDS, task_type
from abmilx.segmentation.settings import SegmentationSettings
from abmilx.settings import SettingsError
from abmilx.tiling.settings import TilingSettings

BLOCKS = [(SegmentationSettings, "segmentation"), (TilingSettings, "tiling")]


@pytest.mark.parametrize(("settings_type", "block"), BLOCKS)
def test_fields_are_the_schema_block_and_defaults_live_only_there(settings_type, block):
    properties = load_schema()["$defs"][block]["properties"]
    fields = dataclasses.fields(settings_type)
    # Keys only the dataset's jobs read (slides_per_job, tiling.pack) are no slide's setting.
    dataset_keys = settings_type.DATASET_KEYS
    assert sorted([field.name for field in fields] + list(dataset_keys)) == sorted(properties)
    assert all(field.default is dataclasses.MISSING for field in fields)
    assert all(field.default_factory is dataclasses.MISSING for field in fields)
    per_slide = {k: v for k, v in schema_defaults(block).items() if k not in dataset_keys}
    assert settings_type.from_settings(schema_defaults(block)).as_dict() == per_slide


@pytest.mark.parametrize(("settings_type", "block"), BLOCKS)
def test_unknown_or_missing_keys_fail_naming_them(settings_type, block):
    complete = schema_defaults(block)
    with pytest.raises(SettingsError, match=r"--settings: unknown settings \['typo'\]"):
        settings_type.from_settings(complete | {"typo": 1}, "--settings")
    dropped = sorted(complete)[0]
    partial = {key: value for key, value in complete.items() if key != dropped}
    with pytest.raises(SettingsError, match=rf"missing settings \['{dropped}'\]"):
        settings_type.from_settings(partial)
    settings = settings_type.from_settings(complete)
    with pytest.raises(SettingsError, match=r"slide x: unknown settings \['typo'\]"):
        settings.updated({"typo": 1}, "slide x")
    with pytest.raises(dataclasses.FrozenInstanceError):
        settings.__setattr__(dropped, None)


def test_values_out_of_range_fail_when_built():
    segmentation = SegmentationSettings.from_settings(schema_defaults("segmentation"))
    with pytest.raises(ValueError, match="saturation_threshold must be 'otsu' or an int"):
        segmentation.updated({"saturation_threshold": 300})
    tiling = TilingSettings.from_settings(schema_defaults("tiling"))
    with pytest.raises(ValueError, match="inclusion must be one of"):
        tiling.updated({"inclusion": "centre"})


def test_the_registry_resolves_every_kind_to_its_own_task():
    assert {kind: task_type(kind).kind for kind in KINDS} == {kind: kind for kind in KINDS}
    assert set(PATCH_KINDS) < set(KINDS)
    with pytest.raises(ValueError, match="unknown run kind 'mcat'"):
        task_type("mcat")
