"""Figure ``attention_heatmaps``: several runs' attention over thumbnails of the same test slides.

One row per slide (the first run's most confident correct test slides, classes in turn), the
thumbnail first, then one column per run: attention (mean over heads, normalised per slide and run
as the figure's ``normalisation`` says, with a colour bar) painted on each patch footprint. The
slide's lesion outline (the dataset's annotations, or the generator's masks) is drawn on every
panel, so a reader sees which aggregator attends to the discriminative regions; a slide without
one says so in its title and shows its label only.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from abmilx.report.figures.draw import (
    COLOUR_BAR_LABELS,
    LESION_COLOUR,
    Slides,
    attention_map,
    colour_bar,
    finish,
    left_out_note,
    main,
    overlay,
)


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


def slide_predictions(run_dir: Path, slides: Slides) -> pd.DataFrame:
    """A run's fold-0 test predictions, one row per slide (survival rows are per case)."""
    predictions = pd.read_csv(run_dir / "fold0" / "predictions.csv", dtype={"case_id": str})
    if "slide_id" not in predictions:
        sheet = slides.sheet.reset_index()[["slide_id", "case_id"]]
        predictions = sheet.merge(predictions, on="case_id")
    return predictions.set_index("slide_id", drop=False)


def load_attention(run_dir: Path) -> dict[str, np.ndarray]:
    with np.load(run_dir / "fold0" / "attention.npz") as stored:
        return {key: stored[key] for key in stored.files}


def render(settings: Mapping, out: Path) -> Path:
    slides = Slides(settings)
    runs = settings["runs"]
    predictions = [slide_predictions(Path(run["dir"]), slides) for run in runs]
    attention = [load_attention(Path(run["dir"])) for run in runs]
    chosen = [
        slide_id
        for slide_id in choose_slides(predictions[0], len(predictions[0]))
        if all(f"{slide_id}/coords" in maps for maps in attention)
    ][: settings["n_slides"]]
    columns = 1 + len(runs)
    rows = max(1, len(chosen))
    figure = Figure(figsize=(3.3 * columns, 2.9 * rows + 1.0))
    grid = figure.add_gridspec(rows + 1, columns, height_ratios=[1.0] * rows + [0.05])
    axes = grid[:rows, :].subgridspec(rows, columns).subplots(squeeze=False)
    missing = 0
    for row, slide_id in enumerate(chosen):
        thumbnail, scale = slides.thumbnail(slide_id)
        footprint = slides.footprint(slide_id)
        label = predictions[0].loc[slide_id, "label"]
        axes[row, 0].imshow(thumbnail)
        axes[row, 0].set_title(f"{slide_id} (label {label})", fontsize=9)
        for column, (run, maps, predicted) in enumerate(
            zip(runs, attention, predictions, strict=True), start=1
        ):
            heat, covered = attention_map(
                maps[f"{slide_id}/coords"],
                maps[f"{slide_id}/attention"],
                footprint,
                scale,
                thumbnail.shape[:2],
                settings["normalisation"],
            )
            axes[row, column].imshow(overlay(thumbnail, heat, covered))
            axes[row, column].set_title(
                f"{run['title']}\npredicted {predicted.loc[slide_id, 'pred']}", fontsize=8
            )
        lesions = slides.lesions(slide_id)
        if lesions is None:
            axes[row, 0].set_title(f"{slide_id} (label {label}; no annotation)", fontsize=9)
            missing += 1
        else:
            for contour in lesions.outline(scale):
                for axis in axes[row]:
                    axis.plot(contour[:, 0], contour[:, 1], color=LESION_COLOUR, linewidth=0.8)
    for axis in axes.flat:
        axis.set_axis_off()
    colour_bar(figure.add_subplot(grid[rows, 1:]), settings["normalisation"])
    if not chosen:
        axes[0, 0].text(0.5, 0.5, "no test slide with attention in every run", ha="center")
    names = " vs ".join(run["title"] for run in runs)
    outlines = f"lesion outlines in {LESION_COLOUR} from {slides.lesion_source}"
    if missing:
        outlines += f"; {missing} of {len(chosen)} slides without annotation: label only"
    title = (
        f"Attention on {settings['dataset']} test slides: {names}\n"
        f"(mean over heads, {COLOUR_BAR_LABELS[settings['normalisation']]}; {outlines})"
        f"{left_out_note(settings)}"
    )
    return finish(figure, settings, title, out, dpi=100)


if __name__ == "__main__":
    main(render, __doc__)
