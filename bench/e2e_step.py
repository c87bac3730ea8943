"""E2E training step with the full data path vs the same step on tensors already in memory.

Full path: `MrisBags` reads and decodes the sampled patches from an LMDB store in DataLoader
worker processes, `TrainCollate` augments each batch there, and the model steps (forward,
backward, optimizer) while the workers prepare the next batches. Pure model: the same step
repeated on one batch that is already decoded and augmented in memory, timed before and
after the full path (medians), so that a change in the machine's load weighs on both. The
ratio of their rates is what the data path costs: limit >= 0.8 on CPU at the demo's
resolution and sizes (config.yaml), >= 0.9 on a GPU at 224 px (bf16 autocast), where
patches/s are printed too.

Run: ``.venv/bin/python -m bench.e2e_step [--steps 5] [--threads 1]``
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, RandomSampler

from abmilx.e2e.data import MrisBags, TrainCollate
from abmilx.e2e.model import E2EModel
from abmilx.models import create_encoder, create_mil
from abmilx.training.bags import Bag
from bench.common import DEMO_E2E, amp_dtype, demo_config, device, verdict, write_store

CPU_LIMIT, GPU_LIMIT = 0.8, 0.9
GPU_SETTINGS = {"train_size": 224, "n_patches": 512, "batch_size": 3, "amp": "bf16"}
GPU_PATCH_SIZE = 256


def settings_for(on: torch.device) -> tuple[dict, int]:
    """The demo E2E experiment's settings and patch size; on a GPU, the paper's 224 px sizes."""
    config = demo_config()
    settings = dict(config["experiments"][DEMO_E2E]["settings"])
    patch_size = config["tiling"]["patch_size"]
    if on.type == "cuda":
        settings.update(GPU_SETTINGS)
        patch_size = GPU_PATCH_SIZE
    return settings, patch_size


def make_step(settings: dict, on: torch.device):
    """One training step of encoder + MIL on a (B, N, 3, S, S) uint8 batch; returns the loss."""
    torch.manual_seed(0)
    encoder = create_encoder(settings["encoder"], weights="random")
    mil = create_mil(settings["mil"], encoder.out_dim, 2, **settings["mil_kwargs"])
    model = E2EModel(encoder, mil, settings["patch_batch_size"], settings["channels_last"])
    model = model.to(on, memory_format=torch.channels_last).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    dtype = amp_dtype(settings["amp"], on)
    scaler = torch.amp.GradScaler(on.type, enabled=dtype == torch.float16)

    def step(images: torch.Tensor, labels: torch.Tensor) -> float:
        images = images.to(on, non_blocking=True)
        labels = labels.to(on, non_blocking=True)
        with torch.autocast(on.type, dtype=dtype or torch.float32, enabled=dtype is not None):
            loss = F.cross_entropy(model(images).logits.float(), labels)
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
        return loss.item()  # waits for the device

    return step


def timed(batches, step, warmup: int) -> list[float]:
    """Seconds per step after `warmup` steps, the wait for each batch included."""
    times, last = [], time.perf_counter()
    for index, batch in enumerate(batches):
        step(batch["images"], batch["label"])
        now = time.perf_counter()
        if index >= warmup:
            times.append(now - last)
        last = now
    return times


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=5, help="timed steps of each kind")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1, help="intra-op threads of the model")
    args = parser.parse_args(argv)
    on = device()
    torch.set_num_threads(args.threads)
    settings, patch_size = settings_for(on)
    batch_size, n_patches = settings["batch_size"], settings["n_patches"]
    n_slides = max(8, 2 * batch_size)
    low = n_patches // settings["scale_ratio"] if settings["scale_ratio"] else 0
    with tempfile.TemporaryDirectory() as tmp:
        counts = {"main": 2 * n_patches, **({"low": 2 * low} if low else {})}
        store = write_store(
            Path(tmp) / "e2e.lmdb", patch_size, {f"s{i}": counts for i in range(n_slides)}
        )
        bags = [Bag(f"s{i}", (f"s{i}",), i % 2) for i in range(n_slides)]
        scales = {"main": "main", "low": "low"} if low else {"main": "main"}
        dataset = MrisBags(store, bags, n_patches, settings["scale_ratio"], scales, seed=0)
        collate = TrainCollate(
            settings["train_size"],
            settings["crop_scale"],
            settings["flips"],
            settings["aug_chunks"],
        )
        n_steps = args.warmup + args.steps
        step = make_step(settings, on)
        batch = collate([dataset[i % n_slides] for i in range(batch_size)])
        pure = timed([batch] * n_steps, step, args.warmup)  # before and after: load drifts
        workers = settings["num_workers"]
        loader = DataLoader(
            dataset,
            batch_size=batch_size,
            sampler=RandomSampler(
                dataset, replacement=True, num_samples=batch_size * n_steps,
                generator=torch.Generator().manual_seed(0),
            ),
            num_workers=workers,
            collate_fn=collate,
            pin_memory=on.type == "cuda",
            prefetch_factor=3 if workers else None,
        )  # fmt: skip
        full = timed(loader, step, args.warmup)
        pure += timed([batch] * n_steps, step, args.warmup)
    pure_s, full_s = statistics.median(pure), statistics.median(full)
    patches = batch_size * n_patches
    ratio = pure_s / full_s
    print(
        f"  {on.type}, {settings['encoder']} + {settings['mil']}, {batch_size} x {n_patches} "
        f"patches of {settings['train_size']} px (store {patch_size} px), amp {settings['amp']}, "
        f"{workers} workers, {args.threads} thread(s): full path {full_s:.3f} s/step "
        f"({patches / full_s:.0f} patches/s), pure model {pure_s:.3f} s/step "
        f"({patches / pure_s:.0f} patches/s)"
    )
    limit = GPU_LIMIT if on.type == "cuda" else CPU_LIMIT
    verdict("full-path step rate / pure-model step rate", ratio, limit, at_least=True)
    return {
        "device": on.type,
        "full_s_per_step": full_s,
        "pure_s_per_step": pure_s,
        "full_patches_per_s": patches / full_s,
        "pure_patches_per_s": patches / pure_s,
        "ratio": ratio,
    }


if __name__ == "__main__":
    main()
