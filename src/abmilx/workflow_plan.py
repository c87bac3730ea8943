"""What the workflow makes of a config while Snakemake parses, computed by the package alone.

The Snakefile (workflow/rules/common.smk) and `abmilx validate` both call :func:`plan_workflow`,
so a config is checked the same way with or without the workflow at hand (an installed package
has no Snakefile). It reads the report's table and figure planners, so it sits above the stages,
like abmilx.cli; no stage imports it. Nothing here imports torch: a dry run stays light.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from abmilx.config import check_config, evaluation_datasets, validate_config
from abmilx.experiments import ExperimentSet, resolve_experiments
from abmilx.report.figures.plan import plan_figures
from abmilx.report.tables import plan_tables


@dataclass(frozen=True)
class WorkflowPlan:
    """``config``: validated, defaults filled, ``experiments`` replaced by the runs.
    ``experiments``: every named experiment and its run. ``tables`` / ``figures``: the declared
    tables and figures resolved to runs (abmilx.report.tables, abmilx.report.figures.plan)."""

    config: dict[str, Any]
    experiments: ExperimentSet
    tables: dict[str, dict]
    figures: dict[str, dict]


def plan_workflow(config: Mapping[str, Any]) -> WorkflowPlan:
    """Validate ``config``, resolve its experiments (presets, bases, grids) into runs, run the
    cross-key checks and resolve its tables and figures; raises naming the first bad key."""
    config = validate_config(config)
    experiments = resolve_experiments(config)
    config["experiments"] = experiments.runs
    check_config(config)
    tasks = {name: config["datasets"][name]["task"] for name in evaluation_datasets(config)}
    tables = plan_tables(config["tables"], experiments, tasks)
    figures = plan_figures(config["figures"], experiments, tasks, config["feature_sets"])
    return WorkflowPlan(config=config, experiments=experiments, tables=tables, figures=figures)


def append_to_pythonpath(folder: str | Path) -> None:
    """Put ``folder`` last on this process's PYTHONPATH, which the jobs inherit (locally and on a
    cluster), unless it is there already: entries set before it win."""
    paths = [path for path in os.environ.get("PYTHONPATH", "").split(os.pathsep) if path]
    if str(folder) not in paths:
        os.environ["PYTHONPATH"] = os.pathsep.join([*paths, str(folder)])
