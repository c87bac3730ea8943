"""The end-to-end model: patch encoder + MIL aggregator trained jointly (paper Sec. 3.1)."""

from __future__ import annotations

import torch
from torch import nn

from abmilx.models import MILOutput, call_mil


class E2EModel(nn.Module):
    """uint8 patches (B, N, 3, H, W) -> MILOutput.

    The encoder runs on chunks of `patch_batch_size` patches, with gradients, and its features
    are viewed (B, N, d) for one batched MIL call. BatchNorm statistics come from each chunk.
    `freeze_encoder` (the paper's "frozen encoder" ablation) fixes the encoder's weights and
    keeps it in eval mode (BatchNorm running statistics fixed too); it then runs without
    gradient, so only the MIL trains and no encoder backward is paid for.
    """

    def __init__(
        self,
        encoder: nn.Module,
        mil: nn.Module,
        patch_batch_size: int = 512,
        channels_last: bool = True,
        freeze_encoder: bool = False,
    ) -> None:
        super().__init__()
        self.encoder = encoder
        self.mil = mil
        self.patch_batch_size = patch_batch_size
        self.channels_last = channels_last
        self.freeze_encoder = freeze_encoder
        if freeze_encoder:
            self.encoder.requires_grad_(False)
            self.encoder.eval()

    def train(self, mode: bool = True) -> E2EModel:
        """As nn.Module.train, but a frozen encoder stays in eval mode."""
        super().train(mode)
        if self.freeze_encoder:
            self.encoder.eval()
        return self

    def prepare(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 (M, 3, H, W) -> normalised float input of the encoder."""
        x = self.encoder.normalize(images.float().div_(255.0))
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return x

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        """(M, 3, H, W) uint8 -> (M, d) features, chunked."""
        chunks = torch.split(images, self.patch_batch_size)
        with torch.set_grad_enabled(torch.is_grad_enabled() and not self.freeze_encoder):
            return torch.cat([self.encoder(self.prepare(chunk)) for chunk in chunks])

    def forward(self, images: torch.Tensor, labels: torch.Tensor | None = None) -> MILOutput:
        batch, n_patches = images.shape[:2]
        features = self.encode(images.flatten(0, 1))
        return call_mil(self.mil, features.view(batch, n_patches, -1), labels=labels)
