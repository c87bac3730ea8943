"""One settings object (the config's cohort block) for both plan and rendering.

Keys are the keyword arguments of :func:`plan_columns` and :func:`synthesize_slide`, so the
config schema and the function signatures share names; unknown keys are an error.
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from abmilx.cohort.plan import plan_columns, plan_frame, plan_record
from abmilx.cohort.pretraining import PRETRAINING_TASK, pretraining_columns
from abmilx.cohort.synthesize import RENDER_KEYS

if TYPE_CHECKING:
    import pandas as pd

PLAN_KEYS = {
    name
    for name, parameter in inspect.signature(plan_columns).parameters.items()
    if name != "dataset" and parameter.kind is not inspect.Parameter.VAR_KEYWORD
}


def split_settings(settings: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """(plan keyword arguments, rendering keyword arguments) of a cohort settings object."""
    unknown = set(settings) - PLAN_KEYS - RENDER_KEYS
    if unknown:
        raise ValueError(
            f"unknown cohort settings {sorted(unknown)}; known: {sorted(PLAN_KEYS | RENDER_KEYS)}"
        )
    missing = {"task", "n_slides", "n_cases", "seed"} - set(settings)
    if missing:
        raise ValueError(f"cohort settings lack required keys {sorted(missing)}")
    plan_kw = {k: v for k, v in settings.items() if k in PLAN_KEYS}
    render_kw = {k: v for k, v in settings.items() if k in RENDER_KEYS}
    return plan_kw, render_kw


def columns_from_settings(dataset: str, settings: Mapping[str, Any]) -> dict[str, list]:
    """The plan's columns that a settings object describes (pandas-free)."""
    plan_kw, _ = split_settings(settings)
    if plan_kw["task"] == PRETRAINING_TASK:
        return pretraining_columns(dataset, **{k: v for k, v in plan_kw.items() if k != "task"})
    return plan_columns(dataset, **plan_kw)


def plan_from_settings(dataset: str, settings: Mapping[str, Any]) -> pd.DataFrame:
    """The cohort plan that a settings object describes (what Snakemake calls at parse time)."""
    return plan_frame(columns_from_settings(dataset, settings))


def slide_plan(dataset: str, settings: Mapping[str, Any], slide_id: str) -> dict[str, Any]:
    """One slide's plan row, as a per-slide job needs it: recomputed from the settings, without
    importing pandas."""
    return plan_record(columns_from_settings(dataset, settings), slide_id)
