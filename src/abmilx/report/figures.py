"""Figures: attention heatmaps of an E2E model over thumbnails of test slides.

Attention (mean over heads, min-max normalised per slide) is painted on each patch footprint at
thumbnail scale. For generated cohorts the ground-truth lesion outline is drawn on top, so a reader
sees at a glance whether the model attends to the discriminative regions.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path

import cv2
import matplotlib
import numpy as np
import openslide
import pandas as pd
from matplotlib.figure import Figure

THUMBNAIL_SIDE = 768


def choose_slides(predictions: pd.DataFrame, n_slides: int) -> list[str]:
    """The most confident correct test slides, taking classes in turn, then the rest by confidence."""
    prob_columns = [c for c in predictions.columns if c.startswith("prob_")]
    ranked = predictions.assign(
        confidence=predictions[prob_columns].max(axis=1) if prob_columns else 0.0,
        correct=predictions["pred"].astype(str) == predictions["label"].astype(str),
    ).sort_values(["correct", "confidence"], ascending=False, kind="stable")
    by_class = [group.slide_id.tolist() for _, group in ranked.groupby("label", sort=True)]
    chosen: list[str] = []
    while len(chosen) < n_slides and any(by_class):
        for queue in by_class:
            if queue and len(chosen) < n_slides:
                chosen.append(queue.pop(0))
    return chosen


def attention_map(
    coords: np.ndarray, attention: np.ndarray, footprint: float, scale: float, shape: tuple
) -> tuple[np.ndarray, np.ndarray]:
    """Per-pixel attention in [0, 1] and the covered-area mask at thumbnail scale."""
    heat = np.zeros(shape, np.float32)
    covered = np.zeros(shape, bool)
    values = attention.mean(axis=0) if attention.ndim == 2 else attention
    span = values.max() - values.min()
    values = (values - values.min()) / span if span > 0 else np.ones_like(values)
    side = max(1, round(footprint * scale))
    for (x, y), value in zip(coords, values, strict=True):
        col, row = round(x * scale), round(y * scale)
        heat[row : row + side, col : col + side] = value
        covered[row : row + side, col : col + side] = True
    return heat, covered


def _lesion_outline(truth_file: Path, shape: tuple) -> list[np.ndarray]:
    with np.load(truth_file) as truth:
        lesion = truth["lesion"].astype(np.uint8)
    lesion = cv2.resize(lesion, (shape[1], shape[0]), interpolation=cv2.INTER_NEAREST)
    contours, _ = cv2.findContours(lesion, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    return [c[:, 0, :] for c in contours]


def attention_heatmaps(settings: Mapping, out_dir: str | Path) -> Path:
    """Draw ``n_slides`` test slides per dataset: thumbnail and attention overlay side by side."""
    panels = []
    for dataset, run in settings["runs"].items():
        run_dir = Path(run["run_dir"])
        predictions = pd.read_csv(run_dir / "predictions.csv")
        sheet = pd.read_csv(run["slide_sheet"]).set_index("slide_id")
        if "slide_id" not in predictions:  # survival: one row per case, drawn on its slides
            slides = sheet.reset_index()[["slide_id", "case_id"]]
            predictions = slides.merge(predictions, on="case_id")
        sheet_dir = Path(run["slide_sheet"]).parent
        with np.load(run_dir / "attention.npz") as attention_file:
            attention = {key: attention_file[key] for key in attention_file.files}
        for slide_id in choose_slides(predictions, settings["n_slides"]):
            if f"{slide_id}/coords" not in attention:
                continue
            record = json.loads((Path(run["qc_dir"]) / f"{slide_id}.json").read_text())
            slide_file = sheet_dir / sheet.loc[slide_id, "path"]
            truth_file = sheet_dir / "truth" / f"{Path(slide_file).name}.npz"
            panels.append(
                (dataset, slide_id, predictions, slide_file, record, attention, truth_file)
            )
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    rows = max(1, len(panels))
    figure = Figure(figsize=(9, 3.6 * rows))
    axes = figure.subplots(rows, 2, squeeze=False)
    for row, (
        dataset,
        slide_id,
        predictions,
        slide_file,
        record,
        attention,
        truth_file,
    ) in enumerate(panels):
        with openslide.OpenSlide(str(slide_file)) as slide:
            thumbnail = np.asarray(
                slide.get_thumbnail((THUMBNAIL_SIDE, THUMBNAIL_SIDE)).convert("RGB")
            )
            scale = thumbnail.shape[1] / slide.dimensions[0]
        footprint = settings["patch_size"] * settings["main_mpp"] / record["mpp"]
        heat, covered = attention_map(
            attention[f"{slide_id}/coords"],
            attention[f"{slide_id}/attention"],
            footprint,
            scale,
            thumbnail.shape[:2],
        )
        truth = predictions.set_index("slide_id").loc[slide_id]
        label = truth.get("label", "")
        predicted = truth.get("pred", "")
        axes[row, 0].imshow(thumbnail)
        axes[row, 0].set_title(f"{dataset} / {slide_id}: label {label}, predicted {predicted}")
        gray = thumbnail.mean(axis=2, keepdims=True).repeat(3, axis=2) / 255.0
        colour = matplotlib.colormaps["inferno"](heat)[..., :3]
        overlay = np.where(covered[..., None], 0.35 * gray + 0.65 * colour, gray)
        axes[row, 1].imshow(overlay)
        axes[row, 1].set_title("attention (mean over heads, min-max per slide)")
        if truth_file.exists():
            for contour in _lesion_outline(truth_file, thumbnail.shape[:2]):
                for axis in axes[row]:
                    axis.plot(contour[:, 0], contour[:, 1], color="cyan", linewidth=0.8)
        for axis in axes[row]:
            axis.set_axis_off()
    if not panels:
        axes[0, 0].text(0.5, 0.5, "no test slide with attention", ha="center")
        for axis in axes[0]:
            axis.set_axis_off()
    figure.suptitle(f"Attention of {settings['title'] or settings['experiment']} on test slides")
    figure.tight_layout(rect=(0, 0, 1, 1 - 0.4 / figure.get_size_inches()[1]))
    path = out_dir / "attention_heatmaps.png"
    figure.savefig(path, dpi=110)
    figure.savefig(path.with_suffix(".pdf"))
    return path
