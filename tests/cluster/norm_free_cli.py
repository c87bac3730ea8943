"""`python norm_free_cli.py MODULE ARGS...` runs `python -m MODULE ARGS...` with one more encoder.

The encoder, `groupnorm_cnn`, has no BatchNorm: BatchNorm running statistics are per process
under DDP (rank 0's are kept), so only a model without them can predict the same under one and
several processes. Used by test_ddp.py, also as the script that torchrun starts.
"""

import runpy
import sys

from torch import nn

from abmilx.models import register_encoder
from abmilx.models.encoders.common import NormalizingEncoder


class GroupNormCnn(NormalizingEncoder):
    """Two strided 3x3 convolutions with GroupNorm, average-pooled to 32-d."""

    def __init__(self, weights: str = "random") -> None:
        super().__init__(out_dim=32, input_size=32)
        if weights != "random":
            raise ValueError("groupnorm_cnn has random weights only")
        self.body = nn.Sequential(
            nn.Conv2d(3, 16, 3, stride=2, padding=1),
            nn.GroupNorm(4, 16),
            nn.ReLU(),
            nn.Conv2d(16, 32, 3, stride=2, padding=1),
            nn.GroupNorm(4, 32),
            nn.ReLU(),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
        )

    def forward(self, x):
        return self.body(x)


register_encoder("groupnorm_cnn")(GroupNormCnn)

if __name__ == "__main__":
    module, sys.argv = sys.argv[1], [sys.argv[1], *sys.argv[2:]]
    runpy.run_module(module, run_name="__main__", alter_sys=True)
