"""Training/validation items from a split file: one bag per slide, or per case for survival."""

from __future__ import annotations

import logging
import math
from collections.abc import Collection
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from abmilx.integrity import read_json_object

log = logging.getLogger(__name__)

TASKS = ("classification", "survival")


class MissingSlidesError(ValueError):
    """Slides the split file lists have no data (features, patches) and did not fail QC."""


@dataclass(frozen=True)
class Bag:
    """What the MIL model sees as one sample.

    Classification bags are slides. Survival bags are cases: the patches of all slides of the
    case are pooled, as in the official survival config.
    """

    key: str
    slide_ids: tuple[str, ...]
    label: int
    time: float = math.nan
    event: int = 0


SELECTION_SETS = {"last": None, "val": "val", "test_official": "test"}


def selection_bags(bags: dict[str, list[Bag]], selection: str) -> tuple[list[Bag], str]:
    """Bags that drive model selection, and the loop's selection rule ("last" or "val").

    ``test_official`` reproduces the official BRCA-subtyping and survival protocol, where the
    validation loader is the test set: best epoch and early stopping are chosen on the very
    slides that are then reported. It is optimistic, never a default, and the run says so.
    """
    if selection not in SELECTION_SETS:
        raise ValueError(f"selection must be one of {list(SELECTION_SETS)}, got {selection!r}")
    if selection == "test_official":
        log.warning("selection 'test_official': selecting on the TEST split (optimistic)")
        return bags.get("test", []), "val"
    return bags.get("val", []), selection


def resolve_classes(table: pd.DataFrame, task: str, classes: list[str] | None) -> list[str]:
    """Class names in output order; survival "classes" are the time bins."""
    if task == "survival":
        if classes:
            return list(classes)
        return [f"bin{k}" for k in range(int(table["label"].max()) + 1)]
    if classes:
        unknown = sorted(set(table["label"].astype(str)) - set(map(str, classes)))
        if unknown:
            raise ValueError(f"labels {unknown} are not in settings classes {classes}")
        return [str(name) for name in classes]
    return sorted(table["label"].astype(str).unique())


SPLIT_COLUMNS = ("slide_id", "label", "split", "fold")


def read_split(splits: str | Path, dtype: dict | None = None) -> pd.DataFrame:
    """The split file as a table; an empty, damaged or foreign file fails naming it."""
    dtype = {"slide_id": str, "case_id": str} if dtype is None else dtype
    try:
        table = pd.read_csv(splits, dtype=dtype)
    except (pd.errors.EmptyDataError, pd.errors.ParserError, UnicodeDecodeError) as error:
        raise ValueError(f"{splits}: not a readable split file ({error})") from None
    missing = [column for column in SPLIT_COLUMNS if column not in table]
    if missing:
        raise ValueError(f"{splits}: not a split file, no column {', '.join(missing)}")
    if table[list(SPLIT_COLUMNS)].isna().any(axis=None):
        row = int(table[list(SPLIT_COLUMNS)].isna().any(axis=1).idxmax()) + 2
        raise ValueError(f"{splits}, line {row}: a split row with an empty field")
    return table


def left_out_by_qc(splits: str | Path) -> set[str]:
    """Slides the split's sidecar (`<splits>.json`, key "excluded") left out for failing QC."""
    sidecar = Path(splits).with_suffix(".json")
    if not sidecar.is_file():
        return set()
    return {entry["slide_id"] for entry in read_json_object(sidecar).get("excluded", [])}


def require_slides(
    slide_ids: Collection[str], available: Collection[str], splits: str | Path, where: str
) -> None:
    """Fail naming the slides the split lists but `where` (features, store) has no data for.

    A lost intermediate must not silently shrink a training or test set; only slides that
    failed QC (already left out of the split, listed in its sidecar) may lack data."""
    missing = sorted(set(slide_ids) - set(available) - left_out_by_qc(splits))
    if missing:
        shown = ", ".join(missing[:20]) + (
            f" and {len(missing) - 20} more" if len(missing) > 20 else ""
        )
        raise MissingSlidesError(
            f"{len(missing)} slide(s) of {splits} have no data in {where}: {shown}. They did "
            "not fail QC: the file was lost or is stale; rerun the workflow to rebuild it"
        )


def load_fold(
    splits: str | Path,
    fold: int,
    task: str,
    classes: list[str] | None = None,
    available: Collection[str] | None = None,
    where: str = "the data",
) -> tuple[dict[str, list[Bag]], list[str]]:
    """Bags per split ("train", "val", "test") of `fold`, and the class names.

    `available` (slides with data) must hold every slide of the fold, except those the split's
    sidecar lists as failing QC (`require_slides` raises MissingSlidesError naming the others). Training bags appear as many times as the split
    file's ``repeat`` column says (oversampling of a minority class, e.g. BRCA ILC to about 2:1).
    """
    if task not in TASKS:
        raise ValueError(f"task must be one of {TASKS}, got {task!r}")
    table = read_split(splits)
    classes = resolve_classes(table, task, classes)
    rows = table[table["fold"].astype(int) == int(fold)]
    if rows.empty:
        raise ValueError(f"{splits} has no rows for fold {fold}")
    if available is not None:
        require_slides(rows["slide_id"], available, splits, where)
        rows = rows[rows["slide_id"].isin(set(available))]
    bags: dict[str, list[Bag]] = {}
    for split, part in rows.groupby("split", sort=False):
        if task == "classification":
            index = {name: k for k, name in enumerate(classes)}
            bags[split] = [
                Bag(row.slide_id, (row.slide_id,), index[str(row.label)])
                for row in part.itertuples(index=False)
            ]
        else:
            bags[split] = [
                Bag(
                    case_id,
                    tuple(case["slide_id"]),
                    int(case["label"].iloc[0]),
                    float(case["time"].iloc[0]),
                    int(case["event"].iloc[0]),
                )
                for case_id, case in part.groupby("case_id", sort=False)
            ]
    if "train" in bags and "repeat" in rows:
        repeats = rows.groupby("slide_id" if task == "classification" else "case_id")["repeat"]
        times = repeats.max().astype(int).to_dict()
        bags["train"] = [bag for bag in bags["train"] for _ in range(times.get(bag.key, 1))]
    return bags, classes
