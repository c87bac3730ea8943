"""Render one synthetic slide from its plan row: slide file plus ground-truth masks.

Deterministic: every random draw comes from one generator seeded with the row's ``seed``, and
both output files are written without timestamps, so reruns give identical bytes.
"""

from __future__ import annotations

import inspect
import io
import zipfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import cv2
import numpy as np

from abmilx.cohort import artefacts, lesions, texture
from abmilx.cohort.slidefile import write_slide
from abmilx.cohort.stain import compose, od_code, sample_stain
from abmilx.cohort.tissue import tissue_mask
from abmilx.integrity import written_whole

if TYPE_CHECKING:
    import pandas as pd


@dataclass(frozen=True)
class TissueProfile:
    """Background tissue of a task: stroma eosin, cell density and benign ducts."""

    stroma_od: float
    nuclei_per_mm2: float
    lymphocyte_share: float
    ducts_per_mm2: float


# Breast/prostate-like fibrous stroma for most tasks; lymph-node-like tissue for diagnosis.
PROFILES = {
    "subtyping": TissueProfile(0.60, 2500, 0.3, 5),
    "grading": TissueProfile(0.60, 2500, 0.3, 5),
    "survival": TissueProfile(0.60, 2500, 0.3, 5),
    "diagnosis": TissueProfile(0.35, 14000, 0.97, 0),
}

TRUTH_KEYS = ("tissue", "lesion", "artefact", "downsample", "mpp", "level0_shape")


def _row_value(row: Mapping | pd.Series, key: str):
    if key not in row:
        raise KeyError(f"plan row of slide {row.get('slide_id', '?')!r} has no column {key!r}")
    return row[key]


def _block_fraction(mask: np.ndarray, downsample: int) -> np.ndarray:
    """Share of each ``downsample`` x ``downsample`` block (level-0 aligned) covered by mask."""
    height, width = mask.shape
    padded_h, padded_w = -(-height // downsample) * downsample, -(-width // downsample) * downsample
    padded = np.zeros((padded_h, padded_w), dtype=np.float32)
    padded[:height, :width] = mask
    size = (padded_w // downsample, padded_h // downsample)
    return cv2.resize(padded, size, interpolation=cv2.INTER_AREA)


def save_truth(path: str | Path, arrays: Mapping[str, np.ndarray]) -> Path:
    """Write a compressed ``.npz`` with fixed member timestamps (``np.savez`` stamps the clock,
    which would make reruns differ)."""
    path = Path(path)
    # whole or not at all: the truth is a synthesis job's last file
    with (
        written_whole(path) as partial,
        zipfile.ZipFile(partial, "w", compression=zipfile.ZIP_DEFLATED) as archive,
    ):
        for name, value in arrays.items():
            buffer = io.BytesIO()
            np.save(buffer, np.asarray(value), allow_pickle=False)
            info = zipfile.ZipInfo(f"{name}.npy", date_time=(1980, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED
            archive.writestr(info, buffer.getvalue())
    return path


def load_truth(path: str | Path) -> dict[str, np.ndarray | int | float]:
    """Ground truth written by :func:`synthesize_slide`: bool masks ``tissue``, ``lesion``,
    ``artefact`` at ``downsample`` (int) of level 0, their ``mpp`` (float), ``level0_shape``."""
    with np.load(path, allow_pickle=False) as data:
        missing = set(TRUTH_KEYS) - set(data.files)
        if missing:
            raise ValueError(f"{path}: not a cohort truth file, missing {sorted(missing)}")
        truth = {key: data[key] for key in TRUTH_KEYS}
    truth["downsample"] = int(truth["downsample"])
    truth["mpp"] = float(truth["mpp"])
    return truth


def render_slide(
    row: Mapping | pd.Series,
    *,
    width_um: float = 2000.0,
    height_um: float = 1500.0,
    tissue_coverage: Sequence[float] = (0.3, 0.5),
    max_pieces: int = 3,
    pen_probability: float = 0.4,
    max_debris: int = 12,
    stain_variation: float = 1.0,
) -> dict[str, np.ndarray]:
    """Level-0 RGB image and level-0 masks (``tissue``, ``lesion``, ``artefact``) of one slide."""
    task = str(_row_value(row, "task"))
    mpp = float(_row_value(row, "mpp"))
    fraction = float(_row_value(row, "lesion_fraction"))
    label_index = int(_row_value(row, "class_index"))
    rng = np.random.default_rng(int(_row_value(row, "seed")))
    shape = (round(height_um / mpp), round(width_um / mpp))
    if min(shape) < 64:
        raise ValueError(f"slide {row['slide_id']}: {width_um} x {height_um} µm is too small")
    profile = PROFILES[task]

    stain = sample_stain(rng, stain_variation)
    low, high = tissue_coverage
    tissue = tissue_mask(
        shape,
        mpp,
        rng,
        coverage=rng.uniform(low, high),
        n_pieces=int(rng.integers(1, max_pieces + 1)),
    )
    e_map = texture.stroma(tissue, mpp, rng, profile.stroma_od * rng.uniform(0.9, 1.1))
    h_map = tissue.astype(np.uint8) * np.uint8(od_code(0.06))
    texture.normal_ducts(h_map, e_map, tissue, mpp, rng, profile.ducts_per_mm2)
    texture.stromal_nuclei(
        h_map, tissue, mpp, rng, profile.nuclei_per_mm2, profile.lymphocyte_share
    )
    lesion = lesions.draw_lesions(h_map, e_map, tissue, mpp, task, label_index, fraction, rng)
    h_map[~tissue] = 0  # glands drawn across the border stop at the tissue edge
    e_map[~tissue] = 0
    sigma = 0.4 / mpp  # optical blur of ~0.4 µm
    h_map = cv2.GaussianBlur(h_map, (0, 0), sigma)
    e_map = cv2.GaussianBlur(e_map, (0, 0), sigma)
    noise = rng.integers(0, 7, size=shape, dtype=np.uint8)
    rgb = compose(h_map, e_map, stain, noise)

    artefact = artefacts.debris(shape, mpp, rng, int(rng.integers(2, max_debris + 1)))
    artefacts.paint(rgb, artefact, artefacts.DEBRIS_COLOUR, 0.9)
    if rng.uniform() < pen_probability:
        pen, colour = artefacts.pen_mark(shape, mpp, rng)
        artefacts.paint(rgb, pen, colour, rng.uniform(0.7, 0.9))
        artefact |= pen
    return {
        "rgb": rgb,
        "tissue": tissue & ~artefact,
        "lesion": lesion & ~artefact,
        "artefact": artefact,
    }


def synthesize_slide(
    row: Mapping | pd.Series,
    out_path: str | Path,
    truth_path: str | Path,
    *,
    width_um: float = 2000.0,
    height_um: float = 1500.0,
    tissue_coverage: Sequence[float] = (0.3, 0.5),
    max_pieces: int = 3,
    pen_probability: float = 0.4,
    max_debris: int = 12,
    stain_variation: float = 1.0,
    truth_downsample: int = 8,
    jpeg_quality: int = 90,
    tile: int = 256,
    downsamples: Sequence[int] = (1, 4, 16),
) -> dict[str, float]:
    """Render the slide of plan ``row``; write the slide file and the ground-truth ``.npz``.

    The truth holds level-0-aligned masks at ``truth_downsample``: a mask pixel is tissue or
    lesion when more than half of its block is, artefact when at least half is (so artefact
    and tissue never overlap). Returns summary numbers (tissue and lesion fractions).
    """
    images = render_slide(
        row,
        width_um=width_um,
        height_um=height_um,
        tissue_coverage=tissue_coverage,
        max_pieces=max_pieces,
        pen_probability=pen_probability,
        max_debris=max_debris,
        stain_variation=stain_variation,
    )
    mpp = float(row["mpp"])
    write_slide(
        out_path,
        images["rgb"],
        mpp=mpp,
        slide_format=str(_row_value(row, "slide_format")),
        downsamples=tuple(downsamples),
        tile=tile,
        jpeg_quality=jpeg_quality,
    )
    tissue = _block_fraction(images["tissue"], truth_downsample) > 0.5
    lesion = _block_fraction(images["lesion"], truth_downsample) > 0.5
    artefact = _block_fraction(images["artefact"], truth_downsample) >= 0.5
    save_truth(
        truth_path,
        {
            "tissue": tissue,
            "lesion": lesion,
            "artefact": artefact,
            "downsample": np.int64(truth_downsample),
            "mpp": np.float64(mpp * truth_downsample),
            "level0_shape": np.array(images["rgb"].shape[:2], dtype=np.int64),
        },
    )
    tissue_px = max(int(images["tissue"].sum()), 1)
    return {
        "tissue_fraction": float(images["tissue"].mean()),
        "lesion_fraction": float(images["lesion"].sum() / tissue_px),
    }


RENDER_KEYS = {
    name
    for name, parameter in inspect.signature(synthesize_slide).parameters.items()
    if parameter.kind is inspect.Parameter.KEYWORD_ONLY
}
