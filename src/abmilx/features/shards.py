"""Feature-extraction shards' manifests and the dataset manifest.

A shard (abmilx.shards) is given to its job as the first and the last slide id of its run: the
job encodes the slides of the patch store between the two (the store leaves out slides without
patches, so it may hold fewer). A shard job writes its
slides' files into the feature folder and lists them, with the fingerprint of what made them, in
`<folder>.shards/<slides_per_job>/<name>.json`; `combine_shards` joins the lists into the
dataset manifest `<folder>.manifest.json`, the same file a one-job extraction writes.

Finished files are reused by content, not by shard: a slide file that any manifest beside the
folder lists with the current fingerprint and the same SHA-256 is not encoded again, so a new
shard size costs a read of each file, not a new extraction. No torch here: the workflow plans
shards at parse time and the combining job stays light.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterable, Sequence
from pathlib import Path

from abmilx.integrity import DamagedFileError, read_json_object, written_whole
from abmilx.provenance import content_digest
from abmilx.shards import shard_name

# What a shard manifest holds (extract.py writes it; combine_shards reads every key).
SHARD_KEYS = ("fingerprint", "settings", "store_slides", "shard", "members", "slides")


def manifest_path(out_dir: str | Path) -> Path:
    """The list of a feature folder's slide files, beside the folder."""
    out_dir = Path(out_dir)
    return out_dir.with_name(out_dir.name + ".manifest.json")


def shards_dir(out_dir: str | Path) -> Path:
    """Where the shard manifests of a feature folder are, one folder per shard size."""
    out_dir = Path(out_dir)
    return out_dir.with_name(out_dir.name + ".shards")


def shard_manifest_path(out_dir: str | Path, slides_per_job: int, shard: str) -> Path:
    return shards_dir(out_dir) / str(slides_per_job) / f"{shard}.json"


def partial_dir(out_dir: str | Path) -> Path:
    """Where finished slides wait until their shard (or the whole extraction) is done."""
    out_dir = Path(out_dir)
    return out_dir.with_name(out_dir.name + ".partial")


def write_json(path: Path, record: dict) -> None:
    """Write atomically (a reader never sees half a manifest)."""
    with written_whole(path) as partial:
        partial.write_text(json.dumps(record, indent=1, sort_keys=True) + "\n")


def read_manifest(path: str | Path, keys: Sequence[str]) -> dict:
    """A feature or shard manifest with `keys`; DamagedFileError naming the file when it is not
    one. Manifests are written whole, so a bad one was damaged afterwards (a full disk, an edit):
    deleting it makes the next run write it again, encoding only the slides it must."""
    remedy = "delete it and run again"
    try:
        record = read_json_object(path)
    except DamagedFileError as error:
        raise DamagedFileError(path, f"not a feature manifest: {error.problem}; {remedy}") from None
    if not set(keys) <= set(record):
        raise DamagedFileError(
            path,
            f"not a feature manifest: needs keys {sorted(keys)}, has {sorted(record)}; {remedy}",
        )
    return record


def listed_slides(path: str | Path) -> list[str]:
    """The slides whose files a dataset manifest lists."""
    return sorted(read_manifest(path, ["fingerprint", "slides"])["slides"])


def slide_entries(out_dir: Path, slide_ids: Iterable[str]) -> dict[str, dict]:
    """{slide_id: {"bytes", "sha256"}} of the slides that have a file in `out_dir`."""
    return {
        slide_id: {"bytes": path.stat().st_size, "sha256": content_digest(path)}
        for slide_id in slide_ids
        if (path := out_dir / f"{slide_id}.pt").is_file()
    }


def _manifests(out_dir: Path) -> list[Path]:
    """The dataset manifest and every shard manifest beside the folder (any shard size)."""
    found = [manifest_path(out_dir), *sorted(shards_dir(out_dir).glob("*/*.json"))]
    return [path for path in found if path.is_file()]


def reusable_slides(out_dir: str | Path, current: dict, slide_ids: Sequence[str]) -> set[str]:
    """Slides of `slide_ids` whose file in `out_dir` a manifest lists with the `current`
    fingerprint and whose bytes are still the listed ones."""
    out_dir = Path(out_dir)
    wanted, listed = set(slide_ids), {}
    for path in _manifests(out_dir):
        try:
            record = read_manifest(path, ["fingerprint", "slides"])
        except (OSError, DamagedFileError):
            continue  # a damaged manifest vouches for nothing
        if record["fingerprint"] != current:
            continue
        for slide_id, entry in record["slides"].items():
            if slide_id in wanted:
                listed.setdefault(slide_id, []).append(entry)
    reused = set()
    for slide_id, entries in listed.items():
        file = out_dir / f"{slide_id}.pt"
        if not file.is_file():
            continue
        size = file.stat().st_size
        if any(e.get("bytes") == size and e.get("sha256") == content_digest(file) for e in entries):
            reused.add(slide_id)
    return reused


def combine_shards(out_dir: str | Path, slides_per_job: int, count: int) -> dict[str, int]:
    """Write the dataset manifest of `out_dir` from its `count` shard manifests of size
    `slides_per_job`.

    Checks that the shards were made with one fingerprint (so from one patch store), that they
    follow each other in slide order without overlapping, and that together they hold every
    slide of the store, each listed file being there with its listed size; then removes what no
    shard lists (files of slides gone from the store, shard manifests of other sizes,
    unfinished slides).
    """
    out_dir = Path(out_dir)
    paths = [
        shard_manifest_path(out_dir, slides_per_job, shard_name(index, count))
        for index in range(count)
    ]
    missing = [str(path) for path in paths if not path.is_file()]
    if count < 1 or missing:
        raise FileNotFoundError(f"{out_dir}: shard manifests missing: {missing[:5]}")
    records = [read_manifest(path, SHARD_KEYS) for path in paths]
    first = records[0]
    previous_last, members = None, 0
    slides: dict[str, dict] = {}
    for index, (path, record) in enumerate(zip(paths, records, strict=True)):
        for key in ("fingerprint", "settings", "store_slides"):
            if record[key] != first[key]:
                raise ValueError(
                    f"{path}: its {key} differ from those of {paths[0]}; the shards were made"
                    " by different runs (rerun the stale shard)"
                )
        shard = record["shard"]
        if (shard["index"], shard["count"], shard["slides_per_job"]) != (
            index,
            count,
            slides_per_job,
        ):
            raise ValueError(f"{path}: holds shard {shard}, not {index} of {count}")
        if previous_last is not None and not previous_last < shard["first"]:
            raise ValueError(
                f"{path}: starts at slide {shard['first']!r}, not after the previous shard's"
                f" last, {previous_last!r}"
            )
        previous_last = shard["last"]
        members += len(record["members"])
        shard_slides = set(record["members"])
        for slide_id, entry in record["slides"].items():
            file = out_dir / f"{slide_id}.pt"
            if slide_id not in shard_slides:
                raise ValueError(f"{path}: lists slide {slide_id!r}, not one of its shard")
            if not file.is_file() or file.stat().st_size != entry["bytes"]:
                raise FileNotFoundError(
                    f"{file}: listed by {path} ({entry['bytes']} bytes) but missing or of"
                    " another size; rerun that shard"
                )
            slides[slide_id] = entry
    if members != first["store_slides"]:
        raise ValueError(
            f"{out_dir}: the patch store holds {first['store_slides']} slides, its {count} shards"
            f" {members}: the slide sheet and the store disagree"
        )
    if out_dir.is_dir():
        for file in out_dir.glob("*.pt"):
            if file.stem not in slides:
                file.unlink()
    shutil.rmtree(partial_dir(out_dir), ignore_errors=True)
    keep = {path.resolve() for path in paths}
    for stale in shards_dir(out_dir).glob("*/*.json"):
        if stale.resolve() not in keep:
            stale.unlink()
    for folder in shards_dir(out_dir).glob("*"):
        if folder.is_dir() and not any(folder.iterdir()):
            folder.rmdir()
    write_json(
        manifest_path(out_dir),
        {"fingerprint": first["fingerprint"], "settings": first["settings"], "slides": slides},
    )
    return {"slides": len(slides), "shards": count}
