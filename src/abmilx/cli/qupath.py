"""A run's attention as GeoJSON that QuPath imports: tissue contours and scored patches per slide.

Each test slide of a run gets ``<slide_id>.geojson``: a FeatureCollection holding the slide's
tissue contours as annotations (the segmentation's polygons, editable in QuPath and readable back
through the slide sheet's ``geojson`` column) and one ``tile`` object per scored patch with its
measurements: the raw attention of each head as stored in ``attention.npz``, their mean, the
patch's rank by that mean (1 = most attended) and the run's probability of its predicted class.
Coordinates are level-0 pixels less the slide's bounds offset (QuPath crops MIRAX and other
formats with an empty margin to their scanned region).
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from abmilx.cli.trained import FOLD_DIR, workflow_layout
from abmilx.geometry import polygons_to_geojson, read_geojson
from abmilx.integrity import read_json_object

TILE_CLASS = {"name": "Attention", "color": [255, 128, 0]}


def fold_directories(run: str | Path, fold: int | None = None) -> list[Path]:
    """The fold folders of ``run`` that hold evaluated attention (one, or every fold)."""
    run = Path(run)
    if (run / "attention.npz").is_file():
        return [run]
    folds = sorted(
        (p.parent for p in run.glob("fold*/attention.npz") if FOLD_DIR.fullmatch(p.parent.name)),
        key=lambda p: int(FOLD_DIR.fullmatch(p.name)[1]),
    )
    if fold is not None:
        folds = [p for p in folds if p.name == f"fold{fold}"]
    if not folds:
        where = f"fold{fold}/" if fold is not None else "fold*/"
        raise FileNotFoundError(
            f"{run}: no attention.npz here nor in {where} (is the run evaluated? its "
            "metrics.json target writes them)"
        )
    return folds


def predicted_probability(predictions: pd.DataFrame) -> dict[str, float]:
    """Slide (or case) id -> probability of the predicted class; survival runs have none."""
    prob_columns = [c for c in predictions.columns if c.startswith("prob_")]
    if not prob_columns or "pred" not in predictions:
        return {}
    key = "slide_id" if "slide_id" in predictions else "case_id"
    chosen = predictions.apply(lambda row: row[f"prob_{row['pred']}"], axis=1)
    return dict(zip(predictions[key].astype(str), chosen.astype(float), strict=True))


def tile_features(
    coords: np.ndarray,
    attention: np.ndarray,
    side: float,
    offset: tuple[int, int],
    probability: float | None,
) -> list[dict[str, Any]]:
    """One QuPath ``tile`` per patch: its square and its attention measurements."""
    heads = attention.reshape(-1, len(coords)).astype(np.float64)
    mean = heads.mean(axis=0)
    rank = np.empty(len(mean), dtype=np.int64)
    rank[np.argsort(-mean, kind="stable")] = np.arange(1, len(mean) + 1)
    features = []
    for index, (x, y) in enumerate(np.asarray(coords, dtype=np.float64)):
        x0, y0 = x - offset[0], y - offset[1]
        ring = [[x0, y0], [x0 + side, y0], [x0 + side, y0 + side], [x0, y0 + side], [x0, y0]]
        measurements = {f"attention head {h + 1}": float(v) for h, v in enumerate(heads[:, index])}
        measurements["attention mean"] = float(mean[index])
        measurements["attention rank"] = int(rank[index])
        if probability is not None:
            measurements["predicted class probability"] = probability
        features.append(
            {
                "type": "Feature",
                "geometry": {"type": "Polygon", "coordinates": [ring]},
                "properties": {
                    "objectType": "tile",
                    "classification": TILE_CLASS,
                    "measurements": measurements,
                },
            }
        )
    return features


def shifted(collection: dict, offset: tuple[int, int]) -> dict:
    """A FeatureCollection of polygons moved by ``-offset``."""
    if offset == (0, 0):
        return collection
    for feature in collection["features"]:
        feature["geometry"]["coordinates"] = [
            [[x - offset[0], y - offset[1]] for x, y in ring]
            for ring in feature["geometry"]["coordinates"]
        ]
    return collection


def slide_collection(
    coords: np.ndarray,
    attention: np.ndarray,
    side: float,
    offset: tuple[int, int],
    probability: float | None,
    contours: Path | None,
) -> dict:
    """One slide's FeatureCollection: its tissue contours (a segmentation GeoJSON, when there
    is one) as annotations, then its scored patches as tiles."""
    collection = (
        shifted(polygons_to_geojson(read_geojson(contours)), offset)
        if contours is not None and contours.is_file()
        else {"type": "FeatureCollection", "features": []}
    )
    collection["features"] += tile_features(coords, attention, side, offset, probability)
    return collection


def export_qupath(
    run: str | Path,
    out: str | Path,
    *,
    slides: Iterable[str] | None = None,
    fold: int | None = None,
    results: str | Path | None = None,
) -> list[Path]:
    """Write ``<out>/<slide_id>.geojson`` for the run's evaluated test slides (or ``slides``).

    The patch side and the bounds offset come from each slide's tiling record, and the tissue
    contours from its segmentation GeoJSON, found in the workflow's layout (``results``, by
    default the run's own results folder). A slide tested in several folds (repeated holdout)
    gets one file per fold, ``<slide_id>.fold<k>.geojson``.
    """
    folds = fold_directories(run, fold)
    wanted = None if slides is None else set(slides)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    tested: dict[str, list[Path]] = {}
    for fold_dir in folds:
        with np.load(fold_dir / "attention.npz") as stored:
            for key in stored.files:
                if key.endswith("/attention"):
                    tested.setdefault(key.removesuffix("/attention"), []).append(fold_dir)
    if wanted is not None:
        unknown = sorted(wanted - set(tested))
        if unknown:
            raise ValueError(
                f"{run}: no attention for slides {', '.join(unknown)} (test slides: "
                f"{', '.join(sorted(tested)) or 'none'})"
            )
    written = []
    for fold_dir in folds:
        layout = workflow_layout(fold_dir)
        if layout is None and results is None:
            raise ValueError(
                f"{fold_dir} is not in the workflow's layout (results/runs/<dataset>/<experiment>/"
                "fold<k>): give --results, the results folder the run was made in"
            )
        root = Path(results) if results is not None else layout["results"]
        dataset = layout["dataset"] if layout is not None else fold_dir.parents[1].name
        probability = predicted_probability(
            pd.read_csv(fold_dir / "predictions.csv", dtype={"slide_id": str, "case_id": str})
        )
        with np.load(fold_dir / "attention.npz") as stored:
            for slide_id, slide_folds in sorted(tested.items()):
                if fold_dir not in slide_folds or (wanted is not None and slide_id not in wanted):
                    continue
                record_path = root / "tiles" / dataset / "slides" / f"{slide_id}.json"
                if not record_path.is_file():
                    raise FileNotFoundError(
                        f"{record_path}: the tiling record of {slide_id} (its patches' size "
                        "and the slide's bounds) is missing"
                    )
                record = read_json_object(record_path)
                side = float(record["tiling"]["scales"]["main"]["extent_level0"])
                offset = (int(record.get("bounds_x", 0)), int(record.get("bounds_y", 0)))
                collection = slide_collection(
                    stored[f"{slide_id}/coords"],
                    stored[f"{slide_id}/attention"],
                    side,
                    offset,
                    probability.get(slide_id),
                    root / "qc" / "segmentation" / dataset / f"{slide_id}.geojson",
                )
                name = slide_id if len(slide_folds) == 1 else f"{slide_id}.{fold_dir.name}"
                path = out / f"{name}.geojson"
                path.write_text(json.dumps(collection))
                written.append(path)
    return written
