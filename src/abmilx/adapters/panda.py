"""PANDA (prostate ISUP grading): Kaggle `train.csv` + `<image_id>.tiff` -> 6 classes '0'..'5'.

One slide per patient in PANDA, so case_id = image_id. The optional split file is the official
ABMILX `labels/panda.csv` (`case, slide, label, fold`, fold in train/val/test).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path

from abmilx.adapters.common import Adapted, Issue, Table, find_slides, is_missing, match_by_key
from abmilx.sheets import Problem, SheetError

CLASSES = ("0", "1", "2", "3", "4", "5")
SPLITS = ("train", "val", "test")


def _check_mpp(value: object, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"mpp{where} must be a number (µm/px), got {value!r}")
    if not (math.isfinite(value) and value > 0):
        raise ValueError(f"mpp{where} must be positive and finite, got {value!r}")
    return float(value)


def _read_split(path: str | Path) -> dict[str, str]:
    """image_id -> train/val/test from the official split CSV; bad folds name file and line."""
    table = Table(path)
    slide_column = table.find(("slide", "image_id", "id"), "slide")
    fold_column = table.find(("fold", "split"), "fold")
    split: dict[str, str] = {}
    problems = []
    for line, row in table:
        fold = row[fold_column].lower()
        if fold not in SPLITS:
            problems.append(
                Problem(
                    table.name, line, fold_column, f"fold must be one of {SPLITS}, got {fold!r}"
                )
            )
        split[row[slide_column]] = fold
    if problems:
        raise SheetError(problems)
    return split


def build(
    *,
    labels: str | Path,
    slide_dir: str | Path,
    split_file: str | Path | None = None,
    mpp: float | Mapping[str, float] | None = None,
) -> Adapted:
    """Match `train.csv` rows to `<image_id>.tiff` files.

    `mpp`: None leaves the resolution to the file's metadata; a number overrides it for every
    slide; a mapping by `data_provider` (e.g. {"radboud": 0.486, "karolinska": 0.452}) overrides
    it per centre, leaving other centres to the file. With `split_file`, slides missing from it
    are reported as excluded (the fixed split would otherwise silently grow).
    """
    if isinstance(mpp, Mapping):
        per_provider = {str(k).lower(): _check_mpp(v, f"[{k!r}]") for k, v in mpp.items()}
    elif mpp is not None:
        fixed = _check_mpp(mpp, "")
    table = Table(labels)
    id_column = table.find(("image_id",), "image id")
    grade_column = table.find(("isup_grade",), "ISUP grade")
    provider_column = table.find(
        ("data_provider",), "data provider", required=isinstance(mpp, Mapping)
    )
    split = _read_split(split_file) if split_file is not None else None

    adapted = Adapted(
        "classification",
        CLASSES,
        ("slide_id", "case_id", "label") + (("split",) if split is not None else ()),
    )
    records: dict[str, dict] = {}
    excluded: dict[str, str] = {}
    problems = []
    for line, row in table:
        image_id, grade = row[id_column], row[grade_column]
        if not image_id:
            problems.append(Problem(table.name, line, id_column, "image id is missing"))
            continue
        if image_id in records or image_id in excluded:
            problems.append(
                Problem(table.name, line, id_column, f"duplicate image id {image_id!r}")
            )
            continue
        if grade not in CLASSES:
            problems.append(
                Problem(table.name, line, grade_column, f"ISUP grade must be 0-5, got {grade!r}")
            )
            continue
        if split is not None and image_id not in split:
            excluded[image_id] = f"not in the split file {split_file}"
            adapted.excluded.append(Issue(image_id, excluded[image_id], table.name, line))
            continue
        record = {"line": line, "case_id": image_id, "label": grade}
        if split is not None:
            record["split"] = split[image_id]
        if isinstance(mpp, Mapping):
            provider = row[provider_column].lower()
            record["mpp"] = None if is_missing(provider) else per_provider.get(provider)
        elif mpp is not None:
            record["mpp"] = fixed
        records[image_id] = record
    if problems:
        raise SheetError(problems)

    slides = find_slides(slide_dir)
    match_by_key(
        adapted,
        slides,
        records,
        lambda slide_id: slide_id,
        table.name,
        "slide",
        excluded,
        mpp_of=lambda record: record.get("mpp"),
    )
    return adapted
