"""`abmilx settings CONFIG EXPERIMENT --dataset NAME`: the settings a training job will get.

Resolves the config as the workflow does (schema, presets, bases, grids, protocol) and returns
exactly the JSON object the experiment's training rule passes as `--settings` on that dataset,
so that a run can be checked before it starts.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from abmilx.config import ConfigError, check_config, evaluation_datasets, load_config
from abmilx.experiments import resolve_experiments, training_settings


def resolve_job_settings(
    config_path: str | Path, experiment: str, dataset: str, protocol: str | None = None
) -> tuple[dict[str, Any], Mapping | None]:
    """The `--settings` of `experiment`'s training job on `dataset`, and its MIL hand-over
    (which options a changed aggregator got and which stayed behind; None when it keeps its
    base's model). `protocol` replaces the config's top-level protocol (as editing it would)."""
    config = load_config(config_path)
    if protocol is not None:
        config["protocol"] = protocol
    resolved = resolve_experiments(config)
    where = f"{config_path}: "
    if experiment not in resolved.experiments:
        known = ", ".join(resolved.experiments) or "none"
        raise ConfigError(f"{where}no experiment {experiment!r}; known: {known}")
    if dataset not in evaluation_datasets(config):
        known = ", ".join(evaluation_datasets(config)) or "none"
        raise ConfigError(f"{where}no evaluation dataset {dataset!r}; known: {known}")
    config["experiments"] = resolved.runs
    check_config(config)
    run = resolved.runs[resolved.run_of[experiment]]
    if run["datasets"] is not None and dataset not in run["datasets"]:
        raise ConfigError(
            f"{where}experiment {experiment!r} does not run on {dataset!r} "
            f"(it runs on {', '.join(run['datasets'])})"
        )
    return training_settings(config, run, dataset), resolved.experiments[experiment]["mil_handover"]
