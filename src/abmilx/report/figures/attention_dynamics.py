"""Figure ``attention_dynamics``: how a run's attention changes over the training epochs.

Reads the engine's attention snapshots (``<run>/fold0/snapshots/attention_epoch{e}.npz``, written
by :class:`abmilx.training.callbacks.AttentionSnapshot` for the same bags every few epochs) and
draws, per snapshot slide: the attention mass on lesion patches (the dataset's annotations, or
the generator's truth masks; the dashed line is the lesion share of the patches, what uniform attention would give),
the normalised entropy of the attention (1 = uniform, 0 = one patch), and, for the first slide,
the sorted attention profile at each snapshot epoch; several runs (ABMIL, TransMIL, ABMILX) give
one such row each. ``view: heatmaps`` instead paints the snapshot attention of chosen epochs (by
default the first and the last: during training and converged) over the slides' thumbnails, one
column per run, with the lesion outlines, as the paper's appendix compares MILs on CAMELYON.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path

import matplotlib
import numpy as np
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

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

SNAPSHOT = re.compile(r"attention_epoch(\d+)\.npz")


def load_snapshots(run_dir: Path) -> dict[int, dict[str, np.ndarray]]:
    """{epoch (0-based): the snapshot's arrays (``<slide_id>/coords``, ``<slide_id>/attention``)}."""
    folder = run_dir / "fold0" / "snapshots"
    files = sorted(
        (int(match[1]), path)
        for path in folder.glob("attention_epoch*.npz")
        if (match := SNAPSHOT.fullmatch(path.name))
    )
    if not files:
        raise FileNotFoundError(
            f"{folder}: no attention snapshots; the experiment needs "
            "settings.callbacks.attention_every > 0 (and a rerun of its training)"
        )
    snapshots = {}
    for epoch, path in files:
        with np.load(path) as stored:
            snapshots[epoch] = {key: stored[key] for key in stored.files}
    return snapshots


def slide_attention(arrays: Mapping[str, np.ndarray], slide_id: str) -> np.ndarray:
    """Mean over heads, renormalised over the slide's patches (a case bag spans several slides)."""
    values = arrays[f"{slide_id}/attention"].astype(np.float64).mean(axis=0)
    total = values.sum()
    return values / total if total > 0 else np.full_like(values, 1 / len(values))


def normalised_entropy(attention: np.ndarray) -> float:
    """Entropy of the attention divided by log(n): 1 for uniform, 0 for a single patch."""
    if len(attention) < 2:
        return 0.0
    positive = attention[attention > 0]
    return float(-(positive * np.log(positive)).sum() / np.log(len(attention)))


def dynamics(snapshots: Mapping[int, Mapping[str, np.ndarray]], slides: Slides | None) -> dict:
    """Per slide: epochs, entropy, lesion mass and lesion share (NaN without truth masks)."""
    epochs = sorted(snapshots)
    last = snapshots[epochs[-1]]
    slide_ids = sorted(key.removesuffix("/attention") for key in last if key.endswith("/attention"))
    curves = {}
    for slide_id in slide_ids:
        coords = last[f"{slide_id}/coords"]
        lesion = None
        lesions = slides.lesions(slide_id) if slides is not None else None
        if lesions is not None:
            lesion = lesions.fraction(coords, slides.footprint(slide_id)) >= 0.5
        entropy, mass = [], []
        for epoch in epochs:
            attention = slide_attention(snapshots[epoch], slide_id)
            entropy.append(normalised_entropy(attention))
            mass.append(float(attention[lesion].sum()) if lesion is not None else np.nan)
        curves[slide_id] = {
            "entropy": np.array(entropy),
            "lesion_mass": np.array(mass),
            "lesion_share": float(lesion.mean()) if lesion is not None else np.nan,
        }
    return {"epochs": epochs, "slides": curves}


def draw_curves(row, run: Mapping, slides: Slides) -> None:
    """One run's row: lesion mass, entropy and the first slide's sorted attention per epoch."""
    snapshots = load_snapshots(Path(run["dir"]))
    result = dynamics(snapshots, slides)
    epochs = np.array(result["epochs"]) + 1  # 1-based in the figure
    mass_axis, entropy_axis, profile_axis = row
    for index, (slide_id, curve) in enumerate(result["slides"].items()):
        colour = f"C{index % 10}"
        if not np.isnan(curve["lesion_share"]):
            mass_axis.plot(epochs, curve["lesion_mass"], "o-", color=colour, label=slide_id)
            mass_axis.axhline(curve["lesion_share"], color=colour, linestyle="--", linewidth=0.8)
        entropy_axis.plot(epochs, curve["entropy"], "o-", color=colour, label=slide_id)
    mass_axis.set_title(
        f"{run['title']}: attention mass on lesion patches\n(dashed: lesion share of patches)"
    )
    mass_axis.set_ylim(-0.02, 1.02)
    if not any(mass_axis.get_lines()):
        mass_axis.text(0.5, 0.5, "no lesion annotation for these slides", ha="center")
    entropy_axis.set_title(f"{run['title']}: normalised attention entropy (1 = uniform)")
    first = next(iter(result["slides"]), None)
    colours = matplotlib.colormaps["viridis"](np.linspace(0, 1, len(epochs)))
    for colour, epoch in zip(colours, result["epochs"], strict=True):
        if first is None:
            break
        attention = np.sort(slide_attention(snapshots[epoch], first))[::-1]
        rank = np.arange(1, len(attention) + 1) / len(attention)
        profile_axis.plot(rank, attention, color=colour, label=f"epoch {epoch + 1}")
    profile_axis.set_yscale("log")
    profile_axis.set_title(f"sorted attention of {first} per epoch")
    profile_axis.set_xlabel("patch rank (fraction of the slide's patches)")
    profile_axis.legend(fontsize=7)
    for axis in (mass_axis, entropy_axis):
        axis.set_xlabel("epoch")
        axis.xaxis.set_major_locator(MaxNLocator(integer=True))
        axis.grid(alpha=0.3)
        axis.legend(fontsize=7)


def render(settings: Mapping, out: Path) -> Path:
    slides = Slides(settings)
    if settings.get("view") == "heatmaps":
        return render_heatmaps(settings, slides, out)
    runs = settings["runs"]
    figure = Figure(figsize=(14, 4.2 * len(runs)))
    rows = figure.subplots(len(runs), 3, squeeze=False)
    for row, run in zip(rows, runs, strict=True):
        draw_curves(row, run, slides)
    names = ", ".join(run["title"] for run in runs)
    return finish(
        figure,
        settings,
        f"Attention over training: {names} on {settings['dataset']} "
        f"(snapshot slides, mean over heads; lesions from {slides.lesion_source})"
        f"{left_out_note(settings)}",
        out,
    )


def chosen_epochs(settings: Mapping, snapshots: list[Mapping[int, Mapping]]) -> list[int]:
    """The config's 1-based ``epochs`` as 0-based snapshot epochs, checked against every run's
    snapshots; empty when not given (each run's first and last snapshot are drawn)."""
    if settings.get("epochs") is None:
        return []
    wanted = [epoch - 1 for epoch in settings["epochs"]]
    for run, found in zip(settings["runs"], snapshots, strict=True):
        missing = [e + 1 for e in wanted if e not in found]
        if missing:
            raise ValueError(
                f"{run['dir']}: no attention snapshot of epoch(s) {missing}; it has "
                f"{', '.join(str(e + 1) for e in sorted(found))} (settings.callbacks.attention_every)"
            )
    return wanted


def render_heatmaps(settings: Mapping, slides: Slides, out: Path) -> Path:
    """Rows: each slide at each chosen epoch; columns: the thumbnail, then one per run."""
    runs = settings["runs"]
    snapshots = [load_snapshots(Path(run["dir"])) for run in runs]
    wanted = chosen_epochs(settings, snapshots)
    # (label of the row, each run's epoch): the given epochs, or first and last snapshot
    stages = (
        [(f"epoch {e + 1}", [e] * len(runs)) for e in wanted]
        if wanted
        else [
            ("during training", [min(found) for found in snapshots]),
            ("converged", [max(found) for found in snapshots]),
        ]
    )
    shared = set.intersection(
        *(
            {k.removesuffix("/attention") for k in found[max(found)] if k.endswith("/attention")}
            for found in snapshots
        )
    )
    chosen = sorted(shared)[: settings["n_slides"]]
    rows = max(1, len(chosen) * len(stages))
    columns = 1 + len(runs)
    normalisation = settings["normalisation"]
    figure = Figure(figsize=(3.3 * columns, 2.9 * rows + 1.0))
    grid = figure.add_gridspec(rows + 1, columns, height_ratios=[1.0] * rows + [0.05])
    axes = grid[:rows, :].subgridspec(rows, columns).subplots(squeeze=False)
    row = 0
    for slide_id in chosen:
        thumbnail, scale = slides.thumbnail(slide_id)
        footprint = slides.footprint(slide_id)
        lesions = slides.lesions(slide_id)
        outline = lesions.outline(scale) if lesions is not None else []
        for stage, epochs in stages:
            axes[row, 0].imshow(thumbnail)
            note = "" if lesions is not None else "; no annotation"
            axes[row, 0].set_title(f"{slide_id} ({stage}{note})", fontsize=9)
            for column, (run, found, epoch) in enumerate(
                zip(runs, snapshots, epochs, strict=True), start=1
            ):
                arrays = found[epoch]
                heat, covered = attention_map(
                    arrays[f"{slide_id}/coords"],
                    arrays[f"{slide_id}/attention"],
                    footprint,
                    scale,
                    thumbnail.shape[:2],
                    normalisation,
                )
                axes[row, column].imshow(overlay(thumbnail, heat, covered))
                axes[row, column].set_title(f"{run['title']}\nepoch {epoch + 1}", fontsize=8)
            for contour in outline:
                for axis in axes[row]:
                    axis.plot(contour[:, 0], contour[:, 1], color=LESION_COLOUR, linewidth=0.8)
            row += 1
    for axis in axes.flat:
        axis.set_axis_off()
    colour_bar(figure.add_subplot(grid[rows, 1:]), normalisation)
    if not chosen:
        axes[0, 0].text(0.5, 0.5, "no snapshot slide shared by every run", ha="center")
    names = " vs ".join(run["title"] for run in runs)
    return finish(
        figure,
        settings,
        f"Attention during training and converged on {settings['dataset']}: {names}\n"
        f"(snapshot bags, mean over heads, {COLOUR_BAR_LABELS[normalisation]}; lesion outlines "
        f"in {LESION_COLOUR} from {slides.lesion_source}){left_out_note(settings)}",
        out,
        dpi=100,
    )


if __name__ == "__main__":
    main(render, __doc__)
