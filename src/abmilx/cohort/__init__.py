"""Embedded synthetic cohort: deterministic pyramidal slides with ground truth, and their sheets.

``plan_cohort`` decides the slides (cheap, used at DAG-parse time); ``synthesize_slide`` renders
one slide file plus its ground-truth masks; ``write_sheets`` writes the slide and label sheets.
"""

from abmilx.cohort.plan import PLAN_COLUMNS, TASKS, class_names, plan_cohort, plan_row
from abmilx.cohort.settings import PLAN_KEYS, RENDER_KEYS, plan_from_settings, split_settings
from abmilx.cohort.sheets import label_sheet, slide_sheet, write_sheets
from abmilx.cohort.slidefile import SLIDE_FORMATS, write_slide
from abmilx.cohort.synthesize import load_truth, render_slide, synthesize_slide

__all__ = [
    "PLAN_COLUMNS",
    "PLAN_KEYS",
    "RENDER_KEYS",
    "SLIDE_FORMATS",
    "TASKS",
    "class_names",
    "label_sheet",
    "load_truth",
    "plan_cohort",
    "plan_from_settings",
    "plan_row",
    "render_slide",
    "slide_sheet",
    "split_settings",
    "synthesize_slide",
    "write_sheets",
    "write_slide",
]
