"""Command lines of the stages: a ``--settings`` JSON object checked against the function it
feeds, so that a typo or a missing key fails with the key's name before any work."""

from __future__ import annotations

import argparse
import inspect
import json


def json_object(parser: argparse.ArgumentParser, text: str, option: str = "--settings") -> dict:
    """The ``option`` JSON object, or a usage error naming the option."""
    try:
        settings = json.loads(text)
    except json.JSONDecodeError as error:
        parser.error(f"{option} is not valid JSON: {error}")
    if not isinstance(settings, dict):
        parser.error(f"{option} must be a JSON object")
    return settings


def parse_settings(
    parser: argparse.ArgumentParser,
    text: str,
    function,
    reserved: set[str],
    option: str = "--settings",
    complete: bool = True,
) -> dict:
    """The ``option`` JSON object, checked against ``function``'s keyword arguments; with
    ``complete``, every argument without a default must be there (the rules pass the whole
    config block, defaults filled from the schema)."""
    settings = json_object(parser, text, option)
    parameters = inspect.signature(function).parameters
    allowed = set(parameters) - reserved
    unknown = sorted(set(settings) - allowed)
    if unknown:
        parser.error(f"{option}: unknown settings {unknown}; allowed: {sorted(allowed)}")
    required = {name for name in allowed if parameters[name].default is inspect.Parameter.empty}
    missing = sorted(required - set(settings))
    if complete and missing:
        parser.error(f"{option}: missing settings {missing} (the config schema has their defaults)")
    return settings


def optional_mpp(text: str) -> float | None:
    """``--mpp``: empty means no override (the slide sheet's mpp column was blank)."""
    if text.strip() == "":
        return None
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"--mpp must be a number or empty, got {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"--mpp must be positive, got {text!r}")
    return value
