"""``abmilx heatmap``: one test slide's attention at a chosen resolution, up to the patch grid.

The figure kind draws small thumbnails of several runs side by side; this command draws one
slide of one run as large as asked, down to one output pixel per main-scale patch pixel, with a
colour bar under it. Memory stays bounded: the slide is read in strips at the output resolution
and the overlay is computed in 8-bit, so the output's size is what costs (capped at
:data:`MAX_PIXELS`).
"""

from __future__ import annotations

import math
from pathlib import Path

import cv2
import numpy as np
import pandas as pd

from abmilx.cli.qupath import fold_directories
from abmilx.cli.trained import workflow_layout
from abmilx.integrity import read_json_object
from abmilx.report.figures.draw import (
    COLOUR_BAR_LABELS,
    COLOUR_MAP,
    NORMALISATIONS,
    normalise_attention,
)

DEFAULT_SIDE = 2048
MAX_PIXELS = 200_000_000  # 200 MP: about 1 GB of working memory in all
BAR_HEIGHT = 48


def colour_table() -> np.ndarray:
    """The colour map as a (256, 3) uint8 RGB lookup table."""
    import matplotlib

    return np.round(matplotlib.colormaps[COLOUR_MAP](np.arange(256) / 255.0)[:, :3] * 255).astype(
        np.uint8
    )


def paint(
    thumbnail: np.ndarray,
    coords: np.ndarray,
    values: np.ndarray,
    footprint: float,
    scale: float,
) -> np.ndarray:
    """RGB overlay: the colour of each patch's value in [0, 1] blended over a grey slide where
    patches were scored; elsewhere the grey slide."""
    height, width = thumbnail.shape[:2]
    grey = cv2.cvtColor(cv2.cvtColor(thumbnail, cv2.COLOR_RGB2GRAY), cv2.COLOR_GRAY2RGB)
    index = np.zeros((height, width), np.uint8)
    covered = np.zeros((height, width), bool)
    side = max(1, round(footprint * scale))
    levels = np.round(np.asarray(values) * 255).astype(np.uint8)
    for (x, y), level in zip(np.asarray(coords), levels, strict=True):
        column, row = round(x * scale), round(y * scale)
        index[row : row + side, column : column + side] = level
        covered[row : row + side, column : column + side] = True
    blended = cv2.addWeighted(grey, 0.35, colour_table()[index], 0.65, 0.0)
    return np.where(covered[..., None], blended, grey)


def with_colour_bar(image: np.ndarray, normalisation: str) -> np.ndarray:
    """``image`` with a labelled colour bar strip under it."""
    width = image.shape[1]
    strip = np.full((BAR_HEIGHT, width, 3), 255, np.uint8)
    ramp = colour_table()[np.round(np.linspace(0, 255, max(width - 20, 1))).astype(int)]
    strip[4:20, 10 : 10 + len(ramp)] = ramp[None, :, :]
    label = f"0 ... 1: attention, {COLOUR_BAR_LABELS[normalisation]}"
    cv2.putText(strip, label, (10, 40), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (0, 0, 0), 1, cv2.LINE_AA)
    return np.concatenate([image, strip])


def _has_attention(fold_dir: Path, slide_id: str) -> bool:
    with np.load(fold_dir / "attention.npz") as stored:
        return f"{slide_id}/attention" in stored.files


def slide_file(root: Path, dataset: str, slide_id: str) -> Path:
    """The slide's file from the dataset's slide sheet in the workflow's layout."""
    sheet = root / "cohort" / dataset / "slides.csv"
    if not sheet.is_file():
        raise FileNotFoundError(f"{sheet}: no slide sheet here; give --slide-file, the slide")
    rows = pd.read_csv(sheet, dtype=str).set_index("slide_id")
    if slide_id not in rows.index:
        raise ValueError(f"{sheet}: no slide {slide_id!r}; give --slide-file, the slide")
    return sheet.parent / rows.loc[slide_id, "path"]


def draw_slide_heatmap(
    run: str | Path,
    slide_id: str,
    out: str | Path,
    *,
    fold: int | None = None,
    mpp: float | None = None,
    normalisation: str = NORMALISATIONS[0],
    slide: str | Path | None = None,
) -> Path:
    """Write ``out`` (PNG): ``slide_id``'s attention in ``run`` at ``mpp`` µm per output pixel
    (default: the longest side :data:`DEFAULT_SIDE` px; never finer than the main scale)."""
    from abmilx.slides import Slide

    if normalisation not in NORMALISATIONS:
        raise ValueError(f"normalisation {normalisation!r}: use one of {', '.join(NORMALISATIONS)}")
    folds = [d for d in fold_directories(run, fold) if _has_attention(d, slide_id)]
    if not folds:
        raise ValueError(f"{run}: {slide_id} is not an evaluated test slide of this run")
    fold_dir = folds[0]
    layout = workflow_layout(fold_dir)
    if layout is None:
        raise ValueError(f"{fold_dir} is not in the workflow's layout (results/runs/...)")
    root, dataset = layout["results"], layout["dataset"]
    record = read_json_object(root / "tiles" / dataset / "slides" / f"{slide_id}.json")
    main = record["tiling"]["scales"]["main"]
    with np.load(fold_dir / "attention.npz") as stored:
        coords = stored[f"{slide_id}/coords"]
        attention = stored[f"{slide_id}/attention"].astype(np.float64)
    values = normalise_attention(attention.reshape(-1, len(coords)).mean(axis=0), normalisation)
    finest = float(main["mpp"])
    if mpp is None:
        mpp = max(finest, max(record["width"], record["height"]) * record["mpp"] / DEFAULT_SIDE)
    if mpp < finest * (1 - 1e-6):
        raise ValueError(
            f"--mpp {mpp:g} is finer than the patches' own scale ({finest:g} µm/px): nothing "
            "would be gained; use at least that"
        )
    pixels = math.ceil(record["width"] * record["mpp"] / mpp) * math.ceil(
        record["height"] * record["mpp"] / mpp
    )
    if pixels > MAX_PIXELS:
        raise ValueError(
            f"--mpp {mpp:g} gives a {pixels / 1e6:.0f} MP image (limit {MAX_PIXELS / 1e6:.0f} "
            "MP); choose a coarser --mpp"
        )
    path = Path(slide) if slide is not None else slide_file(root, dataset, slide_id)
    override = record["mpp"] if record.get("mpp_source") == "override" else None
    with Slide(path, mpp_override=override) as opened:
        thumbnail = opened.thumbnail(mpp)
    scale = thumbnail.shape[1] / record["width"]
    image = with_colour_bar(
        paint(thumbnail, coords, values, float(main["extent_level0"]), scale),
        normalisation,
    )
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    if not cv2.imwrite(str(out), cv2.cvtColor(image, cv2.COLOR_RGB2BGR)):
        raise ValueError(f"{out}: could not write the PNG (is the suffix .png?)")
    return out
