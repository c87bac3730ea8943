"""Tissue polygons: from a mask, to and from GeoJSON (level-0 pixels), and back to a raster.

A polygon is a list of rings, ``(k, 2)`` float arrays of level-0 ``(x, y)``: the outer ring
first, then its holes. Mask pixel ``(i, j)`` covers level-0 ``[i * dx, (i + 1) * dx)``; contour
points are pixel centres, so rings lie half a mask pixel inside the mask's edge.
"""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np

Polygon = list[np.ndarray]


def mask_to_polygons(mask: np.ndarray, downsample: tuple[float, float]) -> list[Polygon]:
    """Polygons (outer ring + holes) of a boolean mask, in level-0 pixels."""
    contours, hierarchy = cv2.findContours(
        mask.astype(np.uint8), cv2.RETR_CCOMP, cv2.CHAIN_APPROX_SIMPLE
    )
    if hierarchy is None:
        return []
    scale = np.asarray(downsample, dtype=np.float64)
    hierarchy = hierarchy[0]

    def to_level0(contour: np.ndarray) -> np.ndarray:
        return (contour.reshape(-1, 2).astype(np.float64) + 0.5) * scale

    polygons = []
    for index, (_, _, first_child, parent) in enumerate(hierarchy):
        if parent != -1 or len(contours[index]) < 3:
            continue
        rings = [to_level0(contours[index])]
        child = first_child
        while child != -1:
            if len(contours[child]) >= 3:
                rings.append(to_level0(contours[child]))
            child = hierarchy[child][0]
        polygons.append(rings)
    return polygons


def _closed(ring: np.ndarray) -> list[list[float]]:
    points = [[round(float(x), 2), round(float(y), 2)] for x, y in ring]
    if points[0] != points[-1]:
        points.append(points[0])
    return points


def polygons_to_geojson(polygons: list[Polygon], properties: dict | None = None) -> dict:
    """GeoJSON FeatureCollection of Polygons (QuPath-style ``classification`` property)."""
    base = {"objectType": "annotation", "classification": {"name": "Tissue"}}
    base.update(properties or {})
    features = [
        {
            "type": "Feature",
            "geometry": {"type": "Polygon", "coordinates": [_closed(ring) for ring in polygon]},
            "properties": dict(base),
        }
        for polygon in polygons
    ]
    return {"type": "FeatureCollection", "features": features}


def _geometry_polygons(geometry: dict, where: str) -> list[Polygon]:
    kind = geometry.get("type")
    if kind == "Polygon":
        parts = [geometry["coordinates"]]
    elif kind == "MultiPolygon":
        parts = geometry["coordinates"]
    elif kind == "GeometryCollection":
        return [p for g in geometry["geometries"] for p in _geometry_polygons(g, where)]
    else:
        raise ValueError(f"{where}: geometry type {kind!r} is not Polygon or MultiPolygon")
    polygons = []
    for part in parts:
        rings = [np.asarray(ring, dtype=np.float64).reshape(-1, 2)[:, :2] for ring in part]
        if any(len(ring) < 3 for ring in rings):
            raise ValueError(f"{where}: a ring has fewer than 3 points")
        polygons.append(rings)
    return polygons


def geojson_to_polygons(data: dict, source: str = "GeoJSON") -> list[Polygon]:
    """Polygons of a FeatureCollection, Feature, list of Features or bare geometry."""
    if isinstance(data, list):
        features = data
    elif data.get("type") == "FeatureCollection":
        features = data.get("features", [])
    elif data.get("type") == "Feature":
        features = [data]
    else:
        features = [{"type": "Feature", "geometry": data}]
    polygons = []
    for number, feature in enumerate(features):
        geometry = feature.get("geometry") if isinstance(feature, dict) else None
        if geometry is None:
            raise ValueError(f"{source}: feature {number} has no geometry")
        polygons.extend(_geometry_polygons(geometry, f"{source}: feature {number}"))
    return polygons


def read_geojson(path: str | Path) -> list[Polygon]:
    """Polygons (level-0 pixels) from a GeoJSON file; ValueError naming the file when invalid."""
    path = Path(path)
    try:
        data = json.loads(path.read_text())
        return geojson_to_polygons(data, str(path))
    except (OSError, json.JSONDecodeError, KeyError, TypeError, AttributeError) as error:
        raise ValueError(f"{path}: not a readable GeoJSON polygon file ({error})") from None


def _fill_even_odd(rings: list[np.ndarray], height: int, width: int) -> np.ndarray:
    """Pixels whose centre ``(j, i)`` lies inside the rings (even-odd rule, edges half-open).

    An exact scanline fill: ``cv2.fillPoly`` also fills pixels up to half a pixel outside an
    edge, which biases tissue fractions at patch borders.
    """
    starts = np.concatenate(rings)
    ends = np.concatenate([np.roll(ring, -1, axis=0) for ring in rings])
    x0, y0, x1, y1 = starts[:, 0], starts[:, 1], ends[:, 0], ends[:, 1]
    low, high = np.minimum(y0, y1), np.maximum(y0, y1)
    first = np.clip(np.ceil(low), 0, height).astype(np.int64)  # rows with low <= row < high
    last = np.clip(np.ceil(high), 0, height).astype(np.int64)
    spans = last - first
    keep = spans > 0
    if not keep.any():
        return np.zeros((height, width), dtype=bool)
    edge = np.repeat(np.flatnonzero(keep), spans[keep])
    row = first[edge] + (
        np.arange(len(edge)) - np.repeat(np.cumsum(spans[keep]) - spans[keep], spans[keep])
    )
    x = x0[edge] + (row - y0[edge]) * (x1[edge] - x0[edge]) / (y1[edge] - y0[edge])
    order = np.lexsort((x, row))
    row, x = row[order], x[order]
    # crossings come in pairs per row: fill centres in [left, right)
    left = np.clip(np.ceil(x[0::2]), 0, width).astype(np.int64)
    right = np.clip(np.ceil(x[1::2]), 0, width).astype(np.int64)
    spans = left < right  # two crossings between the same two centres fill nothing
    rows, left, right = row[0::2][spans], left[spans], right[spans]
    # +1 where a span starts, -1 where it ends. A row's spans are sorted and disjoint, so no two
    # starts (or ends) share a pixel and the running sum is 0 or 1; every row sums to 0, so one
    # running sum over the flattened rows is the sum per row. int8 and one flat sum measured
    # 3-15x faster than int32 per row on a 4096 x 4096 grid (a 40x slide's tissue fractions).
    change = np.zeros((height, width + 1), dtype=np.int8)
    change[rows, left] += 1
    change[rows, right] -= 1
    return np.cumsum(change.ravel(), dtype=np.int8).reshape(height, width + 1)[:, :width] > 0


def grid_points_inside(
    ring: np.ndarray, origin: tuple[float, float], spacing: float, rows: int, columns: int
) -> np.ndarray:
    """``(rows, columns)`` bool: is point ``origin + (column, row) * spacing`` inside ``ring``."""
    return _fill_even_odd([(ring - np.asarray(origin)) / spacing], rows, columns)


def rasterize_polygons(
    polygons: list[Polygon],
    width: int,
    height: int,
    cell: tuple[float, float],
    supersample: int = 1,
) -> np.ndarray:
    """Coverage in [0, 1], ``(height, width)`` float32, of level-0 cells ``cell`` px wide.

    Pixel ``(i, j)`` covers level-0 ``[j * cell_x, (j + 1) * cell_x)`` horizontally and is
    sampled at the centres of a ``supersample`` x ``supersample`` grid; a sample counts when it
    is inside a polygon's outer ring and outside its holes.
    """
    coverage = np.zeros((height, width), dtype=np.float32)
    scale = np.asarray(cell, dtype=np.float64) / supersample
    for polygon in polygons:
        rings = [ring / scale - 0.5 for ring in polygon]  # sample-centre coordinates
        low = np.floor(rings[0].min(axis=0) / supersample).astype(int)
        high = np.ceil(rings[0].max(axis=0) / supersample).astype(int) + 1
        x0, y0 = max(low[0], 0), max(low[1], 0)
        x1, y1 = min(high[0], width), min(high[1], height)
        if x1 <= x0 or y1 <= y0:
            continue
        offset = np.array([x0, y0], dtype=np.float64) * supersample
        inside = _fill_even_odd(
            [ring - offset for ring in rings], (y1 - y0) * supersample, (x1 - x0) * supersample
        )
        blocks = inside.reshape(y1 - y0, supersample, x1 - x0, supersample)
        part = blocks.mean(axis=(1, 3), dtype=np.float32)
        np.maximum(coverage[y0:y1, x0:x1], part, out=coverage[y0:y1, x0:x1])
    return coverage
