"""Segment one slide and write its QC record, GeoJSON contours, mask and overlay."""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np

import abmilx
from abmilx.geometry import (
    Polygon,
    mask_to_polygons,
    polygons_to_geojson,
    rasterize_polygons,
    read_geojson,
)
from abmilx.integrity import written_whole
from abmilx.segmentation.settings import SegmentationSettings
from abmilx.segmentation.tissue import tissue_mask
from abmilx.shards import file_facts, finished_status, job_mpp, slide_fingerprint
from abmilx.slides import Slide, SlideError, check_mpp

OUTPUT_SUFFIXES = (".json", ".geojson", ".mask.png", ".overlay.png")
# Memory of segmenting a working view, per view pixel: the view (3 B), its blur and HSV planes,
# masks, labels and the overlay (measured 21 B/px over the view on a 16 MP view), rounded up;
# plus the strip read from the slide (16 M level pixels, RGBA and RGB).
BYTES_PER_VIEW_PIXEL = 32
STRIP_BYTES = 128 * 2**20
# The overlay PNG is a picture for people: its longer side is at most this many pixels.
OVERLAY_MAX_SIDE = 4096
# Samples per mask pixel side when rasterising a user GeoJSON (a pixel is tissue when half is).
USER_SUPERSAMPLE = 4
_OUTER_COLOUR = (0, 200, 0)
_HOLE_COLOUR = (0, 90, 255)
_EXCLUDED_TINT = np.array([255, 0, 0], dtype=np.float32)


def output_paths(prefix: str | Path) -> dict[str, Path]:
    """The four files written for ``prefix`` (keys: json, geojson, mask, overlay)."""
    prefix = str(prefix)
    return {
        "json": Path(prefix + ".json"),
        "geojson": Path(prefix + ".geojson"),
        "mask": Path(prefix + ".mask.png"),
        "overlay": Path(prefix + ".overlay.png"),
    }


def empty_record(dataset: str, slide_id: str) -> dict:
    """A QC record with every key of docs/architecture.md, values unknown."""
    return {
        "dataset": dataset,
        "slide_id": slide_id,
        "status": "failed",
        "reason": "",
        "vendor": None,
        "mpp": None,
        "mpp_source": None,
        "objective_power": None,
        "objective_power_source": None,
        "width": None,
        "height": None,
        "level_count": None,
        "tissue_area_mm2": 0.0,
        "code_version": abmilx.__version__,
    }


def _overlay(
    thumbnail: np.ndarray,
    polygons: list[Polygon],
    downsample: tuple[float, float],
    excluded: np.ndarray | None,
) -> np.ndarray:
    """The view with excluded pixels tinted and contours drawn, shrunk to OVERLAY_MAX_SIDE."""
    shrink = min(1.0, OVERLAY_MAX_SIDE / max(thumbnail.shape[:2]))
    if shrink < 1.0:
        size = (
            max(1, round(thumbnail.shape[1] * shrink)),
            max(1, round(thumbnail.shape[0] * shrink)),
        )
        thumbnail = cv2.resize(thumbnail, size, interpolation=cv2.INTER_AREA)
        if excluded is not None:
            excluded = cv2.resize(excluded.astype(np.uint8), size, interpolation=cv2.INTER_NEAREST)
            excluded = excluded.astype(bool)
        downsample = (downsample[0] / shrink, downsample[1] / shrink)
    image = thumbnail.copy()
    if excluded is not None and excluded.any():  # in float only where tinted
        tinted = 0.6 * image[excluded].astype(np.float32) + 0.4 * _EXCLUDED_TINT
        image[excluded] = tinted.astype(np.uint8)
    thickness = max(1, round(max(image.shape[:2]) / 500))
    scale = np.asarray(downsample)
    for polygon in polygons:
        rings = [
            np.round(ring / scale - 0.5).astype(np.int32).reshape(-1, 1, 2) for ring in polygon
        ]
        cv2.polylines(image, rings[:1], True, _OUTER_COLOUR, thickness)
        if len(rings) > 1:
            cv2.polylines(image, rings[1:], True, _HOLE_COLOUR, thickness)
    return image


def _write_png(path: Path, image: np.ndarray) -> None:
    if image.ndim == 3:
        image = cv2.cvtColor(image, cv2.COLOR_RGB2BGR)
    if not cv2.imwrite(str(path), image):
        raise OSError(f"could not write {path}")


def write_outputs(
    prefix: str | Path,
    record: dict,
    polygons: list[Polygon],
    mask: np.ndarray,
    overlay: np.ndarray,
) -> None:
    paths = output_paths(prefix)
    paths["json"].parent.mkdir(parents=True, exist_ok=True)
    geojson = polygons_to_geojson(polygons, {"slide_id": record["slide_id"]})
    paths["geojson"].write_text(json.dumps(geojson))
    _write_png(paths["mask"], mask.astype(np.uint8) * 255)
    _write_png(paths["overlay"], overlay)
    # the record last and whole (renamed into place): a job killed before it leaves no record,
    # so its rerun is due even where a failed job's files are kept (docs/scale.md)
    with written_whole(paths["json"]) as partial:
        partial.write_text(json.dumps(record, indent=1) + "\n")


def _check_memory(slide: Slide, view_mpp: float, budget_mb: float) -> None:
    """Raise :class:`SlideError` when segmenting the view at ``view_mpp`` would need more than
    ``budget_mb`` (a slide whose level 0 claims a huge size without a pyramid to match)."""
    level, width, height = slide.view_size(view_mpp)
    need_mb = (width * height * BYTES_PER_VIEW_PIXEL + STRIP_BYTES) / 2**20
    if need_mb > budget_mb:
        level_width, level_height = slide.level_dimensions(level)
        raise SlideError(
            slide.path,
            f"too large to segment: a {width} x {height} px view at {view_mpp:g} µm/px (read "
            f"from level {level}, {level_width} x {level_height} px, of "
            f"{slide.info.level_count} levels) needs about {need_mb:.0f} MB, over the "
            f"{budget_mb:g} MB budget; check the slide's size and mpp, add a pyramid to the "
            "file, or raise segmentation.memory_budget_mb or working_mpp",
            slide.info.as_record(),
        )


def segment_slide(
    slide_path: str | Path,
    out_prefix: str | Path,
    settings: SegmentationSettings,
    *,
    slide_id: str,
    dataset: str,
    mpp: float | None = None,
    geojson: str | Path | None = None,
    strict: bool = False,
    overridden: Sequence[str] = (),
    fingerprint: str | None = None,
) -> dict:
    """Segment tissue, write ``<out_prefix>.{json,geojson,mask.png,overlay.png}``, return the record.

    ``settings`` is the config's ``segmentation`` block (with a slide's overrides applied).
    ``mpp`` overrides the file's level-0 µm/px; ``geojson`` (level-0 polygons) replaces the
    computed mask. The file's own mpp must pass :func:`abmilx.slides.check_mpp` (unless
    ``trust_file_mpp``); the view is never finer than level 0, and a slide whose view would need
    more than ``memory_budget_mb`` fails instead of taking the machine. A slide that cannot be
    used gets ``status`` ``failed`` or ``no_tissue`` with a reason, the QC fields its file still
    told, and all four files (empty GeoJSON, blank images); ``strict`` raises
    :class:`SlideError` instead and writes nothing, so that a failed job leaves no file that
    looks finished. ``overridden`` names the
    settings that came from the slide sheet instead of the config (recorded, not applied here);
    ``fingerprint`` (what a shard job made the record from) is recorded for its rerun.
    """
    record = empty_record(dataset, slide_id)
    if fingerprint is not None:
        record["fingerprint"] = fingerprint
    record["settings"] = settings.as_dict()
    record["overridden_settings"] = sorted(overridden)
    record["mask_source"] = "geojson" if geojson else "computed"
    if geojson:
        record["geojson_source"] = str(geojson)
    polygons: list[Polygon] = []
    mask = np.zeros((1, 1), dtype=bool)
    overlay = np.full((1, 1, 3), 255, dtype=np.uint8)
    try:
        with Slide(slide_path, mpp_override=mpp) as slide:
            record.update(slide.info.as_record())
            check_mpp(slide, tuple(settings.plausible_mpp), settings.trust_file_mpp)
            view_mpp = max(settings.working_mpp, slide.mpp)
            _check_memory(slide, view_mpp, settings.memory_budget_mb)
            thumbnail = slide.thumbnail(view_mpp)
        mask = np.zeros(thumbnail.shape[:2], dtype=bool)
        overlay = thumbnail
        height, width = mask.shape
        downsample = (record["width"] / width, record["height"] / height)
        record["mask"] = {
            "mpp": view_mpp,
            "width": width,
            "height": height,
            "downsample": list(downsample),
        }
        excluded = None
        if geojson:
            try:
                polygons = read_geojson(geojson)
            except ValueError as error:
                raise SlideError(geojson, str(error)) from None
            coverage = rasterize_polygons(polygons, width, height, downsample, USER_SUPERSAMPLE)
            mask = coverage >= 0.5
        else:
            result = tissue_mask(thumbnail, mpp=view_mpp, settings=settings)
            mask, excluded = result.mask, result.excluded
            record["saturation_threshold_used"] = result.threshold
            polygons = mask_to_polygons(mask, downsample)
        pixel_area_um2 = downsample[0] * downsample[1] * record["mpp"] ** 2
        record["tissue_area_mm2"] = round(float(mask.sum()) * pixel_area_um2 / 1e6, 6)
        record["n_regions"] = len(polygons)
        overlay = _overlay(thumbnail, polygons, downsample, excluded)
        if polygons and mask.any():
            record["status"] = "ok"
        else:
            record["status"] = "no_tissue"
            record["reason"] = (
                f"no tissue in the GeoJSON mask {geojson}"
                if geojson
                else "no tissue found: no region of at least "
                f"{settings.min_tissue_area_um2:g} µm² left after removing background, ink and debris "
                f"(saturation threshold {record['saturation_threshold_used']})"
            )
            polygons = []
    except SlideError as error:
        record.update({k: v for k, v in error.facts.items() if k in record})
        record["status"], record["reason"] = "failed", error.reason
    if strict and record["status"] != "ok":
        raise SlideError(slide_path, f"slide {slide_id}: {record['status']}: {record['reason']}")
    write_outputs(out_prefix, record, polygons, mask, overlay)
    return record


def segment_shard_slide(
    job: dict,
    *,
    out_dir: str,
    dataset: str,
    settings: dict,
    strict: bool,
    code: str,
    threads: int = 1,
) -> dict:
    """One slide of a shard job (rule segment_tissue): segmented unless its record says it was
    made from the same slide file, annotation, settings and code. ``job`` is the slide's entry
    of the job's ``--slides`` (slide_id, path, mpp, geojson, overrides: sheet columns)."""
    slide_id = job["slide_id"]
    overrides = json.loads(job["overrides"]) if job["overrides"] else {}
    if not isinstance(overrides, dict):
        raise ValueError(f"slide {slide_id}: its segmentation column is not a JSON object")
    chosen = SegmentationSettings.from_settings(settings, "--settings").updated(
        overrides, f"slide {slide_id}: segmentation column"
    )
    paths = output_paths(Path(out_dir) / slide_id)
    fingerprint = slide_fingerprint(
        job,
        geojson=job["geojson"] and file_facts(job["geojson"]),
        settings=chosen.as_dict(),
        overridden=sorted(overrides),
        strict=strict,
        code=code,
        dataset=dataset,
    )
    files = {"record": str(paths["json"])} | {
        kind: str(path) for kind, path in paths.items() if kind != "json"
    }
    if (status := finished_status(files, fingerprint)) is not None:
        return {"status": status, "files": files, "reused": True}
    cv2.setNumThreads(threads)
    record = segment_slide(
        job["path"],
        Path(out_dir) / slide_id,
        chosen,
        slide_id=slide_id,
        dataset=dataset,
        mpp=job_mpp(job),
        geojson=job["geojson"] or None,
        strict=strict,
        overridden=sorted(overrides),
        fingerprint=fingerprint,
    )
    print(f"{slide_id}: {record['status']} {record['reason']}".rstrip(), file=sys.stderr)
    return {"status": record["status"], "files": files, "reused": False}
