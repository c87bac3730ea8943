"""Figure ``attention_dynamics``: how a run's attention changes over the training epochs.

Reads the engine's attention snapshots (``<run>/fold0/snapshots/attention_epoch{e}.npz``, written
by :class:`abmilx.training.callbacks.AttentionSnapshot` for the same bags every few epochs) and
draws, per snapshot slide: the attention mass on lesion patches (the dataset's annotations, or
the generator's truth masks; the dashed line is the lesion share of the patches, what uniform attention would give),
the normalised entropy of the attention (1 = uniform, 0 = one patch), and, for the first slide,
the sorted attention profile at each snapshot epoch.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path

import matplotlib
import numpy as np
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from abmilx.report.figures.draw import Slides, finish, main

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


def render(settings: Mapping, out: Path) -> Path:
    run = settings["runs"][0]
    snapshots = load_snapshots(Path(run["dir"]))
    slides = Slides(settings)
    result = dynamics(snapshots, slides)
    epochs = np.array(result["epochs"]) + 1  # 1-based in the figure
    figure = Figure(figsize=(14, 4.2))
    mass_axis, entropy_axis, profile_axis = figure.subplots(1, 3)
    for index, (slide_id, curve) in enumerate(result["slides"].items()):
        colour = f"C{index % 10}"
        if not np.isnan(curve["lesion_share"]):
            mass_axis.plot(epochs, curve["lesion_mass"], "o-", color=colour, label=slide_id)
            mass_axis.axhline(curve["lesion_share"], color=colour, linestyle="--", linewidth=0.8)
        entropy_axis.plot(epochs, curve["entropy"], "o-", color=colour, label=slide_id)
    mass_axis.set_title("attention mass on lesion patches\n(dashed: lesion share of patches)")
    mass_axis.set_ylim(-0.02, 1.02)
    if not any(mass_axis.get_lines()):
        mass_axis.text(0.5, 0.5, "no lesion annotation for these slides", ha="center")
    entropy_axis.set_title("normalised attention entropy (1 = uniform)")
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
    return finish(
        figure,
        settings,
        f"Attention over training: {run['title']} on {settings['dataset']} "
        "(snapshot slides, mean over heads)",
        out,
    )


if __name__ == "__main__":
    main(render, __doc__)
