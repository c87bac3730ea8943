"""What a trained run was made from: its checkpoint, the patch store and features it used.

A run's `model.pt` knows its kind, task, classes and training settings, but not the settings
of the stages before it. Those are recovered from the workflow's layout
(`<results>/runs/<dataset>/<experiment>/fold<k>/` next to `<results>/tiles/<dataset>/`): the
store's `__meta__` (scales with µm/px, patch size, JPEG quality) and the per-slide tiling
records beside it (`slides/<slide_id>.json`: the segmentation and tiling settings each slide
was made with). A run moved away from its results folder is pointed at its store explicitly.
"""

from __future__ import annotations

import inspect
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from abmilx.config import encode_settings, schema_defaults
from abmilx.integrity import read_json_object
from abmilx.training.runs import load_run

FOLD_DIR = re.compile(r"fold(\d+)$")


def run_directory(path: str | Path, fold: int | None = None) -> Path:
    """The folder holding model.pt: `path` itself, or `path/fold<k>` of an experiment folder
    (`fold` may be left out when it has a single fold)."""
    path = Path(path)
    if path.is_file() and path.name == "model.pt":
        return path.parent
    if (path / "model.pt").is_file():
        return path
    folds = sorted(p.parent for p in path.glob("fold*/model.pt"))
    if not folds:
        raise FileNotFoundError(f"{path}: no model.pt here nor in fold*/ (is this a run folder?)")
    if fold is None:
        if len(folds) > 1:
            names = ", ".join(p.name for p in folds)
            raise ValueError(f"{path} holds {len(folds)} folds ({names}): choose one with --fold")
        return folds[0]
    chosen = path / f"fold{fold}"
    if chosen not in folds:
        raise FileNotFoundError(
            f"{path}: no fold{fold}/model.pt (folds: {[p.name for p in folds]})"
        )
    return chosen


def workflow_layout(run_dir: Path) -> dict[str, Any] | None:
    """results root, dataset and experiment of a run folder in the workflow's layout, or None."""
    run_dir = run_dir.resolve()
    if not (FOLD_DIR.fullmatch(run_dir.name) and run_dir.parents[2].name == "runs"):
        return None
    return {
        "results": run_dir.parents[3],
        "dataset": run_dir.parents[1].name,
        "experiment": run_dir.parent.name,
        "fold": int(FOLD_DIR.fullmatch(run_dir.name)[1]),
    }


def keyword_subset(settings: dict, function: Callable) -> dict:
    """The entries of `settings` that `function` takes as keyword arguments."""
    accepted = inspect.signature(function).parameters
    return {key: value for key, value in settings.items() if key in accepted}


def store_recipe(store: str | Path) -> dict[str, Any]:
    """How a patch store was made: {"segmentation": {...}, "tiling": {...}, "records": n}.

    Tiling settings come from the store meta (scales, patch size, JPEG quality) and from the
    per-slide tiling records in `<store folder>/slides/`; segmentation settings from those
    records too, taken from a slide without sheet overrides. Raises FileNotFoundError naming the
    folder when the records are missing, ValueError when slides disagree.
    """
    from abmilx.patches.store import PatchStore

    store = Path(store)
    meta = PatchStore(store).meta
    folder = store.parent / "slides"
    records = [read_json_object(p) for p in sorted(folder.glob("*.json"))]
    records = [r for r in records if "tiling" in r and r.get("slide_id") in meta["slides"]]
    if not records:
        raise FileNotFoundError(
            f"no per-slide tiling records (*.json) of {store} in {folder}: they hold the "
            "segmentation and tiling settings the store was made with"
        )
    plain = [r for r in records if not r.get("overridden_settings") and "settings" in r]
    if not plain:
        raise ValueError(f"every slide record in {folder} has segmentation overrides")
    segmentation = plain[0]["settings"]
    tiling = {k: v for k, v in records[0]["tiling"].items() if k != "scales"}
    for record in records[1:]:
        other = {k: v for k, v in record["tiling"].items() if k != "scales"}
        if other != tiling:
            raise ValueError(
                f"{folder}: slides were tiled with different settings ({records[0]['slide_id']}: "
                f"{tiling}, {record['slide_id']}: {other})"
            )
    readers = [
        scale.get("reader_reason", "")
        for record in records
        for scale in record["tiling"].get("scales", {}).values()
    ]
    tiling.update(
        scales={name: float(scale["mpp"]) for name, scale in meta["scales"].items()},
        patch_size=int(meta["patch_size"]),
        jpeg_quality=int(meta["jpeg_quality"]),
        fast_read="fast_read is off" not in readers,
    )
    return {"segmentation": segmentation, "tiling": tiling, "records": len(records)}


@dataclass
class TrainedRun:
    """A run folder, its checkpoint, and where its inputs live."""

    run_dir: Path
    checkpoint: dict
    store: Path
    features_dir: Path | None

    @property
    def kind(self) -> str:
        return self.checkpoint["kind"]

    def feature_recipe(self) -> dict[str, Any]:
        """Keyword settings of `abmilx.features.extract` that made the run's features."""
        assert self.features_dir is not None
        first = next(iter(sorted(self.features_dir.glob("*.pt"))), None)
        if first is None:
            raise FileNotFoundError(f"no feature files (*.pt) in {self.features_dir}")
        from abmilx.features.extract import extract, load_features

        record = load_features(first)
        if record.get("source") == "h5":
            raise ValueError(
                f"{self.features_dir}: features imported from HDF5 files ({record['h5_file']}) "
                "cannot be extracted again for new slides here; predict with an E2E run or a "
                "two-stage run on features this workflow encodes"
            )
        # What the files do not record (batch size, loader workers, AMP): the schema's defaults.
        recipe = encode_settings(schema_defaults("feature_set")) | keyword_subset(record, extract)
        # Random encoder weights are drawn after seeding with the workflow's seed, which is
        # also the training seed recorded in the run's settings.
        recipe["seed"] = int(self.checkpoint["settings"]["seed"])
        return recipe


def _feature_sets(results: Path, dataset: str, in_dim: int | None) -> list[Path]:
    """The dataset's feature folders whose features have `in_dim` columns (any, when None)."""
    from abmilx.features.extract import load_features

    matches = []
    for folder in sorted((results / "features" / dataset).glob("*")):
        first = next(iter(sorted(folder.glob("*.pt"))), None)
        if first is None:
            continue
        if in_dim is None or load_features(first)["features"].shape[1] == in_dim:
            matches.append(folder)
    return matches


def trained_run(
    run: str | Path,
    *,
    fold: int | None = None,
    store: str | Path | None = None,
    features_dir: str | Path | None = None,
) -> TrainedRun:
    """Open a run and find the store (and, for two-stage runs, the feature set) it was trained on."""
    run_dir = run_directory(run, fold)
    checkpoint = load_run(run_dir)
    layout = workflow_layout(run_dir)
    if store is None:
        if layout is None:
            raise ValueError(
                f"{run_dir} is not in the workflow's layout (results/runs/<dataset>/<experiment>/"
                "fold<k>): give --store, the patch store the run was trained on"
            )
        store = layout["results"] / "tiles" / layout["dataset"] / "patches.lmdb"
    store = Path(store)
    if not store.is_file():
        raise FileNotFoundError(f"patch store {store} (the run's training store) does not exist")
    if checkpoint["kind"] == "two_stage" and features_dir is None:
        if layout is None:
            raise ValueError(f"{run_dir}: give --features, the feature set the run was trained on")
        in_dim = checkpoint["settings"].get("in_dim")
        candidates = _feature_sets(layout["results"], layout["dataset"], in_dim)
        if len(candidates) != 1:
            raise ValueError(
                f"{run_dir}: {len(candidates)} feature sets of dimension {in_dim} for dataset "
                f"{layout['dataset']} ({[str(c) for c in candidates]}): give --features"
            )
        features_dir = candidates[0]
    return TrainedRun(
        run_dir, checkpoint, store, Path(features_dir) if features_dir is not None else None
    )
