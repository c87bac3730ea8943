"""Offline patch features for two-stage MIL: one `<slide_id>.pt` per slide of a PatchStore.

Extraction is resumable per slide, as TRIDENT's: finished slides are written one by one to
`<out_dir>.partial/` (which Snakemake does not delete when the job fails), with a fingerprint of
everything that determines them; a rerun with the same fingerprint encodes only the slides not
there yet, so a crash on slide 900 of 1,000 costs one slide. The slides move into `out_dir`
when every slide is done, and the manifest (`<out_dir>.manifest.json`, the workflow's declared
output) lists them: a consumer compares it with the folder, and Snakemake rebuilds a lost file
alone (`slides=[...]`: those slides only, written straight into `out_dir`).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
from pathlib import Path

import torch

from abmilx.integrity import load_torch_file
from abmilx.models import create_encoder
from abmilx.patches.data import iter_slide_features, make_encode_fn
from abmilx.patches.store import PatchStore
from abmilx.progress import Progress
from abmilx.provenance import changed_parts, code_digest, content_digest, files_digest, fingerprint
from abmilx.runtime.devices import resolve_amp, resolve_device, set_threads
from abmilx.runtime.seeding import seed_everything

log = logging.getLogger(__name__)

FINGERPRINT = "fingerprint.json"


def manifest_path(out_dir: str | Path) -> Path:
    """The list of a feature folder's slide files, beside the folder."""
    out_dir = Path(out_dir)
    return out_dir.with_name(out_dir.name + ".manifest.json")


def write_manifest(out_dir: Path, slide_ids: list[str], settings: dict) -> None:
    """Slide ids with their file's size and digest, and the settings that made them."""
    files = {
        slide_id: {"bytes": path.stat().st_size, "sha256": content_digest(path)}
        for slide_id in slide_ids
        if (path := out_dir / f"{slide_id}.pt").is_file()
    }
    text = json.dumps({"settings": settings, "slides": files}, indent=1, sort_keys=True)
    manifest = manifest_path(out_dir)
    tmp = manifest.with_name(manifest.name + ".tmp")
    tmp.write_text(text + "\n")
    os.replace(tmp, manifest)


def partial_dir(out_dir: str | Path) -> Path:
    """Where finished slides wait until the whole extraction is done."""
    out_dir = Path(out_dir)
    return out_dir.with_name(out_dir.name + ".partial")


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


def _finished_slides(work: Path, current: dict) -> set[str]:
    """Slide ids already in `work` from an interrupted run with the same fingerprint.

    A folder with another fingerprint is discarded, with one log line naming what changed.
    """
    if not work.is_dir():
        return set()
    path = work / FINGERPRINT
    previous = json.loads(path.read_text()) if path.is_file() else {}
    changed = changed_parts(previous, current)
    if changed:
        log.info("discarding the unfinished slides in %s: %s changed", work, ", ".join(changed))
        shutil.rmtree(work)
        return set()
    return {file.stem for file in work.glob("*.pt")}


def _save_atomic(record: dict, path: Path) -> None:
    tmp = path.with_name(path.name + ".tmp")
    torch.save(record, tmp)
    os.replace(tmp, path)


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
) -> dict[str, float]:
    """Encode every patch at `scale` of every slide in `store`; write `<out_dir>/<slide_id>.pt`.

    The keywords from `encoder` to `amp` are a `feature_sets` entry of the config, whose schema
    (`$defs/feature_set`) holds their defaults (`abmilx.config.schema_defaults`).

    Each file holds {"features": float32 (n, d), "coords": int64 (n, 2), "encoder", "weights",
    "scale", "mpp", "image_size" (the encoder's input size when None), "channel_order"}.
    Random weights are drawn after seeding with `seed`, so "random" features are reproducible,
    and a resumed run writes the same files as an uninterrupted one. Returns {"patches", "seconds", "patches_per_second" (of the patches
    encoded by this call), "slides_encoded", "slides_skipped"}.

    `slides` rebuilds those slides' files only (a lost intermediate), straight into `out_dir`;
    otherwise every slide is encoded and `<out_dir>.manifest.json` lists them.
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
    set_threads(threads)
    seed_everything(seed)
    torch_device = resolve_device(device)
    model = create_encoder(encoder, weights=weights).to(torch_device).eval()
    image_size = image_size or model.input_size
    amp_dtype = resolve_amp(amp, torch_device)
    encode = make_encode_fn(model, torch_device, amp_dtype, channels_last=True)
    patch_store = PatchStore(str(store))
    mpp = float(patch_store.meta["scales"][scale]["mpp"])
    slide_ids = list(patch_store.slide_ids)
    out_dir, work = Path(out_dir), partial_dir(out_dir)
    if slides is not None:
        unknown = sorted(set(slides) - set(slide_ids))
        if unknown:
            raise ValueError(f"{store} holds no slides {unknown}")
        slide_ids = list(slides)
        work = out_dir.with_name(f"{out_dir.name}.partial-{os.getpid()}")
        shutil.rmtree(work, ignore_errors=True)
    current = _fingerprint(patch_store, settings)
    finished = _finished_slides(work, current)
    todo = [slide_id for slide_id in slide_ids if slide_id not in finished]
    if finished:
        log.info(
            "resuming: %d of %d slides already done in %s", len(finished), len(slide_ids), work
        )
    work.mkdir(parents=True, exist_ok=True)
    (work / FINGERPRINT).write_text(json.dumps(current, indent=1))

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
    progress.finish(slides=f"{slides_done} encoded, {len(finished)} skipped")

    out_dir.mkdir(parents=True, exist_ok=True)
    if slides is None:  # a full run replaces the folder's files (stale slides included)
        for file in out_dir.glob("*.pt"):
            file.unlink()
    for file in work.glob("*.pt"):
        os.replace(file, out_dir / file.name)
    shutil.rmtree(work)
    if slides is None:
        write_manifest(out_dir, slide_ids, settings)
    rate = progress.done / seconds if seconds > 0 else float("nan")
    return {
        "patches": progress.done,
        "seconds": seconds,
        "patches_per_second": rate,
        "slides_encoded": slides_done,
        "slides_skipped": len(finished),
    }


def load_features(path: str | Path) -> dict:
    """Read one feature file written by `extract`."""
    return load_torch_file(path)
