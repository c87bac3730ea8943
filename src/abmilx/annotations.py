"""Lesion annotations of slides, read per patch: PANDA's label-mask TIFFs, CAMELYON16's ASAP XML,
QuPath's GeoJSON export, and the slide generator's truth masks.

Every source becomes a :class:`LesionMap`, a label raster over level 0 at a coarse downsample
(its longest side at most ``MAX_SIDE``, so a 100,000-px slide's mask costs a few MB), from which
figures read the share of each patch that is lesion, the patch's lesion class and the outlines.
Which sources a dataset has is the dataset's ``annotations`` config key (docs/annotations.md).
"""

from __future__ import annotations

import csv
import json
import math
import xml.etree.ElementTree as ElementTree
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from abmilx.geometry import geojson_to_polygons, rasterize_polygons

FORMATS = ("panda_mask", "camelyon_xml", "geojson")
PATTERNS = {
    "panda_mask": "{slide_id}_mask.tiff",
    "camelyon_xml": "{slide_id}.xml",
    "geojson": "{slide_id}.geojson",
}
# Longest side of the raster an annotation is read into: bounds memory whatever the slide size.
MAX_SIDE = 4096
# PANDA's mask values (first channel) that are cancer, by data provider, and their class names.
PANDA_LESIONS = {
    "radboud": {3: "Gleason 3", 4: "Gleason 4", 5: "Gleason 5"},
    "karolinska": {2: "cancer"},
}
# CAMELYON16's annotation groups: tumour regions, and regions cut out of them.
CAMELYON_TUMOUR = ("_0", "_1", "Tumor")
CAMELYON_HOLES = ("_2", "Exclusion")
UNCLASSIFIED = "lesion"


@dataclass(frozen=True)
class LesionMap:
    """One slide's lesions: ``labels[i, j]`` (0 none) covers level-0 pixels
    ``[j * downsample, (j + 1) * downsample)`` across and likewise down; ``classes`` names each
    nonzero label."""

    labels: np.ndarray
    downsample: float
    classes: Mapping[int, str]

    def _blocks(self, coords: np.ndarray, footprint: float):
        """Raster blocks under each patch (level-0 top-left ``coords``, side ``footprint``)."""
        coords = np.asarray(coords, dtype=np.float64).reshape(-1, 2)
        height, width = self.labels.shape
        scale = self.downsample
        x0 = np.clip(np.floor(coords[:, 0] / scale).astype(int), 0, width)
        y0 = np.clip(np.floor(coords[:, 1] / scale).astype(int), 0, height)
        x1 = np.clip(np.ceil((coords[:, 0] + footprint) / scale).astype(int), 0, width)
        y1 = np.clip(np.ceil((coords[:, 1] + footprint) / scale).astype(int), 0, height)
        # a patch past the raster's edge lies outside every annotation: its area stays whole
        full = np.maximum(
            np.ceil((coords[:, 0] + footprint) / scale) - np.floor(coords[:, 0] / scale), 1
        ) * np.maximum(
            np.ceil((coords[:, 1] + footprint) / scale) - np.floor(coords[:, 1] / scale), 1
        )
        return x0, y0, x1, y1, full

    def _share(self, mask: np.ndarray, blocks) -> np.ndarray:
        x0, y0, x1, y1, area = blocks
        # integral image: the sum over any block in O(1)
        integral = np.pad(mask.astype(np.float64).cumsum(0).cumsum(1), ((1, 0), (1, 0)))
        inside = integral[y1, x1] - integral[y0, x1] - integral[y1, x0] + integral[y0, x0]
        return inside / area

    def fraction(self, coords: np.ndarray, footprint: float) -> np.ndarray:
        """Share of each patch that is lesion (any class)."""
        return self._share(self.labels > 0, self._blocks(coords, footprint))

    def patch_classes(self, coords: np.ndarray, footprint: float) -> tuple[np.ndarray, np.ndarray]:
        """(each patch's lesion class covering most of it, "" where none; its lesion share)."""
        blocks = self._blocks(coords, footprint)
        names = np.full(len(blocks[0]), "", dtype=object)
        best = np.zeros(len(blocks[0]))
        for label in sorted(self.classes):
            share = self._share(self.labels == label, blocks)
            names[share > best] = self.classes[label]
            best = np.maximum(best, share)
        return names, self.fraction(coords, footprint)

    def outline(self, scale: float) -> list[np.ndarray]:
        """Lesion contours in pixels of a thumbnail ``scale`` px per level-0 px, as (x, y)."""
        import cv2

        lesion = (self.labels > 0).astype(np.uint8)
        contours, _ = cv2.findContours(lesion, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
        # raster pixel edges: a contour point (j, i) is the pixel's centre, half a pixel in
        return [(c[:, 0, :] + 0.5) * self.downsample * scale for c in contours]


def read_truth(path: str | Path) -> LesionMap:
    """The slide generator's truth mask (``lesion`` at ``downsample`` of level 0)."""
    with np.load(path) as truth:
        lesion = truth["lesion"].astype(np.uint8)
        downsample = float(truth["downsample"])
    return LesionMap((lesion > 0).astype(np.uint8), downsample, {1: UNCLASSIFIED})


def _tiff_level(path: Path):
    """The finest pyramid level of the mask whose longest side is at most MAX_SIDE (else the
    coarsest), its first page, and the decimation step that brings it under MAX_SIDE."""
    import tifffile

    tiff = tifffile.TiffFile(path)
    levels = list(tiff.series[0].levels)
    height0, width0 = levels[0].shape[:2]
    if len(levels) == 1:  # levels stored as plain pages: each reduced copy is its own series
        levels += [
            series
            for series in tiff.series[1:]
            if series.shape[0] < height0
            and abs(series.shape[1] / series.shape[0] - width0 / height0) < 0.02
        ]
        levels.sort(key=lambda level: -level.shape[0])
    fitting = [level for level in levels if max(level.shape[:2]) <= MAX_SIDE]
    level = fitting[0] if fitting else levels[-1]
    step = max(1, math.ceil(max(level.shape[:2]) / MAX_SIDE))
    return tiff, level.pages[0], width0 / level.shape[1] * step, step


def _first_channel(page, step: int) -> np.ndarray:
    """Channel 0 of a TIFF page, every ``step``-th pixel, one tile (or strip) at a time."""
    height, width = page.shape[:2]
    out = np.zeros((math.ceil(height / step), math.ceil(width / step)), dtype=np.uint8)
    for segment, (_, _, top, left, _), _ in page.segments():
        if segment is None:  # an empty tile: background
            continue
        tile = segment[0] if segment.ndim == 4 else segment.reshape(segment.shape[-3:])
        tile = tile[..., 0] if tile.ndim == 3 else tile
        rows = min(tile.shape[0], height - top)
        cols = min(tile.shape[1], width - left)
        first_row, first_col = (-top) % step, (-left) % step
        picked = tile[first_row:rows:step, first_col:cols:step]
        row, col = (top + first_row) // step, (left + first_col) // step
        out[row : row + picked.shape[0], col : col + picked.shape[1]] = picked
    return out


def read_panda_mask(path: str | Path, provider: str) -> LesionMap:
    """A PANDA label mask (``<image_id>_mask.tiff``; labels in the first channel) read at a
    coarse pyramid level. ``provider`` (radboud or karolinska) says which values are cancer:
    Radboud 3-5 (Gleason 3, 4, 5; 1 stroma, 2 healthy epithelium), Karolinska 2 (1 benign)."""
    path = Path(path)
    provider = provider.strip().lower()
    if provider not in PANDA_LESIONS:
        raise ValueError(
            f"{path}: data provider {provider!r}; PANDA's are {', '.join(PANDA_LESIONS)}"
        )
    tiff, page, downsample, step = _tiff_level(path)
    with tiff:
        values = _first_channel(page, step)
    lesions = PANDA_LESIONS[provider]
    labels = np.where(np.isin(values, list(lesions)), values, 0).astype(np.uint8)
    return LesionMap(labels, downsample, lesions)


def _raster(
    regions: Mapping[str, list], holes: list, where: Path, downsample: float | None = None
) -> LesionMap:
    """Polygons (level-0 px) by class, less ``holes``, as a label raster (classes in name order)."""
    everything = [ring for polygons in regions.values() for polygon in polygons for ring in polygon]
    if not everything:
        return LesionMap(np.zeros((1, 1), np.uint8), 1.0, {})
    extent = np.concatenate(everything).max(axis=0)
    if downsample is None:
        downsample = float(max(1, math.ceil(extent.max() / MAX_SIDE)))
    width, height = (int(v) + 1 for v in np.ceil(extent / downsample))
    cell = (downsample, downsample)
    labels = np.zeros((height, width), np.uint8)
    classes = {}
    for label, name in enumerate(sorted(regions), start=1):
        if label > 255:
            raise ValueError(f"{where}: more than 255 lesion classes")
        inside = rasterize_polygons(regions[name], width, height, cell) > 0.5
        labels[inside] = label
        classes[label] = name
    if holes:
        labels[rasterize_polygons(holes, width, height, cell) > 0.5] = 0
    return LesionMap(labels, downsample, classes)


def read_camelyon_xml(path: str | Path) -> LesionMap:
    """A CAMELYON16 ASAP annotation: groups _0, _1 and Tumor are tumour, _2 and Exclusion holes
    cut out of it; coordinates are level-0 pixels."""
    path = Path(path)
    try:
        root = ElementTree.parse(path).getroot()
    except (OSError, ElementTree.ParseError) as error:
        raise ValueError(f"{path}: not a readable ASAP annotation file ({error})") from None
    tumour, holes = [], []
    for number, annotation in enumerate(root.iter("Annotation")):
        group = annotation.get("PartOfGroup", "")
        points = sorted(
            annotation.iter("Coordinate"), key=lambda point: float(point.get("Order", 0))
        )
        try:
            ring = np.array([[float(p.get("X")), float(p.get("Y"))] for p in points])
        except (TypeError, ValueError):
            raise ValueError(
                f"{path}: annotation {number} ({annotation.get('Name')}) has a coordinate "
                "without numeric X and Y"
            ) from None
        if len(ring) < 3:
            continue
        if group in CAMELYON_TUMOUR:
            tumour.append([ring])
        elif group in CAMELYON_HOLES:
            holes.append([ring])
        else:
            raise ValueError(
                f"{path}: annotation {number} ({annotation.get('Name')}) is in group {group!r}; "
                f"tumour groups are {', '.join(CAMELYON_TUMOUR)}, holes "
                f"{', '.join(CAMELYON_HOLES)}"
            )
    return _raster({"tumour": tumour} if tumour else {}, holes, path)


def read_geojson(
    path: str | Path, lesion_classes: Sequence[str] | None, exclude_classes: Sequence[str]
) -> LesionMap:
    """A QuPath GeoJSON export: features by ``properties.classification.name`` (unclassified
    ones are "lesion"); ``exclude_classes`` are holes, and only ``lesion_classes`` (all others
    when None) count as lesion."""
    path = Path(path)
    try:
        data = json.loads(path.read_text())
        features = data["features"] if data.get("type") == "FeatureCollection" else [data]
    except (OSError, json.JSONDecodeError, KeyError, AttributeError) as error:
        raise ValueError(f"{path}: not a readable GeoJSON file ({error})") from None
    regions: dict[str, list] = {}
    holes: list = []
    for number, feature in enumerate(features):
        classification = (feature.get("properties") or {}).get("classification") or {}
        name = classification.get("name") or UNCLASSIFIED
        polygons = geojson_to_polygons(feature, f"{path}: feature {number}")
        if name in exclude_classes:
            holes.extend(polygons)
        elif lesion_classes is None or name in lesion_classes:
            regions.setdefault(name, []).extend(polygons)
    return _raster(regions, holes, path)


class Annotations:
    """A dataset's annotations as its ``annotations`` config block says: one file per slide,
    ``<dir>/<pattern>`` in the first of the folders that has it (CAMELYON16 keeps training and
    test annotations apart); ``read(slide_id)`` is None for a slide without a file."""

    def __init__(self, spec: Mapping) -> None:
        self.format = spec["format"]
        folders = spec["dir"]
        self.dirs = (
            [Path(folders)]
            if isinstance(folders, str | Path)
            else [Path(folder) for folder in folders]
        )
        self.pattern = spec.get("pattern") or PATTERNS[self.format]
        self.lesion_classes = spec.get("lesion_classes")
        self.exclude_classes = spec.get("exclude_classes") or []
        self.providers = _providers(spec["providers"]) if spec.get("providers") else {}

    def file(self, slide_id: str) -> Path | None:
        name = self.pattern.format(slide_id=slide_id)
        return next((folder / name for folder in self.dirs if (folder / name).exists()), None)

    def read(self, slide_id: str) -> LesionMap | None:
        path = self.file(slide_id)
        if path is None:
            return None
        if self.format == "panda_mask":
            if slide_id not in self.providers:
                raise ValueError(f"{path}: no data provider of {slide_id!r} in the providers CSV")
            return read_panda_mask(path, self.providers[slide_id])
        if self.format == "camelyon_xml":
            return read_camelyon_xml(path)
        return read_geojson(path, self.lesion_classes, self.exclude_classes)


def _providers(path: str | Path) -> dict[str, str]:
    """{image_id: data_provider} of PANDA's train.csv."""
    with open(path, newline="") as handle:
        rows = list(csv.DictReader(handle))
    if rows and not {"image_id", "data_provider"} <= set(rows[0]):
        raise ValueError(f"{path}: needs the columns image_id and data_provider")
    return {row["image_id"]: row["data_provider"] for row in rows}
