"""Training views of a batch of uint8 patches: a shift, RandomResizedCrop and flips (as the
official code).

Everything is done for the whole batch at once, on whatever device the patches are: the crop
parameters are drawn as tensors (torchvision's rule, vectorised), and all crops are resized in
one `roi_align` call, so there is no per-patch Python in the hot loop. Parameters are drawn per
patch by default. `chunks > 0` reproduces the official batch-mode augmentation instead: the
step's patches are split into that many contiguous chunks that share one crop, and flips hit a
random half of the patches (docs/method.md; the official value is 4).
"""

from __future__ import annotations

import math

import torch
from torchvision.ops import roi_align

RATIO = (3.0 / 4.0, 4.0 / 3.0)
TRIES = 10  # as torchvision: then a central crop


def random_resized_crop_boxes(
    count: int,
    height: int,
    width: int,
    scale: tuple[float, float],
    generator: torch.Generator,
    ratio: tuple[float, float] = RATIO,
) -> torch.Tensor:
    """(count, 4) int64 (top, left, h, w) crops covering a `scale` fraction of the area.

    Torchvision's RandomResizedCrop rule for `count` patches at once: of 10 tries of (area,
    log-aspect), the first that fits; else a central crop with the aspect clamped to `ratio`.
    Drawn from an explicit (CPU) generator, so workers and resumed runs are reproducible.
    """
    area = height * width
    target = area * (
        scale[0] + (scale[1] - scale[0]) * torch.rand(count, TRIES, generator=generator)
    )
    log_lo, log_hi = math.log(ratio[0]), math.log(ratio[1])
    aspect = torch.exp(log_lo + (log_hi - log_lo) * torch.rand(count, TRIES, generator=generator))
    w = torch.round(torch.sqrt(target * aspect)).long()
    h = torch.round(torch.sqrt(target / aspect)).long()
    fits = (w > 0) & (w <= width) & (h > 0) & (h <= height)
    first = fits.long().argmax(dim=1, keepdim=True)  # index of the first try that fits
    h, w = h.gather(1, first)[:, 0], w.gather(1, first)[:, 0]
    in_ratio = width / height
    if in_ratio < ratio[0]:
        central = (round(width / ratio[0]), width)
    elif in_ratio > ratio[1]:
        central = (height, round(height * ratio[1]))
    else:
        central = (height, width)
    fallback = ~fits.any(dim=1)
    h = torch.where(fallback, central[0], h)
    w = torch.where(fallback, central[1], w)
    top = (torch.rand(count, generator=generator) * (height - h + 1)).long()
    left = (torch.rand(count, generator=generator) * (width - w + 1)).long()
    top = torch.where(fallback, (height - h) // 2, top)
    left = torch.where(fallback, (width - w) // 2, left)
    return torch.stack([top, left, h, w], dim=1)


def random_resized_crop_params(
    height: int,
    width: int,
    scale: tuple[float, float],
    generator: torch.Generator,
    ratio: tuple[float, float] = RATIO,
) -> tuple[int, int, int, int]:
    """(top, left, h, w) of one crop; see `random_resized_crop_boxes`."""
    box = random_resized_crop_boxes(1, height, width, scale, generator, ratio)[0]
    top, left, h, w = (int(v) for v in box)
    return top, left, h, w


def resized_crops(images: torch.Tensor, boxes: torch.Tensor, size: int) -> torch.Tensor:
    """Crop box i (top, left, h, w) of patch i and resize it to size x size, all in one call.

    Output pixel i samples the patch bilinearly at top + (i + 1/2) h / size - 1/2 (half-pixel
    centres, as `F.interpolate(align_corners=False)`, but edge samples may blend with the pixels
    just outside the crop rather than repeat its border); where a crop is shrunk, each output
    pixel averages ceil(crop / size)^2 such samples (antialiasing). uint8 in, uint8 out;
    computed in float32 on the patches' device.
    """
    boxes = boxes.to(device=images.device, dtype=torch.float32)
    top, left, h, w = boxes.unbind(dim=1)
    index = torch.arange(len(images), device=images.device, dtype=torch.float32)
    rois = torch.stack([index, left, top, left + w, top + h], dim=1)
    out = roi_align(images.float(), rois, size, spatial_scale=1.0, sampling_ratio=-1, aligned=True)
    return out.round_().clamp_(0, 255).to(torch.uint8)


def random_resized_crop(
    images: torch.Tensor,
    size: int,
    crop_scale: float,
    generator: torch.Generator,
    chunks: int = 0,
) -> torch.Tensor:
    """(M, 3, H, W) uint8 -> (M, 3, size, size) uint8: a random crop of each, resized."""
    height, width = images.shape[-2:]
    count = len(images)
    if chunks > 0:  # one crop per contiguous chunk, as torch.tensor_split cuts them
        n_groups = min(chunks, count)
        boxes = random_resized_crop_boxes(n_groups, height, width, (crop_scale, 1.0), generator)
        sizes = [len(part) for part in torch.arange(count).tensor_split(n_groups)]
        boxes = boxes.repeat_interleave(torch.tensor(sizes), dim=0)
    else:
        boxes = random_resized_crop_boxes(count, height, width, (crop_scale, 1.0), generator)
    return resized_crops(images, boxes, size)


def random_shift(
    images: torch.Tensor, fraction: float, generator: torch.Generator, chunks: int = 0
) -> torch.Tensor:
    """Shift each patch (each chunk, with `chunks`) by a random whole number of pixels, up to
    `fraction` of its side in each direction, filling with zeros: torchvision's RandomAffine
    translate with no rotation, as the official R50 subtyping config's `weak_strong`."""
    count, (height, width) = len(images), images.shape[-2:]
    n_groups = min(chunks, count) if chunks > 0 else count
    limits = torch.tensor([fraction * height, fraction * width])
    shifts = torch.round((torch.rand(n_groups, 2, generator=generator) * 2 - 1) * limits).long()
    sizes = [len(part) for part in torch.arange(count).tensor_split(n_groups)]
    out = torch.zeros_like(images)
    start = 0
    for (dy, dx), size in zip(shifts.tolist(), sizes, strict=True):
        rows = slice(start, start + size)
        out[rows, :, max(dy, 0) : height + min(dy, 0), max(dx, 0) : width + min(dx, 0)] = images[
            rows, :, max(-dy, 0) : height - max(dy, 0), max(-dx, 0) : width - max(dx, 0)
        ]
        start += size
    return out


def random_flips(images: torch.Tensor, generator: torch.Generator, chunks: int = 0) -> torch.Tensor:
    """Horizontal then vertical flip, each with probability 1/2 (exactly half in chunk mode)."""
    count = len(images)
    for dim in (-1, -2):
        if chunks > 0:
            mask = torch.zeros(count, dtype=torch.bool)
            mask[torch.randperm(count, generator=generator)[: round(0.5 * count)]] = True
        else:
            mask = torch.rand(count, generator=generator) < 0.5
        mask = mask.to(images.device).view(-1, 1, 1, 1)
        images = torch.where(mask, images.flip(dim), images)
    return images


def training_view(
    images: torch.Tensor,
    size: int,
    crop_scale: float,
    flips: bool,
    generator: torch.Generator,
    chunks: int = 0,
    shift: float = 0.0,
) -> torch.Tensor:
    """The training augmentation of a batch of patches (no colour augmentation, as the paper):
    an optional random shift, the random resized crop, optional flips.

    `generator` is a CPU generator (the parameters are drawn on the CPU, then moved): the same
    seed gives the same views on every device.
    """
    if shift > 0:
        images = random_shift(images, shift, generator, chunks)
    images = random_resized_crop(images, size, crop_scale, generator, chunks)
    if flips:
        images = random_flips(images, generator, chunks)
    return images
