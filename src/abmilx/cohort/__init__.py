"""Embedded synthetic cohort: deterministic pyramidal slides with ground truth, and their sheets.

``plan_cohort`` decides the slides (cheap, used at DAG-parse time); ``synthesize_slide`` renders
one slide file plus its ground-truth masks; ``write_sheets`` writes the slide and label sheets.
Names load on first use (PEP 562), so that ``python -m abmilx.cohort slide``, run once per
slide, imports neither pandas nor the sheet writers.
"""

from importlib import import_module

_HOMES = {
    "PLAN_COLUMNS": "plan",
    "TASKS": "plan",
    "class_names": "plan",
    "plan_cohort": "plan",
    "plan_record": "plan",
    "PLAN_KEYS": "settings",
    "RENDER_KEYS": "settings",
    "plan_from_settings": "settings",
    "slide_plan": "settings",
    "split_settings": "settings",
    "label_sheet": "sheets",
    "slide_sheet": "sheets",
    "write_sheets": "sheets",
    "SLIDE_FORMATS": "slidefile",
    "write_slide": "slidefile",
    "load_truth": "synthesize",
    "render_slide": "synthesize",
    "synthesize_slide": "synthesize",
}
__all__ = sorted(_HOMES)


def __getattr__(name: str):
    if name not in _HOMES:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(import_module(f"{__name__}.{_HOMES[name]}"), name)


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
