"""What the speed benches share: the demo's settings, a synthetic patch store, the verdict line."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from abmilx.config import REPO_ROOT, load_config
from abmilx.experiments import resolve_experiments
from abmilx.patches.store import PatchStoreWriter
from bench.tiling import texture

DEMO_CONFIG = REPO_ROOT / "config.yaml"
DEMO_E2E = "abmilx_r18_e2e"
DEMO_FEATURES = "r50_layer3"


def demo_config() -> dict:
    """The demo config with every schema default filled in and its experiments resolved into
    runs (presets, bases, grids), as the workflow sees it."""
    config = load_config(DEMO_CONFIG)
    config["experiments"] = resolve_experiments(config).runs
    return config


def device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def amp_dtype(amp: str, on: torch.device) -> torch.dtype | None:
    """The config's amp setting: auto = fp16 on CUDA and fp32 on CPU."""
    if amp == "auto":
        return torch.float16 if on.type == "cuda" else None
    return {"off": None, "fp16": torch.float16, "bf16": torch.bfloat16}[amp]


def write_store(
    path: Path, patch_size: int, slides: dict[str, dict[str, int]], seed: int = 0
) -> Path:
    """A patch store of H&E-like texture: slides = {slide_id: {scale: n_patches}}."""
    rng = np.random.default_rng(seed)
    field = texture(patch_size * 8, seed)
    scales = sorted({scale for counts in slides.values() for scale in counts})
    total = sum(sum(counts.values()) for counts in slides.values())
    with PatchStoreWriter(
        path,
        patch_size=patch_size,
        jpeg_quality=90,
        scales={scale: float(2**i) for i, scale in enumerate(scales)},
        expected_patches=total,
    ) as writer:
        for slide_id, counts in slides.items():
            for scale, count in counts.items():
                corners = rng.integers(0, 7 * patch_size, size=(count, 2))
                images = (field[y : y + patch_size, x : x + patch_size] for x, y in corners)
                writer.add_images(slide_id, scale, corners, images)
    return path


def verdict(name: str, value: float, limit: float, *, at_least: bool, unit: str = "") -> bool:
    """Print one line: the measured value beside its limit, and whether it is met."""
    met = value >= limit if at_least else value < limit
    sign = ">=" if at_least else "<"
    print(f"  {name}: {value:.3g}{unit} (limit {sign} {limit:g}{unit}) {'OK' if met else 'MISSED'}")
    return met
