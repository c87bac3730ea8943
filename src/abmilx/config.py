"""Load the workflow config and validate it against the JSON schema, filling defaults.

The schema (``workflow/schemas/config.schema.yaml``) is the single source of defaults and of the
description of every key; both the Snakefile and the tests go through :func:`validate_config`.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import jsonschema
import yaml

REPO_ROOT = Path(__file__).resolve().parents[2]
SCHEMA_PATH = REPO_ROOT / "workflow" / "schemas" / "config.schema.yaml"


class ConfigError(ValueError):
    """The config does not match the schema; the message names the offending key path."""


def _with_defaults(validator_class):
    """Extend a validator so that validating an instance fills in schema defaults."""
    validate_properties = validator_class.VALIDATORS["properties"]

    def set_defaults(validator, properties, instance, schema):
        if isinstance(instance, dict):
            for name, subschema in properties.items():
                if "default" in subschema and name not in instance:
                    instance[name] = copy.deepcopy(subschema["default"])
        yield from validate_properties(validator, properties, instance, schema)

    return jsonschema.validators.extend(validator_class, {"properties": set_defaults})


DefaultFillingValidator = _with_defaults(jsonschema.Draft202012Validator)


def load_schema(path: str | Path = SCHEMA_PATH) -> dict[str, Any]:
    with open(path) as handle:
        return yaml.safe_load(handle)


def validate_config(config: Mapping[str, Any], schema: Mapping | None = None) -> dict[str, Any]:
    """Return a validated deep copy of ``config`` with every default filled in."""
    schema = load_schema() if schema is None else schema
    instance = copy.deepcopy(dict(config))
    errors = sorted(DefaultFillingValidator(schema).iter_errors(instance), key=lambda e: e.path)
    if errors:
        lines = []
        for error in errors:
            where = "/".join(str(part) for part in error.absolute_path) or "<top level>"
            lines.append(f"  config key '{where}': {error.message}")
        raise ConfigError("invalid config:\n" + "\n".join(lines))
    return instance


def load_config(path: str | Path) -> dict[str, Any]:
    """Read a YAML config file and validate it."""
    with open(path) as handle:
        raw = yaml.safe_load(handle) or {}
    try:
        return validate_config(raw)
    except ConfigError as error:
        raise ConfigError(f"{path}: {error}") from None
