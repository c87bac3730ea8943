"""Shared shape of predictions: rows of logits per slide and attention with coordinates."""

from __future__ import annotations

import logging
from collections.abc import Collection, Sequence

import numpy as np

log = logging.getLogger(__name__)


def group_slides(
    slide_ids: Sequence[str], case_ids: Sequence[str] | None, available: Collection[str]
) -> list[tuple[str | None, list[str]]]:
    """[(case_id or None, slide_ids of the bag)], keeping the first-seen order."""
    if case_ids is not None and len(case_ids) != len(slide_ids):
        raise ValueError("case_ids must have one entry per slide id")
    skipped = [slide_id for slide_id in slide_ids if slide_id not in available]
    if skipped:
        log.warning(
            "%d slides have no patches/features and are skipped: %s", len(skipped), skipped[:10]
        )
    groups: dict[str, list[str]] = {}
    for position, slide_id in enumerate(slide_ids):
        if slide_id in available:
            key = case_ids[position] if case_ids is not None else slide_id
            groups.setdefault(key, []).append(slide_id)
    if case_ids is None:
        return [(None, members) for members in groups.values()]
    return list(groups.items())


def prediction_columns(n_classes: int, with_case: bool) -> list[str]:
    """Columns of the predictions DataFrame: slide_id[, case_id], logit_0..logit_{C-1}."""
    return [
        "slide_id",
        *(["case_id"] if with_case else []),
        *(f"logit_{k}" for k in range(n_classes)),
    ]


def collect_predictions(rows, attention, case_id, members, coords, logits, bag_attention) -> None:
    """Append one row per member slide and split the bag's (1, H, N) attention by slide."""
    weights = None if bag_attention is None else bag_attention[0].float().cpu().numpy()
    offset = 0
    for slide_id, slide_coords in zip(members, coords, strict=True):
        rows.append([slide_id, *([case_id] if case_id is not None else []), *logits.tolist()])
        n = len(slide_coords)
        if weights is not None:
            attention[slide_id] = {
                "coords": slide_coords.astype(np.int64),
                "attention": weights[:, offset : offset + n].astype(np.float32),
            }
        offset += n
