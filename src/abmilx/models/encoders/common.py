"""What the foundation-model encoders share: input normalisation and the three weight sources.

Pathology foundation models are gated downloads, so the usual way to provide them is a local
file; the Hugging Face hub path needs timm + huggingface_hub and an accepted licence, and is
only tried when asked for.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path

import torch
from torch import nn

from ..weights import WeightsUnavailableError, load_matching, read_checkpoint, strip_prefixes

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class NormalizingEncoder(nn.Module):
    """Base with the encoder attributes the pipeline reads: out_dim, mean, std, input_size."""

    def __init__(self, out_dim: int, input_size: int, mean=IMAGENET_MEAN, std=IMAGENET_STD):
        super().__init__()
        self.out_dim, self.input_size = out_dim, input_size
        self.mean, self.std = tuple(mean), tuple(std)
        self.register_buffer("_mean", torch.tensor(self.mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("_std", torch.tensor(self.std).view(1, 3, 1, 1), persistent=False)
        self.weights = "random"
        self.load_report: dict[str, list[str]] = {"missing": [], "unexpected": []}

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        """Channel normalisation of RGB input in [0, 1] with the model's own statistics."""
        return (x - self._mean.to(x.dtype)) / self._std.to(x.dtype)


def load_weights(
    module: NormalizingEncoder,
    weights: str | Path,
    hub: Callable[[], dict[str, torch.Tensor]] | None,
    no_hub_reason: str = "",
    recomputed: Iterable[str] = (),
) -> None:
    """Fill `module` from "random" (keep init), "hub", or a local checkpoint path.

    `recomputed`: key suffixes of buffers that the module derives itself (relative position
    indices, attention masks); checkpoints that store them load without a warning.
    """
    module.weights = str(weights)
    if weights == "random":
        return
    if weights == "hub":
        if hub is None:
            raise WeightsUnavailableError(no_hub_reason)
        state, source = hub(), "the Hugging Face hub"
    else:
        state, source = read_checkpoint(weights), str(weights)
    recomputed = tuple(recomputed)
    state = {k: v for k, v in strip_prefixes(state).items() if not k.endswith(recomputed)}
    module.load_report = load_matching(module, state, source, ignore_unexpected=("head.",))


def timm_hub_state_dict(hub_id: str, model_name: str, **timm_options) -> dict[str, torch.Tensor]:
    """State dict of a timm hub model, or a WeightsUnavailableError saying how to get it."""
    advice = (
        f"Download the {model_name} checkpoint (gated: accept the licence on "
        f"https://huggingface.co/{hub_id.split(':', 1)[1]}) on a machine with internet, copy its "
        "pytorch_model.bin here and set the encoder weights to that file path, or choose "
        "weights: random."
    )
    try:
        import huggingface_hub  # noqa: F401  (timm downloads through it)
        import timm
    except ImportError as error:
        raise WeightsUnavailableError(
            f"weights: hub needs the optional packages timm and huggingface_hub, which are not "
            f"installed ({error}): pip install 'abmilx[hub]'. {advice}"
        ) from error
    try:
        model = timm.create_model(hub_id, pretrained=True, **timm_options)
    except Exception as error:  # no network, no token, licence not accepted, ...
        raise WeightsUnavailableError(
            f"could not load {hub_id} ({type(error).__name__}: {error}). {advice}"
        ) from error
    return model.state_dict()
