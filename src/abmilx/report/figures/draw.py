"""What several figures share: the command line, saving PNG + PDF, thumbnails, attention painted
at patch footprints, and each slide's lesions (the dataset's annotations, else the generator's
truth masks) read at patch or thumbnail scale."""

from __future__ import annotations

import argparse
import json
import textwrap
from collections.abc import Callable, Mapping
from pathlib import Path

import numpy as np

from abmilx.annotations import Annotations, LesionMap, read_truth
from abmilx.integrity import read_json_object

THUMBNAIL_SIDE = 768
# Fixed metadata: without it both formats stamp the time and version, and reruns differ in bytes.
PNG_METADATA = {"Software": None}
PDF_METADATA = {"Creator": None, "Producer": None, "CreationDate": None}
LESION_COLOUR = "cyan"


def main(render: Callable[[Mapping, Path], Path], description: str) -> None:
    """``python -m abmilx.report.figures.<kind> --settings JSON --out <name>.png``."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--settings", required=True, help="JSON: the figure's resolved plan")
    parser.add_argument("--out", required=True, help="PNG path; the PDF is written beside it")
    args = parser.parse_args()
    path = render(json.loads(args.settings), Path(args.out))
    print(f"wrote {path} and {path.with_suffix('.pdf')}")


def save(figure, out: str | Path, dpi: int = 110) -> Path:
    """``out`` (PNG) and the same figure as PDF beside it, byte-identical across reruns."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(out, dpi=dpi, metadata=PNG_METADATA)
    figure.savefig(out.with_suffix(".pdf"), metadata=PDF_METADATA)
    return out


def finish(figure, settings: Mapping, default_title: str, out: str | Path, dpi: int = 110) -> Path:
    """Title the figure (the config's ``title``, else ``default_title``), lay it out, save it.
    Title lines longer than the figure is wide are wrapped (about 11 characters an inch at the
    title's size): a two-panel figure cut its caption off at both sides."""
    width = max(40, int(figure.get_figwidth() * 11))
    title = "\n".join(
        textwrap.fill(line, width) for line in (settings.get("title") or default_title).split("\n")
    )
    figure.suptitle(title, fontsize=10)
    figure.tight_layout()
    return save(figure, out, dpi=dpi)


def left_out_note(settings: Mapping) -> str:
    """The caption's line on experiments or feature sets the figure leaves out, and why."""
    left_out = settings.get("left_out") or {}
    if not left_out:
        return ""
    return "\nleft out: " + "; ".join(f"{name} ({why})" for name, why in left_out.items())


NORMALISATIONS = ("percentile", "minmax", "rank")
# Percentile normalisation clips to this range: one hot patch no longer flattens the rest.
PERCENTILE_RANGE = (1.0, 99.0)
COLOUR_BAR_LABELS = {
    "percentile": "1st-99th percentile of the slide, clipped",
    "minmax": "min-max of the slide",
    "rank": "rank in the slide, 0 lowest to 1 highest",
}


def normalise_attention(values: np.ndarray, normalisation: str) -> np.ndarray:
    """Attention of one slide mapped to [0, 1] for a colour map.

    ``minmax`` spans the lowest to the highest patch, so one extreme patch turns the rest into
    one colour; ``percentile`` (the default, as most heatmap tools do) clips to the 1st-99th
    percentile first; ``rank`` spaces the patches evenly by order, whatever the values.
    """
    values = np.asarray(values, dtype=np.float64)
    if normalisation == "rank":
        order = np.argsort(np.argsort(values, kind="stable"), kind="stable")
        return order / max(len(values) - 1, 1)
    if normalisation == "percentile":
        # the nearest patch values: interpolating towards an outlier would let it stretch the
        # scale again on bags of a hundred patches or so
        low, high = np.percentile(values, PERCENTILE_RANGE, method="nearest")
    elif normalisation == "minmax":
        low, high = values.min(), values.max()
    else:
        raise ValueError(f"normalisation {normalisation!r}: use one of {', '.join(NORMALISATIONS)}")
    if high <= low:
        return np.ones_like(values)
    return np.clip((values - low) / (high - low), 0.0, 1.0)


def attention_map(
    coords: np.ndarray,
    attention: np.ndarray,
    footprint: float,
    scale: float,
    shape: tuple,
    normalisation: str = NORMALISATIONS[0],
) -> tuple[np.ndarray, np.ndarray]:
    """Per-pixel attention in [0, 1] (mean over heads, then ``normalisation``) and the
    covered-area mask at thumbnail scale."""
    heat = np.zeros(shape, np.float32)
    covered = np.zeros(shape, bool)
    values = attention.mean(axis=0) if attention.ndim == 2 else attention
    values = normalise_attention(values, normalisation)
    side = max(1, round(footprint * scale))
    for (x, y), value in zip(coords, values, strict=True):
        col, row = round(x * scale), round(y * scale)
        heat[row : row + side, col : col + side] = value
        covered[row : row + side, col : col + side] = True
    return heat, covered


class Slides:
    """The slides of a figure's dataset: file, tiling QC record (mpp), patch footprint, lesions."""

    def __init__(self, settings: Mapping) -> None:
        import pandas as pd

        sheet = Path(settings["slide_sheet"])
        self.folder = sheet.parent
        self.sheet = pd.read_csv(sheet, dtype={"slide_id": str, "case_id": str}).set_index(
            "slide_id"
        )
        self.qc_dir = Path(settings["qc_dir"])
        self.truth_dir = Path(settings["truth_dir"]) if settings.get("truth_dir") else None
        spec = settings.get("annotations")
        self.annotations = Annotations(spec) if spec else None
        self.patch_side_um = settings["patch_size"] * settings["main_mpp"]

    def file(self, slide_id: str) -> Path:
        return self.folder / self.sheet.loc[slide_id, "path"]

    def record(self, slide_id: str) -> dict:
        return read_json_object(self.qc_dir / f"{slide_id}.json")

    def footprint(self, slide_id: str) -> float:
        """Side of a main-scale patch in level-0 pixels."""
        return self.patch_side_um / self.record(slide_id)["mpp"]

    def lesions(self, slide_id: str) -> LesionMap | None:
        """The slide's lesions: its annotation file when the dataset has annotations, else the
        generator's truth mask; None when neither exists (the figure falls back to the label)."""
        if self.annotations is not None:
            return self.annotations.read(slide_id)
        if self.truth_dir is None:
            return None
        path = self.truth_dir / f"{Path(self.sheet.loc[slide_id, 'path']).name}.npz"
        return read_truth(path) if path.exists() else None

    @property
    def lesion_source(self) -> str:
        """Where the lesions come from, for captions."""
        if self.annotations is not None:
            return f"{self.annotations.format} annotations"
        return "generator masks" if self.truth_dir is not None else "no annotations"

    def thumbnail(self, slide_id: str) -> tuple[np.ndarray, float]:
        """RGB thumbnail (longest side THUMBNAIL_SIDE) and its scale (thumbnail px per level-0 px)."""
        import openslide

        with openslide.OpenSlide(str(self.file(slide_id))) as slide:
            image = np.asarray(slide.get_thumbnail((THUMBNAIL_SIDE, THUMBNAIL_SIDE)).convert("RGB"))
            return image, image.shape[1] / slide.dimensions[0]


COLOUR_MAP = "inferno"


def overlay(thumbnail: np.ndarray, heat: np.ndarray, covered: np.ndarray) -> np.ndarray:
    """Attention in the inferno map over a grey thumbnail, only where patches were scored
    (tissue); glass and unscored tissue stay grey."""
    import matplotlib

    gray = thumbnail.mean(axis=2, keepdims=True).repeat(3, axis=2) / 255.0
    colour = matplotlib.colormaps[COLOUR_MAP](heat)[..., :3]
    return np.where(covered[..., None], 0.35 * gray + 0.65 * colour, gray)


def colour_bar(cax, normalisation: str) -> None:
    """A horizontal colour bar in ``cax`` saying what the heatmap's colours mean."""
    import matplotlib
    from matplotlib.cm import ScalarMappable

    mappable = ScalarMappable(
        norm=matplotlib.colors.Normalize(0.0, 1.0), cmap=matplotlib.colormaps[COLOUR_MAP]
    )
    bar = cax.figure.colorbar(mappable, cax=cax, orientation="horizontal")
    bar.set_label(f"attention: {COLOUR_BAR_LABELS[normalisation]}", fontsize=7)
    bar.ax.tick_params(labelsize=6)
