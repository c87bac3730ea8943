"""Plan of an unlabelled pretraining cohort: slides that mix every task's morphology.

The self-supervised stand-in for pretrained weights (abmilx.pretrain) needs patches of its own,
never those of an evaluation slide. This plans them with the generator's own tasks: each source
task contributes an equal share of slides with uniform classes, planned under a seed derived
from the pretraining cohort's seed (salted, so it never equals an evaluation cohort's plan) and
renamed ``PRE-<n>``. Rows keep their source task and class, so the renderer draws that
morphology; the labels are dropped and every slide is its own case.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from abmilx.cohort.plan import PLAN_COLUMNS, TASKS, plan_columns

PRETRAINING_TASK = "pretraining"
PREFIX = "PRE"
SEED_SALT = 0x5EED


def pretraining_columns(
    dataset: str,
    n_slides: int,
    seed: int,
    *,
    classes: Any = None,
    class_weights: Any = None,
    n_cases: int | None = None,
    **options: Any,
) -> dict[str, list]:
    """The columns of :func:`abmilx.cohort.plan.plan_columns`; no labels, times or events.

    ``options`` (formats, lesion_fraction, rendering keys) pass to every source task's plan.
    """
    if classes or class_weights:
        raise ValueError(f"{dataset}: a pretraining cohort has no classes or class_weights")
    if n_slides < len(TASKS):
        raise ValueError(
            f"{dataset}: a pretraining cohort needs n_slides >= {len(TASKS)} (one per source "
            f"task: {', '.join(TASKS)}), got {n_slides}"
        )
    counts = np.full(len(TASKS), n_slides // len(TASKS))
    counts[: n_slides % len(TASKS)] += 1
    salted = int(np.random.SeedSequence([seed, SEED_SALT]).generate_state(1)[0])
    parts = [
        plan_columns(
            f"{dataset}/{task}",
            task,
            int(count),
            int(count),
            salted,
            class_weights=[1.0] * len(names) if names else None,
            **options,
        )
        for (task, (_, names, _)), count in zip(TASKS.items(), counts, strict=True)
    ]
    plan = {name: [value for part in parts for value in part[name]] for name in PLAN_COLUMNS}
    ids = [f"{PREFIX}-{i + 1:04d}" for i in range(len(plan["slide_id"]))]
    plan["file"] = [i + Path(f).suffix for i, f in zip(ids, plan["file"], strict=True)]
    plan["slide_id"] = ids
    plan["case_id"] = ids
    plan["label"] = [np.nan] * len(ids)
    plan["class_index"] = [int(index) for index in plan["class_index"]]
    plan["time"] = [np.nan] * len(ids)
    plan["event"] = [None] * len(ids)
    return plan
