"""`abmilx predict`: apply a trained run to new slides, with no retraining.

Each slide of the sheet goes through the same stage functions as the workflow, with the
settings the run's training store was made with (`abmilx.cli.trained.store_recipe`):
segmentation, tiling into a per-slide store, packing; two-stage runs then get features from the
same encoder recipe. `abmilx.kinds.predict` (the kind from the checkpoint) gives logits and
attention. The outputs are the evaluation stage's (predictions.csv with the same columns,
attention.npz), one attention heatmap per slide and the per-slide QC table. Slides that fail
segmentation or tiling get their QC row and no prediction, as in the workflow.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pandas as pd

from abmilx.cli.trained import store_recipe, trained_run
from abmilx.config import schema_defaults
from abmilx.evaluation.metrics import median_survival_bin, softmax, survival_risk
from abmilx.integrity import read_json_object

log = logging.getLogger(__name__)


class PartialPredictionError(ValueError):
    """Some slides of the sheet got no prediction; the others' results are written."""

    def __init__(self, left_out: list[str], records: list[Path], out: Path) -> None:
        reasons = {}
        for path in records:
            record = read_json_object(path)
            reasons[record["slide_id"]] = record["status"] + (
                f": {record['reason']}" if record.get("reason") else ""
            )
        named = "; ".join(f"{slide} ({reasons.get(slide, 'no patches')})" for slide in left_out)
        super().__init__(
            f"{len(left_out)} slide(s) not predicted: {named}. The other slides' results are in "
            f"{out}; pass --allow-partial to accept them"
        )


def prepare_slides(
    sheet: pd.DataFrame, out: Path, recipe: dict, dataset: str, threads: int = 1
) -> list[Path]:
    """Segment and tile every slide of `sheet` under `out`; returns the tiling QC records."""
    from abmilx.segmentation.segment import segment_slide
    from abmilx.segmentation.settings import SegmentationSettings
    from abmilx.tiling.settings import TilingSettings
    from abmilx.tiling.tile import tile_slide

    # Settings a store's records lack (written by an older version): the schema's defaults.
    segmentation = SegmentationSettings.from_settings(
        schema_defaults("segmentation") | SegmentationSettings.known(recipe["segmentation"])
    )
    tiling = TilingSettings.from_settings(
        schema_defaults("tiling") | TilingSettings.known(recipe["tiling"])
    )
    records = []
    for row in sheet.itertuples(index=False):
        mpp = None if pd.isna(row.mpp) else float(row.mpp)
        overrides = json.loads(getattr(row, "segmentation", "") or "{}")
        prefix = out / "segmentation" / row.slide_id
        segment_slide(
            row.path,
            prefix,
            segmentation.updated(overrides, f"slide {row.slide_id}'s segmentation column"),
            slide_id=row.slide_id,
            dataset=dataset,
            mpp=mpp,
            geojson=getattr(row, "geojson", "") or None,
            overridden=sorted(overrides),
        )
        qc = out / "tiles" / f"{row.slide_id}.json"
        record = tile_slide(
            row.path,
            prefix,
            out / "tiles" / f"{row.slide_id}.lmdb",
            qc,
            tiling,
            slide_id=row.slide_id,
            dataset=dataset,
            mpp=mpp,
            threads=threads,
        )
        log.info(
            "%s: %s %s %s", row.slide_id, record["status"], record["patches"], record["reason"]
        )
        records.append(qc)
    return records


def prediction_table(
    logits: pd.DataFrame, checkpoint: dict, sheet: pd.DataFrame, truth: pd.DataFrame | None
) -> pd.DataFrame:
    """The evaluation stage's predictions.csv columns; label (time, event) blank without truth."""
    columns = [c for c in logits.columns if c.startswith("logit_")]
    table = logits.drop(columns="case_id", errors="ignore").merge(
        sheet[["slide_id", "case_id"]], on="slide_id"
    )
    survival = checkpoint["task"] == "survival"
    keys = ["case_id"] if survival else ["slide_id"]
    known = [c for c in ("label", "time", "event") if truth is not None and c in truth]
    labels = (
        truth.drop_duplicates(keys)[[*keys, *known]]
        if known
        else pd.DataFrame({keys[0]: table[keys[0]].unique()})
    )
    if survival:
        per_case = table.groupby("case_id", sort=True)[columns].mean()
        values = per_case.to_numpy(dtype=float)
        predictions = pd.DataFrame({"case_id": per_case.index}).merge(labels, how="left")
        predictions = predictions.reindex(columns=["case_id", "label", "time", "event"])
        predictions["risk"] = survival_risk(values)
        predictions["pred"] = median_survival_bin(values)
        return predictions
    classes = [str(c) for c in checkpoint["classes"]]
    probs = softmax(table[columns].to_numpy(dtype=float))
    predictions = table[["slide_id", "case_id"]].merge(labels, how="left")
    predictions = predictions.reindex(columns=["slide_id", "case_id", "label"])
    for i, name in enumerate(classes):
        predictions[f"prob_{name}"] = probs[:, i]
    predictions["pred"] = [classes[i] for i in probs.argmax(axis=1)]
    return predictions


def draw_heatmap(
    slide_path: str, record: dict, coords: np.ndarray, attention: np.ndarray, footprint: float,
    title: str, out: Path,
) -> Path:  # fmt: skip
    """Thumbnail and attention overlay of one slide, side by side, as a PNG."""
    from matplotlib.figure import Figure

    from abmilx.report.figures.draw import (
        COLOUR_BAR_LABELS,
        NORMALISATIONS,
        THUMBNAIL_SIDE,
        attention_map,
        colour_bar,
        overlay,
    )
    from abmilx.slides import Slide

    thumb_mpp = max(record["width"], record["height"]) * record["mpp"] / THUMBNAIL_SIDE
    override = record["mpp"] if record.get("mpp_source") == "override" else None
    with Slide(slide_path, mpp_override=override) as slide:
        thumbnail = slide.thumbnail(thumb_mpp)
    scale = thumbnail.shape[1] / record["width"]  # level-0 px -> thumbnail px
    normalisation = NORMALISATIONS[0]
    heat, covered = attention_map(
        coords, attention, footprint, scale, thumbnail.shape[:2], normalisation
    )
    figure = Figure(figsize=(9, 4.6))
    grid = figure.add_gridspec(2, 2, height_ratios=[1.0, 0.05])
    left, right = figure.add_subplot(grid[0, 0]), figure.add_subplot(grid[0, 1])
    left.imshow(thumbnail)
    right.imshow(overlay(thumbnail, heat, covered))
    colour_bar(figure.add_subplot(grid[1, 1]), normalisation)
    left.set_title(title)
    right.set_title(f"attention (mean over heads, {COLOUR_BAR_LABELS[normalisation]})")
    for axis in (left, right):
        axis.set_axis_off()
    figure.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(out, dpi=110)
    return out


def write_heatmaps(
    attention: dict, predictions: pd.DataFrame, sheet: pd.DataFrame, out: Path, scale: str
) -> None:
    """One heatmap per slide with attention, drawn at the patch footprints of `scale`, and the
    same attention as QuPath GeoJSON (qupath/<slide_id>.geojson, as `abmilx export-qupath`)."""
    from abmilx.cli.qupath import predicted_probability, slide_collection
    from abmilx.patches.store import PatchStore

    store = PatchStore(out / "patches.lmdb")
    # Survival predictions are per case: the title then names the slide only.
    by_slide = predictions.set_index("slide_id") if "slide_id" in predictions else None
    paths = sheet.set_index("slide_id")["path"]
    probability = predicted_probability(predictions)
    (out / "qupath").mkdir(parents=True, exist_ok=True)
    for slide_id, maps in attention.items():
        record = json.loads((out / "tiles" / f"{slide_id}.json").read_text())
        footprint = store.extent_level0(slide_id, scale) or (
            store.patch_size * store.meta["scales"][scale]["mpp"] / record["mpp"]
        )
        title = slide_id
        if by_slide is not None:
            title += f": predicted {by_slide.loc[slide_id, 'pred']}"
        draw_heatmap(
            paths[slide_id], record, maps["coords"], maps["attention"], footprint,
            title, out / "heatmaps" / f"{slide_id}.png",
        )  # fmt: skip
        collection = slide_collection(
            maps["coords"],
            maps["attention"],
            footprint,
            (int(record.get("bounds_x", 0)), int(record.get("bounds_y", 0))),
            probability.get(slide_id),
            out / "segmentation" / f"{slide_id}.geojson",
        )
        (out / "qupath" / f"{slide_id}.geojson").write_text(json.dumps(collection))


def predict_slides(
    run: str | Path,
    slides: str | Path,
    out: str | Path,
    *,
    labels: str | Path | None = None,
    fold: int | None = None,
    store: str | Path | None = None,
    features_dir: str | Path | None = None,
    weights: str = "main",
    device: str = "auto",
    threads: int = 1,
    allow_partial: bool = False,
) -> pd.DataFrame:
    """Predict the slides of a slide sheet with a trained run; writes everything under `out`.

    A slide that could not be predicted (failed QC, no patches) is listed in predict.json and
    slides.tsv; unless `allow_partial`, it then raises PartialPredictionError naming them."""
    from abmilx.kinds import predict
    from abmilx.patches.store import PatchStore, index_stores
    from abmilx.provenance import git_commit
    from abmilx.report.qc import write_qc_table
    from abmilx.sheets import join_labels, load_label_sheet, load_slide_sheet

    out = Path(out)
    if out.exists() and any(out.iterdir()):
        raise FileExistsError(f"output folder {out} is not empty: choose a new or empty folder")
    sheet = load_slide_sheet(slides)  # a bad sheet fails before anything heavy
    trained = trained_run(run, fold=fold, store=store, features_dir=features_dir)
    checkpoint = trained.checkpoint
    if weights == "ema" and "ema_state_dict" not in checkpoint:
        raise ValueError(f"{trained.run_dir}: this {trained.kind} run kept no EMA weights")
    recipe = store_recipe(trained.store)
    truth = None
    if labels is not None:
        task = checkpoint["task"]
        table = load_label_sheet(labels, task, checkpoint["classes"])
        key = table.attrs.get("key", "slide_id")
        mine = table[table[key].isin(sheet[key])]  # a sheet may label many more slides
        mine.attrs = table.attrs
        truth, _ = join_labels(sheet, mine, task)
    out.mkdir(parents=True, exist_ok=True)
    records = prepare_slides(sheet, out, recipe, dataset=out.name, threads=threads)
    write_qc_table(records, out / "slides.tsv")
    stores = [out / "tiles" / f"{slide_id}.lmdb" for slide_id in sheet["slide_id"]]
    packed = out / "patches.lmdb"
    index_stores(stores, packed)  # the per-slide stores stay; no patch is copied

    features = None
    if trained.kind != "two_stage":  # the kinds that read the patch store (e2e, c2c, ft)
        scale, source = checkpoint["settings"]["scales"]["main"], packed
    else:  # two-stage: encode the new patches with the recipe of the run's feature set
        from abmilx.features.extract import extract

        features = trained.feature_recipe()
        scale, source = features["scale"], out / "features"
        extract(packed, source, **features, device=device, threads=threads)
    patch_store = PatchStore(packed)
    ready = [
        s for s in sheet["slide_id"] if s in patch_store.slide_ids and patch_store.count(s, scale)
    ]
    if not ready:
        raise ValueError(f"no slide of {slides} has patches: see {out / 'slides.tsv'}")
    case_ids = None
    if checkpoint["task"] == "survival":  # a case's slides form one bag, as in training
        case_ids = sheet.set_index("slide_id").loc[ready, "case_id"].tolist()
    logits, attention = predict(
        trained.run_dir, source, ready, threads, case_ids=case_ids, weights=weights, device=device
    )
    predictions = prediction_table(logits, checkpoint, sheet, truth)
    predictions.to_csv(out / "predictions.csv", index=False)
    # The evaluation stage's attention.npz: `<slide_id>/coords` (int64), `<slide_id>/attention`.
    arrays = {f"{slide_id}/{k}": v for slide_id, maps in attention.items() for k, v in maps.items()}
    np.savez_compressed(out / "attention.npz", **arrays)

    write_heatmaps(attention, predictions, sheet, out, scale)
    summary = {
        "run": str(trained.run_dir.resolve()),
        "kind": trained.kind,
        "weights": weights,
        "training_store": str(trained.store.resolve()),
        "features": str(trained.features_dir.resolve()) if trained.features_dir else None,
        "recipe": {**recipe, "features": features},
        "slides": len(sheet),
        "predicted": len(ready),
        "left_out": [s for s in sheet["slide_id"] if s not in ready],
        "git_commit": git_commit(),
    }
    (out / "predict.json").write_text(json.dumps(summary, indent=2) + "\n")
    if summary["left_out"] and not allow_partial:
        raise PartialPredictionError(summary["left_out"], records, out)
    return predictions
