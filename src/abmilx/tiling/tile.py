"""Tile one segmented slide into its per-slide patch store and QC record."""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import nullcontext
from pathlib import Path

import cv2
import numpy as np

from abmilx.geometry import read_geojson
from abmilx.integrity import read_json_object, written_whole
from abmilx.patches.store import PatchStoreWriter, write_empty_store
from abmilx.progress import Progress
from abmilx.provenance import content_digest
from abmilx.shards import finished_status, job_mpp, slide_fingerprint
from abmilx.slides import Slide, SlideError
from abmilx.tiling.grid import (
    ScalePlan,
    grid_positions,
    grid_shape,
    include_patches,
    level0_coords,
    plan_scale,
)
from abmilx.tiling.read import LevelReader, ScaleJob
from abmilx.tiling.settings import TilingSettings

_LOG = logging.getLogger("abmilx.tiling")


def select_patches(
    slide: Slide,
    plan: ScalePlan,
    polygons,
    min_tissue_fraction: float,
    inclusion: str,
) -> tuple[np.ndarray, np.ndarray]:
    """Level-pixel positions and level-0 coords of the grid patches the inclusion rule keeps."""
    width, height = slide.level_dimensions(plan.level)
    rows, columns = grid_shape(plan, width, height)
    positions = grid_positions(plan, rows, columns)
    keep = include_patches(polygons, plan, rows, columns, inclusion, min_tissue_fraction)
    positions = positions[keep]
    return positions, level0_coords(slide, plan, positions)


def _counted(patches: Iterator, progress: Progress) -> Iterator[tuple[str, int, bytes]]:
    """``(scale, index, jpeg)`` of :meth:`LevelReader.jpegs`, counted in ``progress``."""
    for (scale, index), data in patches:
        progress.update()
        yield scale, index, data


def _write_json(path: Path, record: dict) -> None:
    """Whole or not at all (renamed into place): the QC record is the job's last file, so a job
    killed before it leaves its rerun due even where a failed job's files are kept."""
    with written_whole(path) as partial:
        partial.write_text(json.dumps(record, indent=1) + "\n")


def tile_slide(
    slide_path: str | Path,
    segmentation: str | Path,
    out_store: str | Path,
    out_qc: str | Path,
    settings: TilingSettings,
    *,
    slide_id: str,
    dataset: str,
    mpp: float | None = None,
    strict: bool = False,
    threads: int = 1,
    fingerprint: str | None = None,
) -> dict:
    """Write the slide's patch store and its QC record (segmentation record + ``patches``).

    ``settings`` is the config's ``tiling`` block. ``segmentation`` is the prefix written by
    :func:`abmilx.segmentation.segment.segment_slide`; its GeoJSON decides which grid patches
    are kept. A slide that failed segmentation or reading yields an empty store and its status;
    ``strict`` raises :class:`SlideError` instead and leaves neither file. ``fast_read`` decodes
    the raw JPEG tiles of aperio / generic-tiff levels instead of calling OpenSlide per patch
    (same pixels, several times faster; the QC record names the reader of each scale).
    ``passthrough`` stores a source tile's JPEG bytes unchanged where a patch is exactly one tile
    at the tile's own resolution (its pixels are OpenSlide's, at the scanner's JPEG quality).
    ``fingerprint`` (what a shard job made the record from) replaces the segmentation's.
    """
    scales = dict(settings.scales)
    # segmentation.segment.output_paths names these two, but importing it costs scipy's start-up
    paths = {suffix: Path(f"{segmentation}.{suffix}") for suffix in ("json", "geojson")}
    if not paths["json"].is_file():
        raise FileNotFoundError(f"segmentation record {paths['json']} does not exist")
    record = read_json_object(paths["json"])
    record.update(dataset=dataset, slide_id=slide_id)
    record.pop("fingerprint", None)
    if fingerprint is not None:
        record["fingerprint"] = fingerprint
    record["tiling"] = {
        "patch_size": settings.patch_size,
        "min_tissue_fraction": settings.min_tissue_fraction,
        "inclusion": settings.inclusion,
        "jpeg_quality": settings.jpeg_quality,
        "level_tolerance": settings.level_tolerance,
        "scales": {},
    }
    counts = dict.fromkeys(scales, 0)
    store_args = dict(
        patch_size=settings.patch_size, jpeg_quality=settings.jpeg_quality, scales=scales
    )
    if record.get("status") == "ok":
        try:
            counts = _tile(
                slide_path,
                paths["geojson"],
                out_store,
                record,
                settings,
                slide_id=slide_id,
                mpp=mpp,
                threads=max(1, threads),
            )
        except SlideError as error:
            record.update(status="failed", reason=error.reason)
            counts = dict.fromkeys(scales, 0)
    if record.get("status") == "ok" and sum(counts.values()) == 0:
        record.update(
            status="no_tissue",
            reason="no patch has at least "
            f"{settings.min_tissue_fraction:g} of its footprint in tissue"
            if settings.inclusion == "tissue_fraction"
            else "no patch has a four-point check point in tissue",
        )
    if strict and record["status"] != "ok":
        Path(out_store).unlink(missing_ok=True)  # a store without patches (no_tissue)
        raise SlideError(slide_path, f"slide {slide_id}: {record['status']}: {record['reason']}")
    if record.get("status") != "ok":
        write_empty_store(out_store, slide_id, **store_args)
    record["patches"] = counts
    _write_json(Path(out_qc), record)
    return record


def _tile(
    slide_path: str | Path,
    geojson_path: Path,
    out_store: str | Path,
    record: dict,
    settings: TilingSettings,
    *,
    slide_id: str,
    mpp: float | None,
    threads: int,
) -> dict[str, int]:
    """Read, encode and store the selected patches of every scale; fills ``record``.

    Scales that read the same pyramid level share one pass over it (see
    :mod:`abmilx.tiling.read`), so each source tile is decoded at most once per slide.
    """
    try:
        polygons = read_geojson(geojson_path)
    except ValueError as error:
        raise SlideError(geojson_path, str(error)) from None
    scales, patch_size, jpeg_quality = settings.scales, settings.patch_size, settings.jpeg_quality
    with Slide(slide_path, mpp_override=mpp) as slide:
        record.update(slide.info.as_record())
        plans = [
            plan_scale(slide, n, m, patch_size, settings.level_tolerance) for n, m in scales.items()
        ]
        selected = {
            plan.name: select_patches(
                slide, plan, polygons, settings.min_tissue_fraction, settings.inclusion
            )
            for plan in plans
        }
        total = sum(len(coords) for _, coords in selected.values())
        progress = Progress(f"{slide_id} patches", total, "patches", logger=_LOG)
        with (
            PatchStoreWriter(
                out_store,
                patch_size=patch_size,
                jpeg_quality=jpeg_quality,
                scales=scales,
                expected_patches=total,
            ) as writer,
            ThreadPoolExecutor(max_workers=threads) if threads > 1 else nullcontext() as pool,
        ):
            readers = {
                level: LevelReader(
                    slide,
                    level,
                    [plan for plan in plans if plan.level == level],
                    fast=settings.fast_read,
                    passthrough=settings.passthrough,
                )
                for level in sorted({plan.level for plan in plans})
            }
            for plan in plans:
                method, reason = readers[plan.level].methods[plan.name]
                record["tiling"]["scales"][plan.name] = {
                    **plan.as_record(),
                    "reader": method,
                    "reader_reason": reason,
                }
            for level, reader in readers.items():
                on_level = [plan for plan in plans if plan.level == level]
                jobs = [ScaleJob(plan, selected[plan.name][0]) for plan in on_level]
                writer.add_scales(
                    slide_id,
                    {plan.name: selected[plan.name][1] for plan in on_level},
                    _counted(reader.jpegs(jobs, jpeg_quality, pool, 4 * threads), progress),
                    extent_level0={plan.name: plan.extent_level0 for plan in on_level},
                    slide_mpp=slide.mpp,
                )
        progress.finish()
    return {plan.name: len(selected[plan.name][1]) for plan in plans}


def tile_shard_slide(
    job: dict,
    *,
    segmentation_dir: str,
    out_dir: str,
    dataset: str,
    settings: dict,
    strict: bool,
    code: str,
    threads: int = 1,
) -> dict:
    """One slide of a shard job (rule tile_slide): tiled unless its QC record says it was made
    from the same slide file, segmentation, settings and code, and its store is there (under
    tiling.pack: move the store is gone once packed, so the slide is tiled again)."""
    slide_id = job["slide_id"]
    segmentation = Path(segmentation_dir) / slide_id
    chosen = TilingSettings.from_settings(settings, "--settings")
    store, qc = Path(out_dir) / f"{slide_id}.lmdb", Path(out_dir) / f"{slide_id}.json"
    fingerprint = slide_fingerprint(
        job,
        segmentation=[content_digest(f"{segmentation}.{suffix}") for suffix in ("json", "geojson")],
        settings=chosen.as_dict(),
        strict=strict,
        code=code,
        dataset=dataset,
    )
    files = {"record": str(qc), "store": str(store)}
    if (status := finished_status(files, fingerprint)) is not None:
        return {"status": status, "files": files, "reused": True}
    cv2.setNumThreads(1)  # parallelism comes from the patch threads, as in the tile command
    record = tile_slide(
        job["path"],
        segmentation,
        store,
        qc,
        chosen,
        slide_id=slide_id,
        dataset=dataset,
        mpp=job_mpp(job),
        strict=strict,
        threads=threads,
        fingerprint=fingerprint,
    )
    print(
        f"{slide_id}: {record['status']} {record['patches']} {record['reason']}".rstrip(),
        file=sys.stderr,
    )
    return {"status": record["status"], "files": files, "reused": False}
