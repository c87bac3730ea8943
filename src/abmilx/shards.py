"""Shards of a dataset's slides: the unit of work of the per-slide stages (segmentation, tiling,
feature extraction), so that 10,616 slides are a hundred jobs, not twenty thousand.

A shard is a run of `slides_per_job` slides of the dataset's slide ids in sorted order (the last
one shorter), named "<index>-of-<count>" with both zero-padded. Shard k of a given size holds the
same slides whatever else runs, so each shard is its own cluster job.

A segmentation or tiling shard job writes each slide's files at the slide's own paths, the QC
record last and whole, carrying a fingerprint of what made it (settings, code, the slide file's
size and mtime, the inputs it read); a rerun skips the slides whose record matches, so a job that
failed on one slide, or was cut off, redoes only the rest. The job's declared output is its shard
manifest, listing every slide's files: the workflow finds a deleted one there at parse time.
No heavy imports: the workflow plans shards at parse time.
"""

from __future__ import annotations

import json
import multiprocessing
import sys
import traceback
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path
from typing import Any, NamedTuple

from abmilx.integrity import DamagedFileError, read_json_object, written_whole
from abmilx.provenance import config_hash

SHARD_DIGITS = 5
# What a segmentation or tiling shard manifest holds.
SLIDE_MANIFEST_KEYS = ("stage", "dataset", "shard", "slides")


class Shard(NamedTuple):
    name: str  # "<index>-of-<count>"
    first: str  # its first and last slide id
    last: str


def plan_shards(slide_ids: Iterable[str], slides_per_job: int) -> list[Shard]:
    """The shards of a dataset: its sorted slide ids in runs of `slides_per_job`."""
    return [
        Shard(name, members[0], members[-1])
        for name, members in shard_slides(slide_ids, slides_per_job).items()
    ]


def shard_slides(slide_ids: Iterable[str], slides_per_job: int) -> dict[str, list[str]]:
    """{shard name: its slide ids, sorted} of a dataset's slides in runs of `slides_per_job`."""
    if slides_per_job < 1:
        raise ValueError(f"slides_per_job must be at least 1, got {slides_per_job}")
    ordered = sorted(slide_ids)
    if not ordered:
        raise ValueError("no slides to cut into shards")
    starts = range(0, len(ordered), slides_per_job)
    return {
        shard_name(index, len(starts)): ordered[start : start + slides_per_job]
        for index, start in enumerate(starts)
    }


def shard_members(slide_ids: Iterable[str], first: str, last: str) -> list[str]:
    """The slides of `slide_ids` (a store's) that fall in a shard, sorted."""
    return sorted(slide for slide in slide_ids if first <= slide <= last)


def shard_name(index: int, count: int) -> str:
    return f"{index:0{SHARD_DIGITS}d}-of-{count:0{SHARD_DIGITS}d}"


def parse_shard(name: str) -> tuple[int, int]:
    """(index, count) of a shard name "<index>-of-<count>"."""
    index, sep, count = name.partition("-of-")
    if not (sep and index.isdigit() and count.isdigit()) or int(index) >= int(count):
        raise ValueError(f"shard {name!r}: expected <index>-of-<count> with index < count")
    return int(index), int(count)


def file_facts(path: str | Path) -> dict[str, Any]:
    """What a slide file's fingerprint knows of it: its path, size and mtime (reading 2 GB to
    hash it would cost more than segmenting it; a file replaced in place changes both)."""
    stat = Path(path).stat()
    return {"path": str(path), "bytes": stat.st_size, "mtime_ns": stat.st_mtime_ns}


def job_mpp(job: dict) -> float | None:
    """A shard job's slide mpp (the sheet's; blank for the file's own)."""
    return float(job["mpp"]) if job["mpp"] else None


def slide_fingerprint(job: dict, **parts: Any) -> str:
    """What a slide's record was made from: its file, its mpp and the stage's ``parts``."""
    return config_hash({"slide": file_facts(job["path"]), "mpp": job_mpp(job), **parts})


def finished_status(files: dict[str, str], fingerprint: str) -> str | None:
    """The status of a slide whose files (``record`` among them) are all there and whose
    record was made from the same inputs; None when it must be made again."""
    if not all(Path(file).exists() for file in files.values()):
        return None
    try:
        record = read_json_object(files["record"])
    except (OSError, DamagedFileError):
        return None  # a damaged record is made again
    return record.get("status") if record.get("fingerprint") == fingerprint else None


def _run_one(work: Callable[[dict], dict], job: dict) -> tuple[dict | None, str]:
    """(what work returned, "") or (None, the error and its traceback): the error travels as
    text, since an exception that cannot be unpickled (one whose constructor takes other
    arguments) would break the whole pool and fail every other slide with it."""
    try:
        return work(job), ""
    except Exception as error:
        return None, "".join(traceback.format_exception(error)).rstrip()


def run_slides(
    work: Callable[[dict], dict], jobs: Sequence[dict], workers: int
) -> tuple[dict[str, dict], dict[str, str]]:
    """Run `work` on every slide job (a dict with `slide_id`), `workers` slides at a time in
    their own processes: ({slide_id: what work returned}, {slide_id: error}). A slide that
    fails does not stop the others; its traceback goes to stderr (the job's log)."""
    done: dict[str, dict] = {}
    failed: dict[str, str] = {}

    def settle(slide_id: str, result: dict | None, error: str) -> None:
        if result is not None:
            done[slide_id] = result
            return
        print(f"{slide_id}: failed\n{error}", file=sys.stderr)
        failed[slide_id] = error.splitlines()[-1]

    if workers <= 1 or len(jobs) <= 1:
        for job in jobs:
            settle(job["slide_id"], *_run_one(work, job))
        return done, failed
    # spawn: a forked child would inherit the parent's OpenSlide and OpenCV state
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(min(workers, len(jobs)), mp_context=context) as pool:
        futures = {pool.submit(_run_one, work, job): job["slide_id"] for job in jobs}
        for future in as_completed(futures):
            try:
                settle(futures[future], *future.result())
            except Exception as error:
                settle(futures[future], None, f"{type(error).__name__}: {error}")
    return done, failed


def write_slide_manifest(
    path: str | Path, *, stage: str, dataset: str, shard: str, slides: dict[str, dict]
) -> None:
    """The shard's manifest, whole or not at all: {slide_id: {"status", "files"}} by slide."""
    record = {"stage": stage, "dataset": dataset, "shard": shard, "slides": slides}
    with written_whole(path) as partial:
        partial.write_text(json.dumps(record, indent=1, sort_keys=True) + "\n")


def read_slide_manifest(path: str | Path) -> dict:
    """A segmentation or tiling shard manifest; DamagedFileError naming the file otherwise."""
    remedy = "delete it and run again"
    try:
        record = read_json_object(path)
    except DamagedFileError as error:
        raise DamagedFileError(path, f"not a shard manifest: {error.problem}; {remedy}") from None
    slides = record.get("slides")
    if not set(SLIDE_MANIFEST_KEYS) <= set(record) or not isinstance(slides, dict):
        raise DamagedFileError(
            path,
            f"not a shard manifest: needs keys {sorted(SLIDE_MANIFEST_KEYS)}, has"
            f" {sorted(record)}; {remedy}",
        )
    for slide_id, entry in slides.items():
        if not isinstance(entry, dict) or not isinstance(entry.get("files"), dict):
            raise DamagedFileError(
                path, f"not a shard manifest: slide {slide_id!r} lists no files; {remedy}"
            )
    return record


def listed_files(manifests: Iterable[str | Path], kind: str) -> list[str]:
    """The files of one kind ("record", "store", ...) that shard manifests list, by slide id."""
    found = {}
    for manifest in manifests:
        for slide_id, entry in read_slide_manifest(manifest)["slides"].items():
            if kind in entry["files"]:
                found[slide_id] = entry["files"][kind]
    return [found[slide_id] for slide_id in sorted(found)]


def lost_files(manifest: str | Path, skip: Sequence[str] = ()) -> list[str]:
    """Files an existing shard manifest lists (but those of the `skip` kinds) that are gone."""
    if not Path(manifest).is_file():
        return []
    return [
        file
        for entry in read_slide_manifest(manifest)["slides"].values()
        for kind, file in sorted(entry["files"].items())
        if kind not in skip and not Path(file).exists()
    ]


def finish_shard(
    manifest: str | Path,
    *,
    stage: str,
    dataset: str,
    shard: str,
    done: dict[str, dict],
    failed: dict[str, str],
) -> int:
    """Write the manifest when every slide is done (0), else name the failed slides and write
    none (1): the finished slides keep their files, and the rerun redoes only the rest."""
    if failed:
        print(
            f"{len(failed)} of {len(done) + len(failed)} slides failed ({len(done)} done and"
            " kept for the rerun):",
            file=sys.stderr,
        )
        for slide_id, error in sorted(failed.items()):
            print(f"  {slide_id}: {error}", file=sys.stderr)
        return 1
    reused = sum(entry.pop("reused", False) for entry in done.values())
    write_slide_manifest(manifest, stage=stage, dataset=dataset, shard=shard, slides=done)
    print(f"{shard}: {len(done)} slides, {reused} unchanged since their last run", file=sys.stderr)
    return 0
