"""Training views on uint8 tensors: RandomResizedCrop and flips (reference §5.3).

Parameters are drawn per patch by default. `chunks > 0` reproduces the official batch-mode
augmentation instead: the step's patches are split into that many contiguous chunks that share
one crop, and flips hit a random half of the patches (reference §8.7; the official value is 4).
"""

from __future__ import annotations

import math

import torch
from torchvision.transforms.v2 import functional as TF

RATIO = (3.0 / 4.0, 4.0 / 3.0)


def _uniform(low: float, high: float, generator: torch.Generator) -> float:
    return low + (high - low) * torch.rand(1, generator=generator).item()


def _randint(high: int, generator: torch.Generator) -> int:
    return int(torch.randint(0, high, (1,), generator=generator).item())


def random_resized_crop_params(
    height: int,
    width: int,
    scale: tuple[float, float],
    generator: torch.Generator,
    ratio: tuple[float, float] = RATIO,
) -> tuple[int, int, int, int]:
    """(top, left, h, w) of a crop covering a `scale` fraction of the area with aspect in `ratio`.

    Same rule as torchvision's RandomResizedCrop (10 tries, then a central crop), but drawing
    from an explicit generator so workers and resumed runs are reproducible.
    """
    area = height * width
    log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
    for _ in range(10):
        target_area = area * _uniform(scale[0], scale[1], generator)
        aspect = math.exp(_uniform(log_ratio[0], log_ratio[1], generator))
        w = round(math.sqrt(target_area * aspect))
        h = round(math.sqrt(target_area / aspect))
        if 0 < w <= width and 0 < h <= height:
            return _randint(height - h + 1, generator), _randint(width - w + 1, generator), h, w
    in_ratio = width / height
    if in_ratio < ratio[0]:
        w, h = width, round(width / ratio[0])
    elif in_ratio > ratio[1]:
        h, w = height, round(height * ratio[1])
    else:
        w, h = width, height
    return (height - h) // 2, (width - w) // 2, h, w


def random_resized_crop(
    images: torch.Tensor,
    size: int,
    crop_scale: float,
    generator: torch.Generator,
    chunks: int = 0,
) -> torch.Tensor:
    """(M, 3, H, W) uint8 -> (M, 3, size, size) uint8, bilinear with antialias."""
    height, width = images.shape[-2:]
    scale = (crop_scale, 1.0)
    groups = torch.tensor_split(images, min(chunks, len(images))) if chunks > 0 else images
    out = []
    for group in groups:
        top, left, h, w = random_resized_crop_params(height, width, scale, generator)
        out.append(TF.resized_crop(group, top, left, h, w, [size, size], antialias=True))
    return torch.cat(out) if chunks > 0 else torch.stack(out)


def random_flips(images: torch.Tensor, generator: torch.Generator, chunks: int = 0) -> torch.Tensor:
    """Horizontal then vertical flip, each with probability 1/2 (exactly half in chunk mode)."""
    count = len(images)
    for dim in (-1, -2):
        if chunks > 0:
            mask = torch.zeros(count, dtype=torch.bool)
            mask[torch.randperm(count, generator=generator)[: round(0.5 * count)]] = True
        else:
            mask = torch.rand(count, generator=generator) < 0.5
        images = torch.where(mask.view(-1, 1, 1, 1), images.flip(dim), images)
    return images


def training_view(
    images: torch.Tensor,
    size: int,
    crop_scale: float,
    flips: bool,
    generator: torch.Generator,
    chunks: int = 0,
) -> torch.Tensor:
    """The training augmentation of a batch of patches (no colour augmentation, as the paper)."""
    images = random_resized_crop(images, size, crop_scale, generator, chunks)
    if flips:
        images = random_flips(images, generator, chunks)
    return images
