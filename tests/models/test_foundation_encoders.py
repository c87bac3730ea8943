"""UNI, Prov-GigaPath (tile) and CTransPath/CHIEF encoders: sizes, checkpoint layout, weights."""

import sys
import warnings

import pytest
import torch
import torchvision
from torchvision.models.vision_transformer import VisionTransformer

from abmilx.models import WeightsUnavailableError, count_parameters, create_encoder, list_encoders

TINY = {
    "uni": {"depth": 2, "dim": 32, "num_heads": 4},
    "gigapath": {"depth": 2, "dim": 48, "num_heads": 4},
    "chief": {"embed_dim": 16, "depths": (1, 2, 1, 1), "num_heads": (1, 2, 2, 4)},
}
TINY_OUT = {"uni": 32, "gigapath": 48, "chief": 128}
# Published sizes: UNI ViT-L/16 ~303 M, GigaPath tile ViT-g ~1.13 B, CTransPath ~27.5 M.
PAPER_PARAMS = {"uni": 303e6, "gigapath": 1.13e9, "chief": 27.5e6}
DEFAULT_OUT = {"uni": 1024, "gigapath": 1536, "chief": 768}
IMAGENET = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))


def tiny(name, **kw):
    torch.manual_seed(0)
    return create_encoder(name, **TINY[name], **kw).eval()


def test_registered():
    assert set(list_encoders()) >= set(TINY)


@pytest.mark.parametrize("name", sorted(TINY))
def test_tiny_forward_at_training_and_other_sizes(name):
    encoder = tiny(name)
    assert encoder.out_dim == TINY_OUT[name] and encoder.input_size == 224
    assert (encoder.mean, encoder.std) == IMAGENET
    with torch.no_grad():
        assert encoder(torch.rand(2, 3, 224, 224)).shape == (2, TINY_OUT[name])
        assert encoder(torch.rand(1, 3, 64, 96)).shape == (1, TINY_OUT[name])


@pytest.mark.parametrize("name", sorted(TINY))
def test_default_architecture_size_on_meta_device(name):
    with torch.device("meta"):
        encoder = create_encoder(name)
    n = count_parameters(encoder)
    assert abs(n - PAPER_PARAMS[name]) / PAPER_PARAMS[name] < 0.05, n
    assert encoder.out_dim == DEFAULT_OUT[name]


def test_checkpoint_layout_matches_the_released_timm_models():
    """Key names and shapes of the released files (timm ViT / timm 0.5.4 Swin + ConvStem)."""
    with torch.device("meta"):
        uni = create_encoder("uni").state_dict()
        giga = create_encoder("gigapath").state_dict()
        ctp = create_encoder("chief").state_dict()
    assert uni["pos_embed"].shape == (1, 197, 1024) and uni["blocks.23.ls2.gamma"].shape == (1024,)
    assert uni["blocks.0.attn.qkv.weight"].shape == (3072, 1024)
    assert uni["blocks.0.mlp.fc1.weight"].shape == (4096, 1024)
    assert giga["patch_embed.proj.weight"].shape == (1536, 3, 16, 16)
    assert giga["blocks.39.mlp.fc1.weight"].shape == (8192, 1536)  # SwiGLU, packed halves
    assert giga["blocks.39.mlp.fc2.weight"].shape == (1536, 4096)
    assert ctp["patch_embed.proj.0.weight"].shape == (12, 3, 3, 3)
    assert ctp["patch_embed.proj.6.weight"].shape == (96, 24, 1, 1)
    assert ctp["layers.0.blocks.1.attn.relative_position_bias_table"].shape == (169, 3)
    assert ctp["layers.2.downsample.reduction.weight"].shape == (768, 1536)
    assert ctp["norm.weight"].shape == (768,)
    assert not any(k.startswith("head") for k in {**uni, **giga, **ctp})


def test_vit_equals_torchvision_vit_with_unit_layer_scale():
    """Same computation as an independent ViT once layer-scale is 1 (weights mapped by name)."""
    torch.manual_seed(0)
    reference = VisionTransformer(224, 16, num_layers=2, num_heads=4, hidden_dim=32, mlp_dim=128)
    reference.heads = torch.nn.Identity()
    ours = tiny("uni")
    ref = reference.state_dict()
    mapped = {
        "patch_embed.proj.weight": ref["conv_proj.weight"],
        "patch_embed.proj.bias": ref["conv_proj.bias"],
        "cls_token": ref["class_token"],
        "pos_embed": ref["encoder.pos_embedding"],
        "norm.weight": ref["encoder.ln.weight"],
        "norm.bias": ref["encoder.ln.bias"],
    }
    for i in range(2):
        tv, our = f"encoder.layers.encoder_layer_{i}.", f"blocks.{i}."
        for a, b in [("ln_1", "norm1"), ("ln_2", "norm2"), ("mlp.0", "mlp.fc1"),
                     ("mlp.3", "mlp.fc2"), ("self_attention.out_proj", "attn.proj")]:  # fmt: skip
            for p in ("weight", "bias"):
                mapped[f"{our}{b}.{p}"] = ref[f"{tv}{a}.{p}"]
        mapped[f"{our}attn.qkv.weight"] = ref[f"{tv}self_attention.in_proj_weight"]
        mapped[f"{our}attn.qkv.bias"] = ref[f"{tv}self_attention.in_proj_bias"]
        mapped[f"{our}ls1.gamma"] = mapped[f"{our}ls2.gamma"] = torch.ones(32)
    ours.load_state_dict(mapped, strict=True)
    x = torch.randn(2, 3, 224, 224)
    with torch.no_grad():
        torch.testing.assert_close(ours(x), reference.eval()(x), rtol=1e-4, atol=1e-5)


def test_swin_stages_equal_torchvision_swin_t_at_224():
    """After the stem, CTransPath is Swin-T: same output as torchvision's on a 56x56 token map."""
    torch.manual_seed(0)
    reference = torchvision.models.swin_t().eval()
    ours = create_encoder("chief").eval()
    ref = reference.state_dict()
    mapped = {"norm.weight": ref["norm.weight"], "norm.bias": ref["norm.bias"]}
    names = [("norm1", "norm1"), ("norm2", "norm2"), ("mlp.0", "mlp.fc1"), ("mlp.3", "mlp.fc2"),
             ("attn.qkv", "attn.qkv"), ("attn.proj", "attn.proj")]  # fmt: skip
    for stage, depth in enumerate((2, 2, 6, 2)):
        for j in range(depth):
            tv, our = f"features.{2 * stage + 1}.{j}.", f"layers.{stage}.blocks.{j}."
            for a, b in names:
                for p in ("weight", "bias"):
                    mapped[f"{our}{b}.{p}"] = ref[f"{tv}{a}.{p}"]
            table = "attn.relative_position_bias_table"
            mapped[our + table] = ref[tv + table]
        if stage < 3:
            for p in ("norm.weight", "norm.bias", "reduction.weight"):
                mapped[f"layers.{stage}.downsample.{p}"] = ref[f"features.{2 * stage + 2}.{p}"]
    result = ours.load_state_dict(mapped, strict=False)
    assert all(k.startswith("patch_embed.") for k in result.missing_keys)
    assert not result.unexpected_keys
    tokens = torch.randn(1, 56, 56, 96)
    with torch.no_grad():
        expected = reference.norm(reference.features[1:](tokens)).mean(dim=(1, 2))
        got = ours.norm(_run_stages(ours, tokens)).mean(dim=(1, 2))
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-5)


def _run_stages(encoder, x):
    for layer in encoder.layers:
        x = layer(x)
    return x


@pytest.mark.parametrize("name", sorted(TINY))
def test_saved_state_dict_reloads_through_the_path_option(name, tmp_path):
    source = tiny(name)
    path = tmp_path / "pytorch_model.bin"
    torch.save({f"module.{k}": v for k, v in source.state_dict().items()}, path)
    torch.manual_seed(1)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        loaded = create_encoder(name, weights=str(path), **TINY[name]).eval()
    assert loaded.load_report == {"missing": [], "unexpected": []}
    x = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), source(x), rtol=0, atol=0)


def test_ctranspath_checkpoint_with_stored_buffers_loads_quietly(tmp_path):
    """ctranspath.pth is {"model": ...} and stores attn_mask / relative_position_index."""
    source = tiny("chief")
    state = dict(source.state_dict())
    state["layers.0.blocks.1.attn_mask"] = torch.zeros(64, 49, 49)
    state["layers.0.blocks.1.attn.relative_position_index"] = torch.zeros(49, 49, dtype=torch.long)
    path = tmp_path / "ctranspath.pth"
    torch.save({"model": state}, path)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        loaded = create_encoder("chief", weights=str(path), **TINY["chief"])
    assert loaded.load_report == {"missing": [], "unexpected": []}


@pytest.mark.parametrize("missing", ["timm", "huggingface_hub"])
@pytest.mark.parametrize("name", ["uni", "gigapath"])
def test_hub_without_timm_says_how_to_provide_the_weights(name, missing, monkeypatch):
    monkeypatch.setitem(sys.modules, missing, None)  # import -> ImportError
    with pytest.raises(WeightsUnavailableError) as error:
        create_encoder(name, weights="hub", **TINY[name])
    message = str(error.value)
    assert "timm" in message and "pytorch_model.bin" in message and "file path" in message
    assert "pip install 'abmilx[hub]'" in message
    assert "huggingface.co/" in message


def test_chief_has_no_hub_and_says_why():
    with pytest.raises(WeightsUnavailableError, match="no Hugging Face hub id"):
        create_encoder("chief", weights="hub", **TINY["chief"])


def test_missing_file_is_an_error(tmp_path):
    with pytest.raises(WeightsUnavailableError, match="does not exist"):
        create_encoder("uni", weights=str(tmp_path / "absent.bin"), **TINY["uni"])


def test_swiglu_gates_with_the_first_half():
    """timm GluMlp(gate_last=False): silu(first half of fc1) * second half."""
    block = tiny("gigapath").blocks[0].mlp
    x = torch.randn(3, 48)
    hidden = block.fc1(x)
    gate, value = hidden[:, : hidden.shape[1] // 2], hidden[:, hidden.shape[1] // 2 :]
    expected = block.fc2(gate * torch.sigmoid(gate) * value)
    torch.testing.assert_close(block(x), expected)


def test_normalize_maps_the_mean_to_zero():
    encoder = tiny("uni")
    mean = torch.tensor(IMAGENET[0]).view(1, 3, 1, 1).expand(1, 3, 2, 2)
    torch.testing.assert_close(encoder.normalize(mean), torch.zeros(1, 3, 2, 2))
