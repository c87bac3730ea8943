"""Any timm or Hugging Face hub image model as a patch encoder, and the named foundation models.

`timm:<name>` builds a timm architecture (`timm.list_models()`); `hf-hub:<org>/<repo>` builds
the architecture a hub repository's `config.json` names. Both take the model's own
preprocessing (mean, std, input size) from its pretrained config and return timm's pooled
feature (`num_classes=0`). Weights:

- "random": timm's initialisation, drawn after the caller's seed;
- "hub": the pretrained weights, read from the Hugging Face cache (`HF_HOME`/`HF_HUB_CACHE`;
  timm's torch-hub downloads from the torch cache) before any download is tried, and never
  downloaded when `HF_HUB_OFFLINE=1`;
- a path: a checkpoint file (`.safetensors`, `.bin`, `.pth`), or a folder holding one and the
  repository's `config.json` (what `hf download <org>/<repo> --local-dir DIR` writes).

timm and huggingface_hub are the optional `hub` extra; they are imported only when such an
encoder is built, with an error naming the extra when they are missing.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..registry import register_encoder, register_encoder_family
from ..weights import WeightsUnavailableError, load_matching, read_checkpoint, strip_prefixes
from .common import IMAGENET_MEAN, IMAGENET_STD, NormalizingEncoder

TIMM_PREFIX = "timm:"
HUB_PREFIX = "hf-hub:"
IMAGENET = {"mean": IMAGENET_MEAN, "std": IMAGENET_STD}
WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")
"""What hub repositories of timm models hold, in the order they are looked for."""


def import_timm():
    """timm, or an ImportError saying to install the `hub` extra."""
    try:
        import timm
    except ImportError as error:
        raise ImportError(
            "timm and Hugging Face hub encoders need the optional packages timm and "
            "huggingface_hub: install the hub extra (pip install -e '.[hub]') "
            f"({error})"
        ) from error
    return timm


class TimmEncoder(NormalizingEncoder):
    """A timm model without classifier: (B,3,H,W) normalised RGB -> its pooled feature.

    `pooling` "model" keeps the model's own pooling; "cls_mean" concatenates the class token
    and the mean of the patch tokens (register tokens excluded), as Virchow2's authors specify.
    """

    def __init__(self, model: nn.Module, pooling: str = "model"):
        from timm.data import resolve_model_data_config

        data = resolve_model_data_config(model)
        # A model built at another size than its pretrained config's (img_size=...) keeps it.
        size = getattr(getattr(model, "patch_embed", None), "img_size", data["input_size"][1:])
        width = int(model.num_features)
        super().__init__(
            out_dim=2 * width if pooling == "cls_mean" else width,
            input_size=int(size[-1]),
            mean=data["mean"],
            std=data["std"],
        )
        self.model, self.pooling = model, pooling

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.pooling == "model":
            return self.model(x)
        tokens = self.model.forward_features(x)
        patches = tokens[:, self.model.num_prefix_tokens :]
        return torch.cat([tokens[:, 0], patches.mean(dim=1)], dim=-1)


def _offline() -> bool:
    from huggingface_hub import constants

    return bool(constants.HF_HUB_OFFLINE)


def hub_file(repo_id: str, names: tuple[str, ...]) -> Path:
    """The first of `names` in the repository, from the cache first, downloaded only when the
    cache lacks them all and HF_HUB_OFFLINE is not set."""
    from huggingface_hub import constants, hf_hub_download

    attempts = [True] if _offline() else [True, False]
    errors = []
    for local_only in attempts:
        for name in names:
            try:
                return Path(hf_hub_download(repo_id, name, local_files_only=local_only))
            except Exception as error:  # not cached, no network, gated, no such file ...
                errors.append(f"{name}: {type(error).__name__}")
    offline = " (HF_HUB_OFFLINE is set)" if _offline() else ""
    raise WeightsUnavailableError(
        f"{' or '.join(names)} of hf-hub:{repo_id} is not in the Hugging Face cache "
        f"{constants.HF_HUB_CACHE} and could not be downloaded{offline} ({'; '.join(errors)}). "
        f"On a machine with internet (and the model's licence accepted) run `hf download "
        f"{repo_id}`, then copy the cache here or set the encoder weights to the downloaded "
        "folder; or choose weights: random."
    )


def read_weights(path: Path) -> dict[str, torch.Tensor]:
    """A state dict from a .safetensors file or a torch checkpoint."""
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    return read_checkpoint(path)


def _folder_files(folder: Path) -> tuple[Path | None, Path]:
    """(config.json or None, the checkpoint) of a downloaded repository folder."""
    for name in WEIGHT_FILES:
        if (folder / name).is_file():
            config = folder / "config.json"
            return (config if config.is_file() else None), folder / name
    raise WeightsUnavailableError(
        f"weights folder {folder} holds none of {', '.join(WEIGHT_FILES)}; give the checkpoint "
        "file itself, or the folder `hf download` wrote"
    )


def _hub_architecture(config_path: Path) -> tuple[str, dict[str, Any], dict[str, Any]]:
    """(timm architecture, its arguments, pretrained config) from a hub config.json."""
    config = json.loads(config_path.read_text())
    if "architecture" not in config:
        raise WeightsUnavailableError(f"{config_path} is not a timm model config (no architecture)")
    return config["architecture"], config.get("model_args", {}), config.get("pretrained_cfg", {})


def build_timm(
    name: str,
    weights: str | Path = "random",
    *,
    pooling: str = "model",
    prefixes: tuple[str, ...] = (),
    ignore_unexpected: tuple[str, ...] = ("head.", "fc.", "classifier."),
    **options: Any,
) -> TimmEncoder:
    """Build `timm:<arch>` or `hf-hub:<org>/<repo>` with `options` (timm keyword arguments).

    `prefixes`: wrapper prefixes of a checkpoint's keys beyond the usual ones (e.g. "trunk."
    of a vision tower); `ignore_unexpected`: checkpoint parts the encoder drops on purpose.
    """
    timm = import_timm()
    weights = str(weights)
    overlay = options.pop("pretrained_cfg_overlay", {})
    options = {**options, "num_classes": 0}
    if name.startswith(TIMM_PREFIX):
        arch, pretrained_cfg, repo_id = name.removeprefix(TIMM_PREFIX), {}, None
    elif name.startswith(HUB_PREFIX):
        repo_id = name.removeprefix(HUB_PREFIX)
        arch, pretrained_cfg = None, {}
    else:
        raise ValueError(
            f"{name!r} names neither {TIMM_PREFIX}<model> nor {HUB_PREFIX}<org>/<repo>"
        )
    checkpoint: Path | None = None
    if weights not in ("random", "hub", "imagenet"):
        path = Path(weights)
        if path.is_dir():
            config, checkpoint = _folder_files(path)
        elif path.is_file():
            config, checkpoint = path.parent / "config.json", path
            config = config if config.is_file() else None
        else:
            raise WeightsUnavailableError(
                f"weights {path} does not exist; give a checkpoint file or a downloaded "
                "repository folder, weights: hub (the Hugging Face cache) or weights: random"
            )
        if repo_id is not None and config is not None:
            arch, model_args, pretrained_cfg = _hub_architecture(config)
            options = {**model_args, **options}
    elif weights == "imagenet":
        raise WeightsUnavailableError(
            f"encoder {name}: weights imagenet names torchvision's weights; for a timm or hub "
            "model give weights: hub (its pretrained weights, from the cache), a local path, "
            "or random"
        )
    if repo_id is not None and arch is None:
        arch, model_args, pretrained_cfg = _hub_architecture(hub_file(repo_id, ("config.json",)))
        options = {**model_args, **options}
    if repo_id is not None and weights == "hub":
        checkpoint = hub_file(repo_id, WEIGHT_FILES)
    try:
        model = timm.create_model(
            arch,
            pretrained=weights == "hub" and repo_id is None,
            pretrained_cfg_overlay={**pretrained_cfg, **overlay} or None,
            **options,
        )
    except Exception as error:  # timm's own download of pretrained weights
        if not (weights == "hub" and repo_id is None):
            raise
        raise WeightsUnavailableError(
            f"pretrained weights of {name} are not in the cache and could not be downloaded "
            f"({type(error).__name__}: {error}); download them on a machine with internet, or "
            "set the encoder weights to a local checkpoint, or choose weights: random"
        ) from error
    encoder = TimmEncoder(model, pooling)
    encoder.weights = weights
    if checkpoint is not None:
        state = strip_prefixes(read_weights(checkpoint), ("module.", "model.", *prefixes))
        encoder.load_report = load_matching(model, state, str(checkpoint), ignore_unexpected)
    return encoder


register_encoder_family(TIMM_PREFIX)(build_timm)
register_encoder_family(HUB_PREFIX)(build_timm)


def _swiglu_silu() -> dict[str, Any]:
    """timm's packed SwiGLU MLP with SiLU (imported at build time: timm stays optional)."""
    from timm.layers import SwiGLUPacked

    return {"mlp_layer": SwiGLUPacked, "act_layer": nn.SiLU}


def _build_named(
    hub_id: str,
    arch: str,
    weights: str | Path,
    options: dict[str, Any],
    overrides: dict[str, Any],
    **loading: Any,
) -> TimmEncoder:
    """The model card's architecture with its weights: "hub" reads `hub_id`'s checkpoint from
    the Hugging Face cache, a path a local copy. `overrides` (depth, embed_dim, ...) exist for
    small test models only."""
    if str(weights) == "hub":
        weights = hub_file(hub_id, WEIGHT_FILES)
    return build_timm(f"{TIMM_PREFIX}{arch}", weights, **loading, **{**options, **overrides})


@register_encoder("uni2_h")
def uni2_h(weights: str | Path = "random", **overrides: Any) -> TimmEncoder:
    """UNI2-h (MahmoodLab/UNI2-h): ViT-H/14 with 8 register tokens, SwiGLU, 1536-d class
    token, 224 px, ImageNet mean/std. Weights: hub (gated; from the cache) or a local copy."""
    options = dict(
        img_size=224, patch_size=14, depth=24, num_heads=24, init_values=1e-5, embed_dim=1536,
        mlp_ratio=2.66667 * 2, no_embed_class=True, reg_tokens=8, dynamic_img_size=True,
        pretrained_cfg_overlay=IMAGENET, **_swiglu_silu(),
    )  # fmt: skip
    return _build_named("MahmoodLab/UNI2-h", "vit_giant_patch14_224", weights, options, overrides)


@register_encoder("virchow2")
def virchow2(weights: str | Path = "random", **overrides: Any) -> TimmEncoder:
    """Virchow2 (paige-ai/Virchow2): ViT-H/14 with 4 register tokens, SwiGLU; the feature is
    the class token and the mean patch token concatenated (2560-d), as its authors specify.
    224 px, ImageNet mean/std. Weights: hub (gated; from the cache) or a local copy."""
    options = dict(
        img_size=224, init_values=1e-5, mlp_ratio=5.3375, reg_tokens=4, dynamic_img_size=True,
        pretrained_cfg_overlay=IMAGENET, **_swiglu_silu(),
    )  # fmt: skip
    return _build_named(
        "paige-ai/Virchow2", "vit_huge_patch14_224", weights, options, overrides,
        pooling="cls_mean",
    )  # fmt: skip


@register_encoder("h_optimus_0")
def h_optimus_0(weights: str | Path = "random", **overrides: Any) -> TimmEncoder:
    """H-optimus-0 (bioptimus/H-optimus-0): ViT-g/14 with 4 register tokens, SwiGLU, 1536-d
    class token, 224 px, its own mean/std. Weights: hub (gated; from the cache) or a local
    copy."""
    options = dict(
        img_size=224, patch_size=14, depth=40, num_heads=24, embed_dim=1536, init_values=1e-5,
        mlp_ratio=5.33334, reg_tokens=4, no_embed_class=True, dynamic_img_size=False,
        pretrained_cfg_overlay={
            "mean": (0.707223, 0.578729, 0.703617), "std": (0.211883, 0.230117, 0.177517)
        },
        **_swiglu_silu(),
    )  # fmt: skip
    return _build_named(
        "bioptimus/H-optimus-0", "vit_giant_patch14_224", weights, options, overrides
    )


@register_encoder("conch_v1_5")
def conch_v1_5(weights: str | Path = "random", **overrides: Any) -> TimmEncoder:
    """CONCH v1.5 vision tower (MahmoodLab/conchv1_5, `pytorch_model_vision.bin`): its ViT-L/16
    trunk at 448 px with OpenAI CLIP mean/std; the feature is the trunk's 1024-d class token,
    not the 768-d contrastive projection (attentional pooler) that TRIDENT's conch_v15 gives.
    Weights: a local `pytorch_model_vision.bin` (keys under "trunk."), or random."""
    if str(weights) == "hub":
        raise WeightsUnavailableError(
            "CONCH v1.5's repository is not a timm model: download pytorch_model_vision.bin "
            "from MahmoodLab/conchv1_5 (gated) and set the encoder weights to that file"
        )
    options = dict(
        img_size=448, patch_size=16, init_values=1.0, dynamic_img_size=True,
        pretrained_cfg_overlay={
            "mean": (0.48145466, 0.4578275, 0.40821073),
            "std": (0.26862954, 0.26130258, 0.27577711),
        },
    )  # fmt: skip
    return _build_named(
        "MahmoodLab/conchv1_5", "vit_large_patch16_224", weights, options, overrides,
        prefixes=("trunk.",), ignore_unexpected=("attn_pool", "ln_contrast", "head."),
    )  # fmt: skip


__all__ = ["TimmEncoder", "build_timm", "conch_v1_5", "h_optimus_0", "uni2_h", "virchow2"]
