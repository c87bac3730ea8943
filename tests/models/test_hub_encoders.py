"""Encoders from timm and the Hugging Face hub: the hand-written ones equal timm's, named
foundation models have their model cards' shapes, weights come from a local copy or the cache
(offline), and a missing timm names the hub extra."""

import json
import subprocess
import sys

import pytest
import torch

timm = pytest.importorskip("timm", reason="the hub extra (timm, huggingface_hub) is not installed")

from abmilx.models import WeightsUnavailableError, count_parameters, create_encoder  # noqa: E402

IMAGENET = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))


def same_weights(ours: torch.nn.Module, theirs: torch.nn.Module) -> None:
    """Copy our random weights into timm's model; every parameter must have a place there."""
    result = theirs.load_state_dict(ours.state_dict(), strict=False)
    assert not result.unexpected_keys, result.unexpected_keys
    assert not [k for k in result.missing_keys if not k.startswith(("head", "fc."))], result


@pytest.mark.parametrize(
    ("name", "timm_name", "ours_options", "timm_options"),
    [
        (
            "uni",
            "vit_large_patch16_224",
            {"depth": 2, "dim": 64, "num_heads": 4},
            {"depth": 2, "embed_dim": 64, "num_heads": 4, "init_values": 1e-5},
        ),
        (
            "gigapath",
            "vit_giant_patch14_dinov2",
            {"depth": 2, "dim": 96, "num_heads": 4},
            {"depth": 2, "embed_dim": 96, "num_heads": 4, "patch_size": 16, "img_size": 224},
        ),
    ],
)
def test_hand_written_vits_equal_timm_with_the_same_random_weights(
    name, timm_name, ours_options, timm_options
):
    ours = create_encoder(name, weights="random", **ours_options).eval()
    theirs = create_encoder(
        f"timm:{timm_name}", weights="random", dynamic_img_size=True, **timm_options
    ).eval()
    same_weights(ours, theirs.model)
    with torch.no_grad():
        for size in (224, 160):  # the trained grid and a resampled position embedding
            x = torch.randn(2, 3, size, size)
            torch.testing.assert_close(ours(x), theirs(x), atol=1e-5, rtol=0)


@pytest.mark.parametrize("name", ["resnet18", "resnet50"])
def test_resnets_equal_timm_with_the_same_random_weights(name):
    ours = create_encoder(name, weights="random").eval()
    theirs = create_encoder(f"timm:{name}", weights="random").eval()
    same_weights(ours, theirs.model)
    assert ours.out_dim == theirs.out_dim
    with torch.no_grad():
        x = torch.randn(2, 3, 96, 96)
        torch.testing.assert_close(ours(x), theirs(x), atol=1e-5, rtol=0)


def test_ctranspath_equals_timm_swin_with_its_stem():
    """CTransPath = timm's Swin-T with the convolutional stem as patch embedding; timm 1.x
    keeps each patch merging at the start of the next stage, the released layout at the end
    of its own."""
    from abmilx.models.encoders.swin import ConvStem

    class Stem(ConvStem):
        def __init__(self, img_size=(224, 224), patch_size=4, embed_dim=96, **_):
            super().__init__(embed_dim)
            self.grid_size = (img_size[0] // patch_size, img_size[1] // patch_size)

    options = {"embed_dim": 16, "depths": (1, 2, 1, 1), "num_heads": (1, 2, 2, 4)}
    ours = create_encoder("chief", weights="random", **options).eval()
    theirs = timm.create_model(
        "swin_tiny_patch4_window7_224", num_classes=0, embed_layer=Stem, **options
    ).eval()
    state = {}
    for key, value in ours.state_dict().items():
        parts = key.split(".")
        if parts[0] == "layers" and parts[2] == "downsample":
            parts[1] = str(int(parts[1]) + 1)
        state[".".join(parts)] = value
    result = theirs.load_state_dict(state, strict=False)
    assert not result.missing_keys and not result.unexpected_keys, result
    with torch.no_grad():
        x = torch.randn(2, 3, 224, 224)
        torch.testing.assert_close(ours(x), theirs(x), atol=1e-5, rtol=0)


# Published sizes: UNI2-h ~681 M, Virchow2 ~632 M, H-optimus-0 ~1.1 B, CONCH v1.5 trunk ~303 M.
NAMED = {
    "uni2_h": (681e6, 1536, 224, IMAGENET),
    "virchow2": (632e6, 2560, 224, IMAGENET),
    "h_optimus_0": (1.13e9, 1536, 224, ((0.707223, 0.578729, 0.703617), (0.211883, 0.230117, 0.177517))),
    "conch_v1_5": (
        303e6, 1024, 448,
        ((0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711)),
    ),
}  # fmt: skip


@pytest.mark.parametrize("name", sorted(NAMED))
def test_named_foundation_models_have_their_model_cards_shapes(name):
    params, out_dim, size, (mean, std) = NAMED[name]
    with torch.device("meta"):
        encoder = create_encoder(name, weights="random")
    n = count_parameters(encoder)
    assert abs(n - params) / params < 0.05, n
    assert (encoder.out_dim, encoder.input_size) == (out_dim, size)
    assert encoder.mean == pytest.approx(mean) and encoder.std == pytest.approx(std)


def test_virchow2_concatenates_the_class_token_and_the_mean_patch_token():
    encoder = create_encoder("virchow2", weights="random", depth=1, embed_dim=96, num_heads=4)
    encoder.eval()
    x = torch.randn(2, 3, 224, 224)
    with torch.no_grad():
        tokens = encoder.model.forward_features(x)  # class, 4 registers, 256 patches
        expected = torch.cat([tokens[:, 0], tokens[:, 5:].mean(1)], dim=-1)
        assert tokens.shape[1] == 1 + 4 + 16 * 16
        torch.testing.assert_close(encoder(x), expected)
    assert encoder.out_dim == 192


def tiny_hub_repo(folder):
    """What `hf download` writes for a timm model: config.json and model.safetensors."""
    from safetensors.torch import save_file

    model = timm.create_model("vit_small_patch16_224", depth=1, num_classes=0)
    folder.mkdir(parents=True)
    config = {
        "architecture": "vit_small_patch16_224",
        "model_args": {"depth": 1},
        "pretrained_cfg": {"mean": [0.6, 0.5, 0.4], "std": [0.2, 0.2, 0.2]},
    }
    (folder / "config.json").write_text(json.dumps(config))
    save_file(model.state_dict(), str(folder / "model.safetensors"))
    return model.eval()


def test_hub_model_from_a_downloaded_folder(tmp_path):
    reference = tiny_hub_repo(tmp_path / "repo")
    encoder = create_encoder("hf-hub:lab/tiny", weights=str(tmp_path / "repo")).eval()
    assert encoder.mean == (0.6, 0.5, 0.4) and encoder.out_dim == 384
    x = torch.randn(1, 3, 224, 224)
    with torch.no_grad():
        torch.testing.assert_close(encoder(x), reference(x))
    with pytest.raises(WeightsUnavailableError, match=r"holds none of model\.safetensors"):
        create_encoder("hf-hub:lab/tiny", weights=str(tmp_path))


def test_hub_model_from_the_cache_offline_and_the_error_when_missing(tmp_path, monkeypatch):
    """The Hugging Face cache layout (models--<org>--<repo>/snapshots/<rev>, refs/main), read
    with HF_HUB_OFFLINE set: no download is tried."""
    from huggingface_hub import constants

    revision = "0" * 40
    repo = tmp_path / "hub" / "models--lab--tiny"
    reference = tiny_hub_repo(repo / "snapshots" / revision)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(revision)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    encoder = create_encoder("hf-hub:lab/tiny", weights="hub").eval()
    x = torch.randn(1, 3, 224, 224)
    with torch.no_grad():
        torch.testing.assert_close(encoder(x), reference(x))
    with pytest.raises(WeightsUnavailableError, match=r"lab/other is not in the Hugging Face"):
        create_encoder("hf-hub:lab/other", weights="random")
    with pytest.raises(WeightsUnavailableError, match=r"UNI2-h is not in .*HF_HUB_OFFLINE"):
        create_encoder("uni2_h", weights="hub")


def test_checkpoint_files_with_a_prefix_load_and_imagenet_is_refused(tmp_path):
    """CONCH v1.5's vision file keeps its trunk under "trunk." beside pooler weights."""
    source = create_encoder("conch_v1_5", depth=1, embed_dim=64, num_heads=4).model
    state = {f"trunk.{k}": v for k, v in source.state_dict().items()}
    state["attn_pool.query"] = torch.zeros(1)
    torch.save(state, tmp_path / "pytorch_model_vision.bin")
    torch.manual_seed(1)
    loaded = create_encoder(
        "conch_v1_5", weights=str(tmp_path / "pytorch_model_vision.bin"), depth=1, embed_dim=64,
        num_heads=4,
    )  # fmt: skip
    for key, value in source.state_dict().items():
        assert torch.equal(loaded.model.state_dict()[key], value), key
    with pytest.raises(WeightsUnavailableError, match="weights: hub"):
        create_encoder("timm:resnet18", weights="imagenet")


def test_without_timm_the_error_names_the_hub_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "timm", None)  # as if not installed
    with pytest.raises(ImportError, match=r"hub extra \(pip install -e '\.\[hub\]'\)"):
        create_encoder("timm:resnet18", weights="random")


def test_config_accepts_timm_and_hub_names_without_importing_timm_or_torch():
    script = """
import sys
from abmilx.config import ConfigError, check_config, validate_config
datasets = {"d": {"task": "subtyping", "classes": ["a", "b"], "synthetic": {}}}
for name in ["timm:vit_small_patch16_224", "hf-hub:MahmoodLab/UNI2-h", "virchow2"]:
    validate_config({"datasets": datasets, "feature_sets": {"x": {"encoder": name}}})
try:
    validate_config({"datasets": datasets, "feature_sets": {"x": {"encoder": "hf-hub:x"}}})
except ConfigError as error:
    print(error)
try:
    check_config(validate_config({"datasets": datasets, "feature_sets": {"x": {"encoder": "timm:resnet50"}}}))
except ConfigError as error:
    print(error)
print(sorted({"timm", "torch"} & set(sys.modules)))
"""
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert "'feature_sets/x/encoder': 'hf-hub:x' is none of the allowed forms" in result.stdout
    assert "does not match '^hf-hub:" in result.stdout
    assert (
        "'feature_sets/x/weights': imagenet names torchvision's weights; the timm" in result.stdout
    )
    assert result.stdout.strip().endswith("[]"), result.stdout
