"""torchvision ResNets as patch encoders, optionally truncated after layer3 (as in the paper).

The paper (and CLAM) drop the last stage: a 224 px patch gives a 14x14 layer3 map that is
average-pooled to 256-d (ResNet-18) or 1024-d (ResNet-50). Module names follow torchvision,
so torchvision, timm (`features_only`) and our own E2E checkpoints load without renaming.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import torch
from torch import nn

from ..registry import register_encoder
from ..weights import WeightsUnavailableError, load_matching, read_checkpoint, strip_prefixes

if TYPE_CHECKING:
    import torchvision
    from torchvision.models import WeightsEnum

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class ResNetEncoder(nn.Module):
    """ResNet trunk + global average pooling: (B,3,H,W) normalised RGB -> (B, out_dim).

    `weights`: "random" (torchvision's own init: Kaiming conv, BN 1/0), "imagenet" (the
    torchvision weights named by `imagenet_weights`, e.g. "ResNet18_Weights.IMAGENET1K_V1",
    downloaded or read from $TORCH_HOME/hub/checkpoints), or the path of a local checkpoint.
    torchvision is imported only here (~1.5 CPU-s), not by every process that imports the
    model registry (two-stage training and evaluation never build a ResNet). The input must already be normalised; use `normalize` on RGB in
    [0, 1]. Works for any input of at least 32 px and with channels_last tensors.
    """

    def __init__(
        self,
        arch: str,
        imagenet_weights: str,
        last_stage: int,
        weights: str | Path = "random",
    ):
        super().__init__()
        if last_stage not in (3, 4):
            raise ValueError(f"last_stage must be 3 or 4, got {last_stage}")
        import torchvision

        trunk = getattr(torchvision.models, arch)(weights=None)
        self.conv1, self.bn1, self.relu, self.maxpool = (
            trunk.conv1,
            trunk.bn1,
            trunk.relu,
            trunk.maxpool,
        )
        self.stages = [f"layer{i}" for i in range(1, last_stage + 1)]
        for stage in self.stages:
            setattr(self, stage, getattr(trunk, stage))
        self.out_dim, self.input_size = self._infer_out_dim(trunk, last_stage), 224
        self.mean, self.std = IMAGENET_MEAN, IMAGENET_STD
        self.register_buffer("_mean", torch.tensor(self.mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("_std", torch.tensor(self.std).view(1, 3, 1, 1), persistent=False)
        self.weights = str(weights)
        self.load_report: dict[str, list[str]] = {"missing": [], "unexpected": []}
        dropped = (*(f"layer{i}." for i in range(last_stage + 1, 5)), "fc.")
        if weights == "imagenet":
            weights_enum = torchvision.models.get_weight(imagenet_weights)
            self.load_report = load_matching(
                self, _imagenet_state_dict(weights_enum), str(weights_enum), dropped
            )
        elif weights != "random":
            self.load_report = load_matching(
                self, strip_prefixes(read_checkpoint(weights)), str(weights), dropped
            )

    @staticmethod
    def _infer_out_dim(trunk: torchvision.models.ResNet, last_stage: int) -> int:
        last_block = getattr(trunk, f"layer{last_stage}")[-1]
        last_bn = last_block.bn3 if hasattr(last_block, "bn3") else last_block.bn2
        return last_bn.num_features

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        """ImageNet normalisation of RGB input in [0, 1]."""
        return (x - self._mean.to(x.dtype)) / self._std.to(x.dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        for stage in self.stages:
            x = getattr(self, stage)(x)
        return x.mean(dim=(2, 3))


def _imagenet_state_dict(weights_enum: WeightsEnum) -> dict[str, torch.Tensor]:
    """torchvision weights via its cache/downloader, or a WeightsUnavailableError saying why."""
    file_name = weights_enum.url.rsplit("/", 1)[-1]
    cache_file = Path(torch.hub.get_dir()) / "checkpoints" / file_name
    try:
        return weights_enum.get_state_dict(progress=False, check_hash=True)
    except Exception as error:  # URLError, hash mismatch, truncated file, ...
        raise WeightsUnavailableError(
            f"ImageNet weights {weights_enum} are unavailable ({type(error).__name__}: {error}). "
            f"Missing file: {cache_file}. Either download {weights_enum.url} on a machine with "
            f"internet and copy it to {cache_file} (set $TORCH_HOME to change "
            f"{Path(torch.hub.get_dir()).parent}), or set the encoder weights to the path of a "
            "local checkpoint, or choose weights: random."
        ) from error


@register_encoder("resnet18_layer3")
def resnet18_layer3(weights: str = "random") -> ResNetEncoder:
    """ResNet-18 up to layer3, 256-d; ImageNet = IMAGENET1K_V1 (timm resnet18.tv_in1k)."""
    return ResNetEncoder("resnet18", "ResNet18_Weights.IMAGENET1K_V1", 3, weights)


@register_encoder("resnet50_layer3")
def resnet50_layer3(weights: str = "random") -> ResNetEncoder:
    """ResNet-50 up to layer3, 1024-d; ImageNet = IMAGENET1K_V2 (timm resnet50.tv2_in1k)."""
    return ResNetEncoder("resnet50", "ResNet50_Weights.IMAGENET1K_V2", 3, weights)


@register_encoder("resnet50_layer3_v1")
def resnet50_layer3_v1(weights: str = "random") -> ResNetEncoder:
    """ResNet-50 up to layer3, 1024-d, ImageNet = IMAGENET1K_V1: CLAM's truncated R50, the
    feature extractor of the paper's two-stage baselines (the E2E R50 uses V2 weights)."""
    return ResNetEncoder("resnet50", "ResNet50_Weights.IMAGENET1K_V1", 3, weights)


@register_encoder("resnet18")
def resnet18(weights: str = "random") -> ResNetEncoder:
    """Full ResNet-18 trunk (no fc), 512-d; ImageNet = IMAGENET1K_V1."""
    return ResNetEncoder("resnet18", "ResNet18_Weights.IMAGENET1K_V1", 4, weights)


@register_encoder("resnet50")
def resnet50(weights: str = "random") -> ResNetEncoder:
    """Full ResNet-50 trunk (no fc), 2048-d; ImageNet = IMAGENET1K_V2."""
    return ResNetEncoder("resnet50", "ResNet50_Weights.IMAGENET1K_V2", 4, weights)
