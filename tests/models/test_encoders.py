"""Encoders: shapes, memory format, init determinism, and every way of getting weights."""

import warnings

import pytest
import torch
import torchvision

from abmilx.models import WeightsUnavailableError, count_flops, create_encoder, list_encoders

OUT_DIMS = {
    "resnet18_layer3": 256,
    "resnet50_layer3": 1024,
    "resnet50_layer3_v1": 1024,
    "resnet18": 512,
    "resnet50": 2048,
}


def test_registry_holds_the_resnets():
    assert set(list_encoders()) >= set(OUT_DIMS)


@pytest.mark.parametrize("name", sorted(OUT_DIMS))
def test_output_dims_for_small_and_paper_sized_patches(name):
    encoder = create_encoder(name).eval()
    assert encoder.out_dim == OUT_DIMS[name]
    with torch.no_grad():
        assert encoder(torch.rand(2, 3, 32, 32)).shape == (2, OUT_DIMS[name])
        assert encoder(torch.rand(2, 3, 64, 64)).shape == (2, OUT_DIMS[name])
        assert encoder(torch.rand(1, 3, 224, 224)).shape == (1, OUT_DIMS[name])


@pytest.mark.parametrize("name", sorted(OUT_DIMS))
def test_channels_last_gives_the_same_features(name):
    encoder = create_encoder(name).eval()
    x = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        expected = encoder(x)
        encoder = encoder.to(memory_format=torch.channels_last)
        got = encoder(x.contiguous(memory_format=torch.channels_last))
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-5)


def test_random_init_is_deterministic_under_a_seed():
    torch.manual_seed(5)
    first = create_encoder("resnet18_layer3").state_dict()
    torch.manual_seed(5)
    second = create_encoder("resnet18_layer3").state_dict()
    torch.manual_seed(6)
    third = create_encoder("resnet18_layer3").state_dict()
    assert all(torch.equal(first[k], second[k]) for k in first)
    assert not torch.equal(first["conv1.weight"], third["conv1.weight"])


def test_normalize_uses_imagenet_statistics():
    encoder = create_encoder("resnet18_layer3")
    assert encoder.mean == (0.485, 0.456, 0.406) and encoder.std == (0.229, 0.224, 0.225)
    x = torch.tensor(encoder.mean).view(1, 3, 1, 1).expand(1, 3, 4, 4)
    torch.testing.assert_close(encoder.normalize(x), torch.zeros(1, 3, 4, 4))
    ones = encoder.normalize(torch.ones(1, 3, 1, 1)).flatten()
    expected = [(1 - m) / s for m, s in zip(encoder.mean, encoder.std, strict=True)]
    torch.testing.assert_close(ones, torch.tensor(expected))


def test_local_checkpoint_with_wrapper_prefixes_loads(tmp_path):
    torch.manual_seed(1)
    source = torchvision.models.resnet18(weights=None)
    wrapped = {f"module.encoder.{k}": v for k, v in source.state_dict().items()}
    path = tmp_path / "encoder.pt"
    torch.save({"state_dict": wrapped}, path)
    torch.manual_seed(2)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # layer4/fc of a full ResNet are dropped quietly
        encoder = create_encoder("resnet18_layer3", weights=str(path))
    expected = source.state_dict()
    loaded = encoder.state_dict()
    assert all(torch.equal(loaded[k], expected[k]) for k in loaded)
    assert encoder.load_report == {"missing": [], "unexpected": []}


def test_partial_checkpoint_reports_missing_and_unexpected_keys(tmp_path):
    state = torchvision.models.resnet18(weights=None).state_dict()
    state = {k: v for k, v in state.items() if not k.startswith("layer3.")}
    state["mil.classifier.weight"] = torch.zeros(2, 256)
    path = tmp_path / "partial.pth"
    torch.save(state, path)
    with pytest.warns(UserWarning, match="missing keys"):
        encoder = create_encoder("resnet18_layer3", weights=str(path))
    assert any(k.startswith("layer3.") for k in encoder.load_report["missing"])
    assert encoder.load_report["unexpected"] == ["mil.classifier.weight"]


def test_checkpoint_without_any_matching_key_is_an_error(tmp_path):
    path = tmp_path / "other.pt"
    torch.save({"head.weight": torch.zeros(2, 2)}, path)
    with pytest.raises(WeightsUnavailableError, match="no parameter"):
        create_encoder("resnet18_layer3", weights=str(path))


def test_missing_checkpoint_path_is_an_error(tmp_path):
    with pytest.raises(WeightsUnavailableError, match="does not exist"):
        create_encoder("resnet50_layer3", weights=str(tmp_path / "absent.pt"))


def test_imagenet_weights_unavailable_offline(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    with pytest.raises(WeightsUnavailableError) as error:
        create_encoder("resnet18_layer3", weights="imagenet")
    message = str(error.value)
    expected_file = tmp_path / "hub" / "checkpoints" / "resnet18-f37072fd.pth"
    assert str(expected_file) in message
    assert "https://download.pytorch.org/models/resnet18-f37072fd.pth" in message
    assert "weights: random" in message and "local checkpoint" in message


def test_imagenet_weights_are_read_from_the_torch_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    torch.manual_seed(3)
    cached = torchvision.models.resnet50(weights=None).state_dict()
    cache_dir = tmp_path / "hub" / "checkpoints"
    cache_dir.mkdir(parents=True)
    torch.save(cached, cache_dir / "resnet50-11ad3fa6.pth")  # the IMAGENET1K_V2 file name
    encoder = create_encoder("resnet50_layer3", weights="imagenet")
    assert all(torch.equal(v, cached[k]) for k, v in encoder.state_dict().items())
    # CLAM's truncated R50 of the two-stage baselines loads the V1 file instead
    with pytest.raises(WeightsUnavailableError, match=r"resnet50-0676ba61\.pth"):
        create_encoder("resnet50_layer3_v1", weights="imagenet")
    torch.save(cached, cache_dir / "resnet50-0676ba61.pth")  # the IMAGENET1K_V1 file name
    encoder = create_encoder("resnet50_layer3_v1", weights="imagenet")
    assert all(torch.equal(v, cached[k]) for k, v in encoder.state_dict().items())


def test_flops_of_the_paper_input_on_meta_device():
    """Paper: 512 x 3 x 224 x 224. Meta tensors count without computing."""
    with torch.device("meta"):
        encoder = create_encoder("resnet18_layer3")
        one = count_flops(encoder, torch.empty(1, 3, 224, 224))
        batch = count_flops(encoder, torch.empty(512, 3, 224, 224))
    assert batch == 512 * one
    assert 2.4e9 < one < 2.9e9  # ~1.3 GMACs for ResNet-18 up to layer3


def test_flops_of_a_linear_layer_are_exact():
    assert count_flops(torch.nn.Linear(4, 3), torch.zeros(5, 4)) == 2 * 5 * 4 * 3
