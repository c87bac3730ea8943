"""Cohort plan: which slides exist, their cases, labels, formats and hidden lesion burden.

Pure and fast (no image work): Snakemake calls it at DAG-parse time to know the slide ids, and
every per-slide job recomputes the same plan from the same settings. The plan is computed as
plain columns (:func:`plan_columns`), without pandas, whose import alone was about 0.45 s of a
0.8 s per-slide synthesis job; :func:`plan_cohort` gives it as a DataFrame.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from abmilx.cohort.slidefile import SLIDE_FORMATS, SUFFIX
from abmilx.cohort.synthesize import RENDER_KEYS

if TYPE_CHECKING:
    import pandas as pd

# Task -> (id prefix, class names, default class weights). Survival has no classes.
TASKS: dict[str, tuple[str, tuple[str, ...], tuple[float, ...]]] = {
    "subtyping": ("SUB", ("IDC", "ILC"), (0.8, 0.2)),
    # PANDA-like ISUP distribution: benign and grade 1 are the most frequent.
    "grading": ("GRD", ("0", "1", "2", "3", "4", "5"), (0.27, 0.25, 0.13, 0.12, 0.12, 0.11)),
    "survival": ("SUR", (), ()),
    "diagnosis": ("DX", ("normal", "tumor"), (0.6, 0.4)),
}
# Default lesion share of tissue. Large enough that a random 48-patch sample of a small slide
# holds lesion patches; grading multiplies it by the grade (grade 5 = 5x); survival draws a
# per-case burden around it; diagnosis metastases are a few % (one to a few 64-µm patches of a
# ~0.5 mm² biopsy: small, but never below one patch).
DEFAULT_LESION_FRACTION = {"subtyping": 0.12, "grading": 0.05, "survival": 0.1, "diagnosis": 0.04}
MAX_LESION_FRACTION = {"subtyping": 0.5, "grading": 0.5, "survival": 0.5, "diagnosis": 0.1}
BURDEN_SD = 0.6  # SD of the survival cases' log lesion burden

PLAN_COLUMNS = [
    "slide_id",
    "task",
    "case_id",
    "label",
    "class_index",
    "time",
    "event",
    "slide_format",
    "mpp",
    "mpp_override",
    "lesion_fraction",
    "seed",
    "file",
]


def class_names(task: str) -> tuple[str, ...]:
    """Default class names of a task, in class-index order (empty for survival)."""
    return _task(task)[1]


def _task(task: str) -> tuple[str, tuple[str, ...], tuple[float, ...]]:
    if task not in TASKS:
        raise ValueError(f"unknown cohort task {task!r}; expected one of {sorted(TASKS)}")
    return TASKS[task]


def _allocate(total: int, weights: Sequence[float]) -> np.ndarray:
    """Split ``total`` items into integer counts proportional to ``weights`` (largest remainder),
    so small cohorts still get the requested ratio instead of a random one."""
    weights = np.asarray(weights, dtype=float)
    exact = total * weights / weights.sum()
    counts = np.floor(exact).astype(int)
    order = np.argsort(-(exact - counts), kind="stable")
    counts[order[: total - counts.sum()]] += 1
    return counts


def _assign_cases(n_slides: int, n_cases: int, rng: np.random.Generator) -> np.ndarray:
    """Case index of every slide, sorted: each case gets one slide, the rest go to random cases."""
    extra = rng.integers(0, n_cases, size=n_slides - n_cases)
    return np.sort(np.concatenate([np.arange(n_cases), extra]))


def _formats(
    n_slides: int, format_fractions: Mapping[str, float], rng: np.random.Generator
) -> list[str]:
    unknown = set(format_fractions) - set(SLIDE_FORMATS)
    if unknown:
        raise ValueError(f"format_fractions has unknown formats {sorted(unknown)}")
    weights = [float(format_fractions.get(name, 0.0)) for name in SLIDE_FORMATS]
    counts = dict(zip(SLIDE_FORMATS, _allocate(n_slides, weights), strict=True))
    if n_slides >= 10 and counts["nompp"] == 0:
        # The per-slide mpp override must always be exercised in a real-size cohort.
        donor = "aperio" if counts["aperio"] > 0 else "generic"
        counts[donor] -= 1
        counts["nompp"] = 1
    formats = [name for name in SLIDE_FORMATS for _ in range(counts[name])]
    return [formats[i] for i in rng.permutation(n_slides)]


def _censoring_rate(hazards: np.ndarray, censor_fraction: float) -> float:
    """Rate of exponential censoring so that the expected censored share is ``censor_fraction``.

    With T ~ Exp(h_i) and C ~ Exp(mu), P(C < T) = mu / (mu + h_i); solve mean = target.
    """
    low, high = 1e-9, 1e3 * hazards.max()
    for _ in range(100):
        mid = np.sqrt(low * high)
        if np.mean(mid / (mid + hazards)) < censor_fraction:
            low = mid
        else:
            high = mid
    return float(np.sqrt(low * high))


def plan_columns(
    dataset: str,
    task: str,
    n_slides: int,
    n_cases: int,
    seed: int,
    *,
    classes: Sequence[str] | None = None,
    class_weights: Sequence[float] | None = None,
    lesion_fraction: float | None = None,
    format_fractions: Mapping[str, float] | None = None,
    generic_mpps: Sequence[float] = (0.5, 0.25),
    aperio_mpp: float = 0.5,
    nompp_mpp: float = 0.5,
    censor_fraction: float = 0.3,
    median_survival_months: float = 36.0,
    hazard_beta: float = 2.0,
    **render_options: Any,
) -> dict[str, list]:
    """The plan's columns (:data:`PLAN_COLUMNS`, one value per slide; see the module docstring and
    docs/architecture.md). ``event`` is None where a task has no events.

    ``classes`` renames the task's classes (same count, in class-index order; the morphology
    follows the index). ``lesion_fraction`` is the mean lesion share of tissue (None: the
    task's default; grading multiplies it by the grade, survival draws a per-case burden around
    it, diagnosis tumor slides get it as metastases and it must stay below 10 %).
    ``render_options`` are the keyword arguments of ``synthesize_slide``: accepted so that one
    settings object serves both, and checked for unknown names.
    """
    prefix, default_classes, default_weights = _task(task)
    unknown = set(render_options) - RENDER_KEYS
    if unknown:
        raise ValueError(f"unknown cohort settings {sorted(unknown)} for dataset {dataset!r}")
    if not dataset:
        raise ValueError("dataset must be a non-empty name")
    if n_slides < 1 or n_cases < 1 or n_cases > n_slides:
        raise ValueError(
            f"{dataset}: need 1 <= n_cases <= n_slides, got n_cases={n_cases}, n_slides={n_slides}"
        )
    if classes is not None and len(classes) > 0 and len(classes) != len(default_classes):
        raise ValueError(
            f"{dataset}: classes of the synthetic {task} task must be {len(default_classes)} "
            f"names (default {list(default_classes)}), got {list(classes)}"
        )
    classes = tuple(str(c) for c in classes) if classes else default_classes
    if lesion_fraction is None:
        lesion_fraction = DEFAULT_LESION_FRACTION[task]
    limit = MAX_LESION_FRACTION[task]
    if not 0.0 <= lesion_fraction < limit:
        raise ValueError(
            f"{dataset}: lesion_fraction of {task} must be in [0, {limit}), got {lesion_fraction}"
        )
    if not 0.0 <= censor_fraction < 1.0:
        raise ValueError(f"{dataset}: censor_fraction must be in [0, 1), got {censor_fraction}")
    task_index = list(TASKS).index(task)
    rng = np.random.default_rng(np.random.SeedSequence([seed, task_index]))

    case_of_slide = _assign_cases(n_slides, n_cases, rng)
    case_ids = [f"{prefix}-C{i + 1:03d}" for i in range(n_cases)]
    slide_ids = [f"{prefix}-{i + 1:04d}" for i in range(n_slides)]
    table: dict[str, Any] = {
        "slide_id": slide_ids,
        "case_id": [case_ids[c] for c in case_of_slide],
    }
    jitter = np.exp(rng.normal(0.0, 0.25, size=n_slides))  # slide-to-slide burden variation

    if task == "survival":
        # Hidden per-case lesion burden drives the hazard (log-normal around lesion_fraction).
        log_burden = rng.normal(0.0, BURDEN_SD, size=n_cases)
        burden = np.clip(lesion_fraction * np.exp(log_burden), 0.0, 0.45)
        hazards = (
            np.log(2.0) / median_survival_months * np.exp(hazard_beta * log_burden / BURDEN_SD)
        )
        event_times = rng.exponential(1.0 / hazards)
        censor_times = rng.exponential(1.0 / _censoring_rate(hazards, censor_fraction), n_cases)
        times = np.maximum(np.minimum(event_times, censor_times), 0.1)
        table["label"] = np.full(n_slides, np.nan)
        table["class_index"] = np.full(n_slides, -1)
        table["time"] = np.round(times, 2)[case_of_slide]
        table["event"] = (event_times <= censor_times).astype(int)[case_of_slide]
        lesion = np.clip(burden[case_of_slide] * jitter, 0.0, 0.45)
    else:
        weights = default_weights if class_weights is None else tuple(class_weights)
        if len(weights) != len(classes) or min(weights) < 0 or sum(weights) <= 0:
            raise ValueError(
                f"class_weights for {task} must be {len(classes)} non-negative numbers "
                f"(classes {list(classes)}), got {list(weights)}"
            )
        counts = _allocate(n_cases, weights)
        case_labels = np.repeat(np.arange(len(classes)), counts)[rng.permutation(n_cases)]
        labels = case_labels[case_of_slide]
        table["label"] = [classes[k] for k in labels]
        table["class_index"] = labels
        table["time"] = np.full(n_slides, np.nan)
        table["event"] = [None] * n_slides
        if task == "grading":
            base = lesion_fraction * labels  # benign: none; grade g: g times the base share
        elif task == "diagnosis":
            base = np.where(labels == 1, lesion_fraction, 0.0)
        else:
            base = np.full(n_slides, lesion_fraction)
        cap = 0.0999 if task == "diagnosis" else 0.45  # metastases stay below 10 % of tissue
        lesion = np.clip(base * jitter, 0.0, cap)

    formats = _formats(
        n_slides, format_fractions or {"aperio": 0.7, "generic": 0.2, "nompp": 0.1}, rng
    )
    mpp_choice = rng.choice(np.asarray(generic_mpps, dtype=float), size=n_slides)
    mpps = [
        {"aperio": aperio_mpp, "generic": float(m), "nompp": nompp_mpp}[fmt]
        for fmt, m in zip(formats, mpp_choice, strict=True)
    ]
    table["slide_format"] = formats
    table["mpp"] = mpps
    table["mpp_override"] = [
        m if f == "nompp" else np.nan for f, m in zip(formats, mpps, strict=True)
    ]
    table["lesion_fraction"] = np.round(lesion, 5)
    slide_seeds = np.random.SeedSequence([seed, task_index, 1]).generate_state(n_slides, np.uint32)
    table["seed"] = slide_seeds.astype(np.int64)
    table["file"] = [s + SUFFIX[f] for s, f in zip(slide_ids, formats, strict=True)]
    table["task"] = [task] * n_slides
    return {name: list(table[name]) for name in PLAN_COLUMNS}


def plan_frame(columns: Mapping[str, Sequence]) -> pd.DataFrame:
    """The plan's columns as a DataFrame; ``event`` is nullable (Int64) where some are None."""
    import pandas as pd

    frame = pd.DataFrame({name: columns[name] for name in PLAN_COLUMNS})
    if any(event is None for event in columns["event"]):
        frame["event"] = pd.array(columns["event"], dtype="Int64")
    return frame


def plan_cohort(
    dataset: str, task: str, n_slides: int, n_cases: int, seed: int, **options: Any
) -> pd.DataFrame:
    """One row per slide of a synthetic cohort: :func:`plan_columns` as a DataFrame."""
    return plan_frame(plan_columns(dataset, task, n_slides, n_cases, seed, **options))


def plan_record(columns: Mapping[str, Sequence], slide_id: str) -> dict[str, Any]:
    """The plan row of ``slide_id`` as a dict, with a clear error when the plan has no such slide."""
    ids = list(columns["slide_id"])
    if ids.count(slide_id) != 1:
        raise KeyError(f"slide {slide_id!r} is not in the cohort plan ({len(ids)} slides)")
    index = ids.index(slide_id)
    return {name: columns[name][index] for name in PLAN_COLUMNS}
