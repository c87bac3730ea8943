"""Cost as the paper counts it (Sec. 4 and App. B of the ABMILX paper), beside our own figures.

- #Parameter: the encoder's parameters + the aggregator's, printed like the paper's "12M+0.80M".
  The paper counts the full torchvision ResNet (its classification layer included: 11.7M for
  ResNet-18, 25.6M for ResNet-50) even where the trained encoder stops after layer 3.
- FLOPs: multiply-accumulates of one forward of a 1 x 512 x 3 x 224 x 224 input (the 512
  patches an E2E step samples) through the full encoder and the aggregator: 0.93T for
  ResNet-18, 2.1T for ResNet-50. torch's counter gives 2 per multiply-accumulate; we halve it.
  The encoder is counted on PyTorch's meta device (shapes only, no arithmetic), so this costs
  about a second even for ResNet-50; the aggregator runs for real on 512 random features.
- IT: seconds of one forward of 1 x 10,000 x 3 x 224 x 224 (the paper's clinical-sized slide)
  through the run's own encoder and aggregator, in chunks of 512 on the evaluation device; only
  when ``evaluation.paper_inference_time`` is set (about 18 TMAC for ResNet-18: minutes on a
  CPU).
"""

from __future__ import annotations

import math
import time

import torch
from torch import nn

from abmilx.models import create_encoder
from abmilx.models.mil.base import call_mil

PAPER_PATCHES = 512
PAPER_IMAGE_SIZE = 224
INFERENCE_PATCHES = 10_000
# The paper counts every ResNet variant (truncated after layer 3, V1 or V2 weights) as the full
# torchvision architecture of its depth.
FULL_RESNETS = ("resnet18", "resnet50")


def paper_encoder_name(name: str) -> str:
    """``resnet50_layer3_v1`` -> ``resnet50``; other encoders are counted as they are."""
    return next((full for full in FULL_RESNETS if name.startswith(full)), name)


def short_count(value: float, unit: str = "M") -> str:
    """12_000_000 -> '12M', 800_000 -> '0.80M' (the paper's style), 9.3e11 -> '0.93T'."""
    scale = {"M": 1e6, "T": 1e12}[unit]
    scaled = value / scale
    return f"{scaled:.0f}{unit}" if scaled >= 10 else f"{scaled:.2f}{unit}"


def paper_encoder(name: str) -> nn.Module:
    """The encoder ``name`` as the paper counts it, with random weights."""
    import torchvision

    full = paper_encoder_name(name)
    if full in FULL_RESNETS:
        return getattr(torchvision.models, full)()
    return create_encoder(name, weights="random")


def grid_coords(n: int, step: int = PAPER_IMAGE_SIZE) -> torch.Tensor:
    """(1, n, 2) level-0 coordinates of n patches on a square grid, for aggregators that use them."""
    side = math.ceil(math.sqrt(n))
    ys, xs = torch.meshgrid(torch.arange(side), torch.arange(side), indexing="ij")
    return (torch.stack([xs.flatten(), ys.flatten()], dim=1)[:n] * step).unsqueeze(0)


def aggregator_macs(aggregator: nn.Module, feature_dim: int) -> float:
    from torch.utils.flop_counter import FlopCounterMode

    parameter = next(aggregator.parameters(), None)
    device = parameter.device if parameter is not None else torch.device("cpu")
    features = torch.randn(1, PAPER_PATCHES, feature_dim, device=device)
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        call_mil(aggregator.eval(), features, coords=grid_coords(PAPER_PATCHES).to(device))
    return counter.get_total_flops() / 2


def encoder_macs(encoder_name: str) -> tuple[int, float]:
    """(parameters, multiply-accumulates of 512 patches) of the paper's encoder, counted on the
    meta device."""
    from torch.utils.flop_counter import FlopCounterMode

    with torch.device("meta"):
        encoder = paper_encoder(encoder_name)
        images = torch.empty(PAPER_PATCHES, 3, PAPER_IMAGE_SIZE, PAPER_IMAGE_SIZE)
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        encoder(images)
    return sum(p.numel() for p in encoder.parameters()), counter.get_total_flops() / 2


def paper_cost(encoder_name: str | None, aggregator: nn.Module, feature_dim: int) -> dict:
    """#Parameter and FLOPs of ``encoder_name`` + ``aggregator`` as the paper counts them.

    Features that do not name their encoder (made elsewhere) give the aggregator's share only,
    and the printed figures say so ('?+0.66M', 'aggregator only')."""
    aggregator_params = sum(p.numel() for p in aggregator.parameters())
    macs = aggregator_macs(aggregator, feature_dim)
    if encoder_name is None:
        return {
            "paper_encoder": None,
            "paper_params_aggregator": aggregator_params,
            "paper_params": f"?+{short_count(aggregator_params)}",
            "paper_macs": macs,
            "paper_flops": f"{short_count(macs, 'T')} (aggregator only)",
        }
    encoder_params, encoder_count = encoder_macs(encoder_name)
    return {
        "paper_encoder": paper_encoder_name(encoder_name),
        "paper_params_encoder": encoder_params,
        "paper_params_aggregator": aggregator_params,
        "paper_params": f"{short_count(encoder_params)}+{short_count(aggregator_params)}",
        "paper_macs": encoder_count + macs,
        "paper_flops": short_count(encoder_count + macs, "T"),
    }


def inference_seconds(encoder: nn.Module, aggregator: nn.Module, device: torch.device) -> float:
    """Seconds of one forward of INFERENCE_PATCHES random 224-px patches (encoder in chunks of
    PAPER_PATCHES, then the aggregator on all their features)."""
    encoder, aggregator = encoder.eval().to(device), aggregator.eval().to(device)
    generator = torch.Generator(device="cpu").manual_seed(0)
    with torch.no_grad():
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        started = time.perf_counter()
        features = []
        for first in range(0, INFERENCE_PATCHES, PAPER_PATCHES):
            n = min(PAPER_PATCHES, INFERENCE_PATCHES - first)
            chunk = torch.rand(n, 3, PAPER_IMAGE_SIZE, PAPER_IMAGE_SIZE, generator=generator)
            features.append(encoder(chunk.to(device)))
        call_mil(
            aggregator,
            torch.cat(features).unsqueeze(0),
            coords=grid_coords(INFERENCE_PATCHES).to(device),
        )
        if device.type == "cuda":
            torch.cuda.synchronize(device)
    return time.perf_counter() - started
