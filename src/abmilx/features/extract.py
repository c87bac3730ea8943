"""Offline patch features for two-stage MIL: one `<slide_id>.pt` per slide of a PatchStore.

Extraction is resumable per slide, as TRIDENT's: finished slides are written one by one to
`<out_dir>.partial/<fingerprint>/`, where the fingerprint is a hash of everything that determines
them (Snakemake does not delete the folder when the job fails); a rerun with the same fingerprint
encodes only the slides not there yet, so a crash on slide 900 of 1,000 costs one slide, and a
folder of another fingerprint is discarded. When the slides are done they move into `out_dir`
and a manifest lists them with that fingerprint: `<out_dir>.manifest.json` (the workflow's
declared output) for the whole store, or a shard manifest for one shard of its slides
(`shard=`, `abmilx.features.shards`: one cluster job per shard; the shard manifests are then
combined into the same dataset manifest). A slide file that a manifest lists with the current
fingerprint and the same bytes is kept, not encoded again. A consumer compares the manifest
with the folder, and Snakemake rebuilds a lost file alone (`slides=[...]`: those slides only,
written straight into `out_dir`).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
from pathlib import Path

import torch

from abmilx.features.shards import (
    manifest_path,
    partial_dir,
    reusable_slides,
    shard_manifest_path,
    slide_entries,
    write_json,
)
from abmilx.integrity import load_torch_file, written_whole
from abmilx.models import create_encoder
from abmilx.patches.data import iter_slide_features, make_encode_fn
from abmilx.patches.store import PatchStore
from abmilx.progress import Progress
from abmilx.provenance import changed_parts, code_digest, config_hash, files_digest, fingerprint
from abmilx.runtime.devices import resolve_amp, resolve_device, set_threads
from abmilx.runtime.seeding import seed_everything
from abmilx.shards import parse_shard, shard_members

log = logging.getLogger(__name__)

FINGERPRINT = "fingerprint.json"


def _fingerprint(store: PatchStore, settings: dict) -> dict:
    """What the features of a slide depend on: settings, the store's content list, the code,
    and the bytes of a weights file or folder (a retrained checkpoint at the same path)."""
    weights = Path(settings["weights"])
    files = sorted(weights.glob("*")) if weights.is_dir() else [weights]
    return fingerprint(
        {
            "settings": settings,
            "store": store.meta,
            "code": code_digest("abmilx.features"),
            "weights_file": files_digest(files),
        }
    )


def _work_folder(partial: Path, current: dict) -> tuple[Path, set[str]]:
    """The folder of unfinished slides for the `current` fingerprint, and the slide ids already
    in it from an interrupted run (of any shard: shards of one run share the folder).

    Folders of another fingerprint (and files of an older layout) are discarded, with one log
    line naming what changed. Shard jobs of one run have the same fingerprint, so none of them
    removes another's slides.
    """
    work = partial / config_hash(current)
    others = sorted(p for p in partial.iterdir() if p != work) if partial.is_dir() else []
    for other in [p for p in others if p.is_dir()]:
        _discard(other, other / FINGERPRINT, current)
    loose = [p for p in others if not p.is_dir()]  # slides of the single-folder layout
    if loose:
        _discard(partial, partial / FINGERPRINT, current, files=loose)
    finished = {file.stem for file in work.glob("*.pt")} if work.is_dir() else set()
    return work, finished


def _discard(folder: Path, fingerprint_file: Path, current: dict, files=None) -> None:
    try:
        previous = json.loads(fingerprint_file.read_text())
    except (OSError, ValueError):
        previous = {}
    changed = ", ".join(changed_parts(previous, current)) or "the folder layout"
    log.info("discarding the unfinished slides in %s: %s changed", folder, changed)
    if files is None:
        shutil.rmtree(folder, ignore_errors=True)
    for file in files or []:
        file.unlink(missing_ok=True)


def _save_atomic(record: dict, path: Path) -> None:
    with written_whole(path) as partial:
        torch.save(record, partial)


def extract(
    store: str | Path,
    out_dir: str | Path,
    *,
    encoder: str,
    weights: str,
    scale: str,
    image_size: int | None,
    batch_size: int,
    num_workers: int,
    channel_order: str,
    amp: str,
    seed: int,
    device: str,
    threads: int = 1,
    slides: list[str] | None = None,
    shard: str | None = None,
    slides_per_job: int | None = None,
    first: str | None = None,
    last: str | None = None,
) -> dict[str, float]:
    """Encode every patch at `scale` of every slide in `store`; write `<out_dir>/<slide_id>.pt`.

    The keywords from `encoder` to `amp` are a `feature_sets` entry of the config, whose schema
    (`$defs/feature_set`) holds their defaults (`abmilx.config.schema_defaults`).

    Each file holds {"features": float32 (n, d), "coords": int64 (n, 2), "encoder", "weights",
    "scale", "mpp", "image_size" (the encoder's input size when None), "channel_order"}.
    Random weights are drawn after seeding with `seed`, so "random" features are reproducible,
    and a resumed or sharded run writes the same files as an uninterrupted one. Returns
    {"patches", "seconds", "patches_per_second" (of the patches encoded by this call),
    "slides_encoded", "slides_skipped"}.

    `shard` ("<index>-of-<count>" of `slides_per_job` slides) encodes the store's slides from
    `first` to `last` (in sorted order) only and lists them in its shard manifest
    (`abmilx.features.shards`: `plan_shards` cuts a dataset, `combine_shards` makes the dataset
    manifest of all shards); `slides` rebuilds those slides' files only (a lost
    intermediate), straight into `out_dir`; otherwise every slide is encoded, and
    `<out_dir>.manifest.json` lists them.
    """
    settings = {
        "encoder": encoder,
        "weights": str(weights),
        "scale": scale,
        "image_size": image_size,
        "seed": seed,
        "channel_order": channel_order,
        "amp": amp,
    }
    patch_store = PatchStore(str(store))
    mpp = float(patch_store.meta["scales"][scale]["mpp"])
    slide_ids = list(patch_store.slide_ids)
    out_dir = Path(out_dir)
    if slides is not None and shard is not None:
        raise ValueError("give slides (a rebuild) or shard, not both")
    if slides is not None:
        unknown = sorted(set(slides) - set(slide_ids))
        if unknown:
            raise ValueError(f"{store} holds no slides {unknown}")
        slide_ids = list(slides)
    elif shard is not None:
        if slides_per_job is None or first is None or last is None:
            raise ValueError(f"shard {shard}: give slides_per_job and its first and last slide")
        index, count = parse_shard(shard)
        store_slides = len(slide_ids)
        slide_ids = shard_members(slide_ids, first, last)
    current = _fingerprint(patch_store, settings)

    set_threads(threads)
    seed_everything(seed)
    torch_device = resolve_device(device)
    model = create_encoder(encoder, weights=weights).to(torch_device).eval()
    image_size = image_size or model.input_size
    amp_dtype = resolve_amp(amp, torch_device)
    encode = make_encode_fn(model, torch_device, amp_dtype, channels_last=True)

    if slides is not None:  # a rebuild starts afresh in a folder of its own
        work, finished, reused = (
            out_dir.with_name(f"{out_dir.name}.partial-{os.getpid()}"),
            set(),
            set(),
        )
        shutil.rmtree(work, ignore_errors=True)
    else:
        work, finished = _work_folder(partial_dir(out_dir), current)
        reused = reusable_slides(out_dir, current, slide_ids) - finished
    todo = [s for s in slide_ids if s not in finished and s not in reused]
    if finished:
        log.info(
            "resuming: %d of %d slides already done in %s", len(finished), len(slide_ids), work
        )
    if reused:
        log.info(
            "keeping %d finished slide files of the same fingerprint in %s", len(reused), out_dir
        )
    work.mkdir(parents=True, exist_ok=True)
    tmp = work / f"{FINGERPRINT}.{os.getpid()}.tmp"  # shards of one run write it side by side
    tmp.write_text(json.dumps(current, indent=1))
    os.replace(tmp, work / FINGERPRINT)

    total = sum(patch_store.count(slide_id, scale) for slide_id in todo)
    progress = Progress(f"features {encoder}", total=total, unit="patches", logger=log)

    def encode_counted(images: torch.Tensor) -> torch.Tensor:
        features = encode(images)
        progress.update(len(images))
        return features

    started = time.perf_counter()
    slides_done = 0
    for slide_id, features, coords in iter_slide_features(
        store,
        todo,
        encode_counted,
        scale=scale,
        chunk_size=batch_size,
        image_size=image_size,
        channel_order=channel_order,
        num_workers=num_workers,
        pin_memory=torch_device.type == "cuda",
    ):
        record = {
            "features": features.contiguous(),
            "coords": torch.from_numpy(coords),
            "encoder": encoder,
            "weights": str(weights),
            "scale": scale,
            "mpp": mpp,
            "image_size": image_size,
            "channel_order": channel_order,
        }
        _save_atomic(record, work / f"{slide_id}.pt")
        slides_done += 1
    seconds = time.perf_counter() - started
    skipped = len(finished) + len(reused)
    progress.finish(slides=f"{slides_done} encoded, {skipped} skipped")

    out_dir.mkdir(parents=True, exist_ok=True)
    if slides is None and shard is None:  # a full run replaces the folder's files
        for file in out_dir.glob("*.pt"):  # (stale slides included)
            if file.stem not in reused:
                file.unlink()
    for slide_id in slide_ids:  # a shard's only: the other shards' wait in the same folder
        if (file := work / f"{slide_id}.pt").is_file():
            os.replace(file, out_dir / file.name)
        elif slide_id not in reused:  # no patches now: an older file is not this slide's
            (out_dir / f"{slide_id}.pt").unlink(missing_ok=True)
    if slides is None and shard is None:
        shutil.rmtree(partial_dir(out_dir))
    elif slides is not None:
        shutil.rmtree(work)
    if slides is None:
        record = {
            "fingerprint": current,
            "settings": settings,
            "slides": slide_entries(out_dir, slide_ids),
        }
        if shard is None:
            write_json(manifest_path(out_dir), record)
        else:
            record["shard"] = {
                "index": index,
                "count": count,
                "slides_per_job": slides_per_job,
                "first": first,
                "last": last,
            }
            record["members"] = slide_ids
            record["store_slides"] = store_slides
            write_json(shard_manifest_path(out_dir, slides_per_job, shard), record)
    rate = progress.done / seconds if seconds > 0 else float("nan")
    return {
        "patches": progress.done,
        "seconds": seconds,
        "patches_per_second": rate,
        "slides_encoded": slides_done,
        "slides_skipped": skipped,
    }


def load_features(path: str | Path) -> dict:
    """Read one feature file written by `extract`."""
    return load_torch_file(path)
