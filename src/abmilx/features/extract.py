"""Offline patch features for two-stage MIL: one `<slide_id>.pt` per slide of a PatchStore."""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path

import torch
from tqdm import tqdm

from abmilx.features.data import iter_slide_features
from abmilx.models import create_encoder
from abmilx.tiling.store import PatchStore
from abmilx.training.devices import autocast, resolve_amp, resolve_device, set_threads
from abmilx.training.seeding import seed_everything

log = logging.getLogger(__name__)


def make_encode_fn(
    encoder: torch.nn.Module,
    device: torch.device,
    amp_dtype: torch.dtype | None,
    channels_last: bool = False,
):
    """uint8 (k, 3, S, S) -> (k, d) features, under no_grad with the encoder's normalisation."""

    @torch.no_grad()
    def encode(images: torch.Tensor) -> torch.Tensor:
        x = images.to(device, non_blocking=True).float().div_(255.0)
        x = encoder.normalize(x)
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with autocast(device, amp_dtype):
            return encoder(x)

    return encode


def extract(
    store: str | Path,
    out_dir: str | Path,
    encoder: str = "resnet50_layer3",
    weights: str = "imagenet",
    scale: str = "main",
    image_size: int = 224,
    batch_size: int = 256,
    seed: int = 0,
    threads: int = 1,
    num_workers: int = 0,
    channel_order: str = "rgb",
    device: str = "auto",
    amp: str = "auto",
) -> dict[str, float]:
    """Encode every patch at `scale` of every slide in `store`; write `<out_dir>/<slide_id>.pt`.

    Each file holds {"features": float32 (n, d), "coords": int64 (n, 2), "encoder", "weights",
    "scale", "mpp", "image_size", "channel_order"}. Random weights are drawn after seeding with
    `seed`, so "random" features are reproducible. Returns {"patches", "seconds",
    "patches_per_second"}.
    """
    set_threads(threads)
    seed_everything(seed)
    torch_device = resolve_device(device)
    model = create_encoder(encoder, weights=weights).to(torch_device).eval()
    amp_dtype = resolve_amp(amp, torch_device)
    encode = make_encode_fn(model, torch_device, amp_dtype, channels_last=True)
    patch_store = PatchStore(str(store))
    mpp = float(patch_store.meta["scales"][scale]["mpp"])
    slide_ids = list(patch_store.slide_ids)
    total = sum(patch_store.count(slide_id, scale) for slide_id in slide_ids)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    done = 0
    with tqdm(total=total, unit="patch", desc=f"features {encoder}") as bar:
        for slide_id, features, coords in iter_slide_features(
            store,
            slide_ids,
            encode,
            scale=scale,
            chunk_size=batch_size,
            image_size=image_size,
            channel_order=channel_order,
            num_workers=num_workers,
        ):
            record = {
                "features": features.float().contiguous(),
                "coords": torch.from_numpy(coords),
                "encoder": encoder,
                "weights": str(weights),
                "scale": scale,
                "mpp": mpp,
                "image_size": image_size,
                "channel_order": channel_order,
            }
            path = out_dir / f"{slide_id}.pt"
            tmp = path.with_name(path.name + ".tmp")
            torch.save(record, tmp)
            os.replace(tmp, path)
            done += len(features)
            bar.update(len(features))
    seconds = time.perf_counter() - started
    rate = done / seconds if seconds > 0 else float("nan")
    log.info(
        "extracted %d patches of %d slides in %.1fs (%.1f patches/s)",
        done,
        len(slide_ids),
        seconds,
        rate,
    )
    return {"patches": done, "seconds": seconds, "patches_per_second": rate}


def load_features(path: str | Path) -> dict:
    """Read one feature file written by `extract`."""
    return torch.load(path, map_location="cpu", weights_only=False)
