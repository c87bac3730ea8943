"""SimCLR on the patches of one patch store: two augmented views per patch, NT-Xent loss.

Chosen because it learns useful features fastest on a CPU budget of a minute: no momentum
encoder or queue (BYOL, MoCo) and no multi-crop (DINO), and with a few hundred patches per
batch the in-batch negatives suffice. All patches are decoded into memory once (a few thousand
64-px patches are tens of MB); views are cropped, flipped, rotated and colour-jittered per
patch with an explicit generator, so two runs with one seed write the same checkpoint.
"""

from __future__ import annotations

import csv
import json
import logging
import math
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from abmilx.integrity import written_whole
from abmilx.models import create_encoder
from abmilx.patches.augment import random_flips, random_resized_crop
from abmilx.patches.store import PatchStore
from abmilx.provenance import code_digest, file_sha256
from abmilx.runtime.devices import autocast, resolve_amp, resolve_device, set_threads
from abmilx.runtime.seeding import seed_everything

log = logging.getLogger(__name__)

METHODS = ("simclr",)
CHECKPOINT, RECORD, HISTORY = "encoder.pt", "record.json", "train_log.csv"


def ssl_view(
    images: torch.Tensor,
    size: int,
    crop_scale: float,
    colour: float,
    generator: torch.Generator,
) -> torch.Tensor:
    """(n, 3, H, W) uint8 -> (n, 3, size, size) float in [0, 1]: a random resized crop, flips,
    a quarter turn, and brightness/contrast/saturation scaled by 1 ± ``colour`` (mild: stain
    intensity carries the morphology that tells lesions apart)."""
    views = random_flips(random_resized_crop(images, size, crop_scale, generator), generator)
    turn = torch.rand(len(views), generator=generator) < 0.5
    views = torch.where(turn.view(-1, 1, 1, 1), views.transpose(-1, -2), views)
    x = views.float().div_(255.0)
    factors = 1.0 + colour * (2.0 * torch.rand(3, len(x), 1, 1, 1, generator=generator) - 1.0)
    brightness, contrast, saturation = factors
    x = x * brightness
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    x = (x - mean) * contrast + mean
    grey = x.mean(dim=1, keepdim=True)
    x = (x - grey) * saturation + grey
    return x.clamp_(0.0, 1.0)


def nt_xent(z1: torch.Tensor, z2: torch.Tensor, temperature: float) -> torch.Tensor:
    """SimCLR's normalised-temperature cross-entropy: each view must pick its partner among the
    2n - 1 other views of the batch."""
    z = F.normalize(torch.cat([z1, z2]).float(), dim=1)
    logits = z @ z.T / temperature
    logits.fill_diagonal_(float("-inf"))
    n = len(z1)
    targets = torch.cat([torch.arange(n, 2 * n), torch.arange(n)]).to(z.device)
    return F.cross_entropy(logits, targets)


def projection_head(in_dim: int, out_dim: int) -> nn.Module:
    """SimCLR's two-layer MLP; discarded after training (only the encoder is saved)."""
    return nn.Sequential(
        nn.Linear(in_dim, in_dim), nn.BatchNorm1d(in_dim), nn.ReLU(), nn.Linear(in_dim, out_dim)
    )


def read_patches(
    store: PatchStore, scale: str, max_patches: int | None, seed: int
) -> tuple[torch.Tensor, list[str]]:
    """Every patch at ``scale`` (or a seeded random ``max_patches`` of them) as (n, 3, P, P)
    uint8, and the slide ids they came from."""
    slides = [s for s in store.slide_ids if store.count(s, scale) > 0]
    if not slides:
        raise ValueError(f"{store.path}: no patch at scale {scale!r} to pretrain on")
    index = [(s, i) for s in slides for i in range(store.count(s, scale))]
    if max_patches is not None and len(index) > max_patches:
        keep = np.sort(np.random.default_rng(seed).choice(len(index), max_patches, replace=False))
        index = [index[k] for k in keep]
    parts = []
    for slide in slides:
        picks = [i for s, i in index if s == slide]
        if picks:
            parts.append(store.read(slide, scale, picks))
    patches = torch.from_numpy(np.concatenate(parts)).permute(0, 3, 1, 2).contiguous()
    return patches, sorted({s for s, _ in index})


def _lr_at(step: int, total: int, warmup: int, lr: float) -> float:
    if step < warmup:
        return lr * (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return lr * 0.5 * (1.0 + math.cos(math.pi * progress))


def pretrain(
    store: str | Path,
    out_dir: str | Path,
    dataset: str,
    *,
    encoder: str,
    method: str,
    scale: str,
    epochs: int,
    batch_size: int,
    image_size: int,
    crop_scale: float,
    colour_jitter: float,
    lr: float,
    weight_decay: float,
    warmup_epochs: int,
    temperature: float,
    projection_dim: int,
    max_patches: int | None,
    amp: str,
    seed: int,
    device: str,
    threads: int = 1,
) -> dict:
    """Train ``encoder`` by SimCLR on ``store``; write ``encoder.pt`` (the encoder's state dict,
    loadable by abmilx.models.weights), ``record.json`` (what it was trained on, how, and the
    loss) and ``train_log.csv`` (loss per epoch) into ``out_dir``. Returns the record.

    The keywords are a ``pretrain`` entry of the config (less ``dataset``), whose schema
    (``$defs/pretrain_run``) holds their defaults (:func:`abmilx.config.schema_defaults`).
    """
    if method not in METHODS:
        raise ValueError(f"pretraining method {method!r} is unknown; known: {', '.join(METHODS)}")
    started = time.perf_counter()
    set_threads(threads)
    seed_everything(seed)
    torch_device = resolve_device(device)
    amp_dtype = resolve_amp(amp, torch_device)
    patch_store = PatchStore(str(store))
    patches, slide_ids = read_patches(patch_store, scale, max_patches, seed)
    if len(patches) < 2 * batch_size:
        batch_size = max(2, len(patches) // 2)
        log.info("few patches (%d): batch size lowered to %d", len(patches), batch_size)
    model = create_encoder(encoder, weights="random").to(torch_device)
    head = projection_head(model.out_dim, projection_dim).to(torch_device)
    parameters = [*model.parameters(), *head.parameters()]
    optimizer = torch.optim.AdamW(parameters, lr=lr, weight_decay=weight_decay)
    generator = torch.Generator().manual_seed(seed)
    steps_per_epoch = len(patches) // batch_size
    total, warmup = epochs * steps_per_epoch, warmup_epochs * steps_per_epoch
    log.info(
        "SimCLR %s on %d patches of %d slides: %d epochs x %d steps of %d",
        encoder, len(patches), len(slide_ids), epochs, steps_per_epoch, batch_size,
    )  # fmt: skip
    history, step = [], 0
    model.train()
    head.train()
    for epoch in range(epochs):
        order = torch.randperm(len(patches), generator=generator)
        losses = []
        for batch in order[: steps_per_epoch * batch_size].view(steps_per_epoch, batch_size):
            for group in optimizer.param_groups:
                group["lr"] = _lr_at(step, total, warmup, lr)
            images = patches[batch]
            views = torch.cat(
                [ssl_view(images, image_size, crop_scale, colour_jitter, generator) for _ in "ab"]
            ).to(torch_device)
            with autocast(torch_device, amp_dtype):
                z = head(model(model.normalize(views)))
            loss = nt_xent(*z.chunk(2), temperature)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            losses.append(loss.item())
            step += 1
        history.append(
            {
                "epoch": epoch,
                "loss": float(np.mean(losses)),
                "seconds": round(time.perf_counter() - started, 2),
            }
        )
        log.info("epoch %d: loss %.4f", epoch, history[-1]["loss"])

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    checkpoint = out_dir / CHECKPOINT
    with written_whole(checkpoint) as partial:
        torch.save({k: v.detach().cpu() for k, v in model.state_dict().items()}, partial)
    with open(out_dir / HISTORY, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=["epoch", "loss", "seconds"])
        writer.writeheader()
        writer.writerows(history)
    record = {
        "purpose": "stand-in for ImageNet/foundation-model weights (the demo cannot download "
        "them): self-supervised on a separate generated cohort, never on evaluation slides",
        "dataset": dataset,
        "store": str(store),
        "slide_ids": slide_ids,
        "n_slides": len(slide_ids),
        "n_patches": len(patches),
        "scale": scale,
        "mpp": float(patch_store.meta["scales"][scale]["mpp"]),
        "method": method,
        "encoder": encoder,
        "epochs": epochs,
        "steps": step,
        "seed": seed,
        "settings": {
            "batch_size": batch_size,
            "image_size": image_size,
            "crop_scale": crop_scale,
            "colour_jitter": colour_jitter,
            "lr": lr,
            "weight_decay": weight_decay,
            "warmup_epochs": warmup_epochs,
            "temperature": temperature,
            "projection_dim": projection_dim,
            "max_patches": max_patches,
            "amp": amp,
        },
        "loss_first_epoch": history[0]["loss"] if history else None,
        "loss_last_epoch": history[-1]["loss"] if history else None,
        "train_seconds": round(time.perf_counter() - started, 2),
        "code_digest": code_digest("abmilx.pretrain"),
        "checkpoint_sha256": file_sha256(checkpoint),
    }
    (out_dir / RECORD).write_text(json.dumps(record, indent=1) + "\n")
    return record
