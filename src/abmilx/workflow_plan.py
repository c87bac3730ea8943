"""What the workflow makes of a config while Snakemake parses, computed by the package alone.

The Snakefile (workflow/rules/common.smk) and `abmilx validate` both call :func:`plan_workflow`,
so a config is checked the same way with or without the workflow at hand (an installed package
has no Snakefile). It reads the report's table and figure planners, so it sits above the stages,
like abmilx.cli; no stage imports it. Nothing here imports torch: a dry run stays light.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from abmilx.config import (
    check_config,
    evaluation_datasets,
    unavailable_for_weights,
    validate_config,
)
from abmilx.experiments import ExperimentSet, resolve_experiments
from abmilx.report.coverage import check_strict, coverage_ledger
from abmilx.report.figures.plan import plan_figures
from abmilx.report.tables import plan_tables


@dataclass(frozen=True)
class WorkflowPlan:
    """``config``: validated, defaults filled, ``experiments`` replaced by the runs (less those
    whose weights are missing under ``missing_weights: unavailable``). ``experiments``: every
    named experiment and its run. ``tables`` / ``figures``: the declared tables and figures
    resolved to runs (abmilx.report.tables, abmilx.report.figures.plan). ``unavailable``:
    experiments and feature sets left out, with the reason. ``coverage``: the paper ledger
    (abmilx.report.coverage)."""

    config: dict[str, Any]
    experiments: ExperimentSet
    tables: dict[str, dict]
    figures: dict[str, dict]
    unavailable: dict[str, str]
    coverage: Any


def plan_workflow(config: Mapping[str, Any]) -> WorkflowPlan:
    """Validate ``config``, resolve its experiments (presets, bases, grids) into runs, run the
    cross-key checks, resolve its tables and figures and account for every printed paper cell;
    raises naming the first bad key (in ``coverage: strict``, the first missing paper row)."""
    config = validate_config(config)
    experiments = resolve_experiments(config)
    # missing_weights: unavailable -> feature sets and runs without their weights are left out
    missing_features, unavailable = unavailable_for_weights(config, experiments.experiments)
    config["feature_sets"] = {
        n: f for n, f in config["feature_sets"].items() if n not in missing_features
    }
    config["experiments"] = {n: run for n, run in experiments.runs.items() if n not in unavailable}
    check_config(config)
    tasks = {name: config["datasets"][name]["task"] for name in evaluation_datasets(config)}
    tables = plan_tables(config["tables"], experiments, tasks, unavailable)
    # every printed paper cell of the declared paper datasets: produced, unavailable or missing
    coverage = coverage_ledger(tables, config["coverage"])
    if config["coverage"] == "strict":
        check_strict(coverage)
    runnable = dataclasses.replace(
        experiments,
        runs=config["experiments"],
        experiments={n: e for n, e in experiments.experiments.items() if n not in unavailable},
    )
    left_out = {**unavailable, **missing_features}
    figures = plan_figures(
        config["figures"], runnable, tasks, config["feature_sets"], unavailable=left_out
    )
    return WorkflowPlan(
        config=config,
        experiments=experiments,
        tables=tables,
        figures=figures,
        unavailable=left_out,
        coverage=coverage,
    )


def append_to_pythonpath(folder: str | Path) -> None:
    """Put ``folder`` last on this process's PYTHONPATH, which the jobs inherit (locally and on a
    cluster), unless it is there already: entries set before it win."""
    paths = [path for path in os.environ.get("PYTHONPATH", "").split(os.pathsep) if path]
    if str(folder) not in paths:
        os.environ["PYTHONPATH"] = os.pathsep.join([*paths, str(folder)])
