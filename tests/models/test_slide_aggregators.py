"""Prov-GigaPath LongNet slide encoder and CHIEF aggregator: numerics, positions, weights."""

import math
import warnings

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from abmilx.models import WeightsUnavailableError, count_parameters, create_mil
from abmilx.models.mil.gigapath_slide import DilatedAttention, grid_position_embedding

SMALL_SLIDE = {"dim": 32, "depth": 2, "num_heads": 4}


def padded_dilated_attention(attn: DilatedAttention, x: torch.Tensor) -> torch.Tensor:
    """torchscale's algorithm written out: every segment really padded with zero q/k/v, each
    head attends among the positions of its offset (head // ceil(H / r)), softmax over all keys
    including the zero ones, branches mixed by softmax of their log-sum-exp."""
    b, length, dim = x.shape
    heads, d = attn.num_heads, dim // attn.num_heads
    q, k, v = (p(x).view(b, length, heads, d) for p in (attn.q_proj, attn.k_proj, attn.v_proj))
    outs, lses = [], []
    for segment, ratio in attn.branches:
        n = math.ceil(length / segment)
        seg_pad = math.ceil(segment / ratio) * ratio

        def pad(t, n=n, segment=segment, seg_pad=seg_pad):
            t = F.pad(t, (0, 0, 0, 0, 0, n * segment - length)).view(b, n, segment, heads, d)
            return F.pad(t, (0, 0, 0, 0, 0, seg_pad - segment))

        qq, kk, vv = pad(q), pad(k), pad(v)
        out = torch.zeros(b, n, seg_pad, heads, d)
        lse = torch.full((b, n, seg_pad, heads), -1e8)
        for h in range(heads):
            rows = torch.arange(h // math.ceil(heads / ratio), seg_pad, ratio)
            scores = qq[:, :, rows, h] @ kk[:, :, rows, h].transpose(-1, -2) / math.sqrt(d)
            out[:, :, rows, h] = scores.softmax(-1) @ vv[:, :, rows, h]
            lse[:, :, rows, h] = scores.logsumexp(-1)
        outs.append(out[:, :, :segment].reshape(b, -1, heads, d)[:, :length])
        lses.append(lse[:, :, :segment].reshape(b, -1, heads)[:, :length])
    weights = torch.softmax(torch.stack(lses), dim=0).unsqueeze(-1)
    mixed = (torch.stack(outs) * weights).sum(0).reshape(b, length, dim)
    return attn.out_proj(attn.inner_attn_ln(mixed))


@pytest.mark.parametrize("heads", [4, 6])  # 6: head groups padded as in torchscale
def test_dilated_attention_equals_the_padded_algorithm(heads):
    torch.manual_seed(0)
    attn = DilatedAttention(6 * heads, heads, (4, 8, 64), (1, 2, 4))  # 64 > length: one segment
    x = torch.randn(2, 11, 6 * heads)
    with torch.no_grad():
        torch.testing.assert_close(attn(x), padded_dilated_attention(attn, x))


def test_branch_mixing_weights_carry_no_gradient_as_in_torchscale():
    torch.manual_seed(0)
    attn = DilatedAttention(16, 4, (4, 8), (1, 2))
    x = torch.randn(1, 9, 16, requires_grad=True)
    attn(x).sum().backward()
    grad = x.grad.clone()
    x.grad = None
    padded_dilated_attention(attn, x).sum().backward()  # reference mixes with gradient
    assert not torch.allclose(grad, x.grad)


def mae_2d_table(dim: int, grid: int) -> np.ndarray:
    """MAE's get_2d_sincos_pos_embed (numpy), rows indexed x * grid + y as gigapath reads it."""

    def one_d(d, pos):
        omega = 1.0 / 10000 ** (np.arange(d // 2, dtype=np.float64) / (d / 2.0))
        out = np.einsum("m,d->md", pos.reshape(-1), omega)
        return np.concatenate([np.sin(out), np.cos(out)], axis=1)

    mesh = np.meshgrid(np.arange(grid, dtype=np.float32), np.arange(grid, dtype=np.float32))
    mesh = np.stack(mesh, axis=0).reshape(2, 1, grid, grid)
    return np.concatenate([one_d(dim // 2, mesh[0]), one_d(dim // 2, mesh[1])], axis=1)


def test_position_embedding_is_the_rows_of_the_mae_table():
    table = mae_2d_table(32, 7)
    grid = torch.tensor([[0, 0], [3, 5], [6, 1], [2, 2]])
    expected = torch.tensor(table[(grid[:, 0] * 7 + grid[:, 1]).numpy()], dtype=torch.float32)
    torch.testing.assert_close(grid_position_embedding(32, grid), expected)


def slide_model(**kw):
    torch.manual_seed(0)
    return create_mil("gigapath_slide", 24, 3, **SMALL_SLIDE, **kw).eval()


def test_coords_are_read_in_256_px_tiles():
    model = slide_model()
    x = torch.randn(1, 5, 24)
    coords = torch.tensor([[0, 0], [256, 0], [512, 256], [0, 768], [1024, 1024]])
    with torch.no_grad():
        out = model(x, coords).logits
        same_tiles = model(x, coords + 255).logits
        moved = model(x, coords + 256).logits
        without = model(x).logits
    torch.testing.assert_close(same_tiles, out)
    assert not torch.allclose(moved, out) and not torch.allclose(without, out)


def test_release_architecture_size_on_meta_device():
    with torch.device("meta"):
        model = create_mil("gigapath_slide", 1536, 2)
    # LongNet 12 x 768 (~85.1 M) + input projection 1536 -> 768 (1.18 M) + head
    assert 86.0e6 < count_parameters(model) < 86.6e6
    layer = model.encoder.layers[0].self_attn
    assert layer.branches == [(1024, 1), (5792, 2), (32768, 4), (185363, 8), (1048576, 16)]
    assert layer.num_heads == 16


def test_release_segments_run_on_a_long_bag():
    """Bag longer than the first segment: several 1024-segments plus analytic zero keys."""
    model = create_mil("gigapath_slide", 8, 2, dim=32, depth=1).eval()
    coords = torch.randint(0, 100_000, (1, 1500, 2))
    with torch.no_grad():
        out = model(torch.randn(1, 1500, 8), coords)
    assert out.logits.shape == (1, 2) and torch.isfinite(out.logits).all()


def test_slide_checkpoint_reloads_and_a_foreign_head_is_replaced(tmp_path):
    source = slide_model()
    state = {f"slide_encoder.{k}": v for k, v in source.state_dict().items()}
    state["slide_encoder.pos_embed"] = torch.zeros(1, 50, 32)  # release buffer, recomputed here
    path = tmp_path / "slide_encoder.pth"
    torch.save({"model": state}, path)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        same = slide_model(weights=str(path))
    assert same.load_report == {"missing": [], "unexpected": []}
    x, coords = torch.randn(1, 6, 24), torch.randint(0, 4000, (1, 6, 2))
    with torch.no_grad():
        torch.testing.assert_close(same(x, coords).logits, source(x, coords).logits)
    torch.manual_seed(0)
    with pytest.warns(UserWarning, match="2 missing keys"):
        other_task = create_mil("gigapath_slide", 24, 5, **SMALL_SLIDE, weights=str(path))
    assert sorted(other_task.load_report["missing"]) == ["classifier.bias", "classifier.weight"]


def chief_model(**kw):
    torch.manual_seed(0)
    return create_mil("chief_aggregator", 768, 2, **kw).eval()


def test_chief_organ_option_selects_a_row_of_the_text_table():
    x = torch.randn(1, 7, 768)
    brca, index_one, lung = chief_model(organ="brca"), chief_model(organ=1), chief_model(organ=6)
    with torch.no_grad():
        torch.testing.assert_close(brca(x).logits, index_one(x).logits)
        text = brca.text_to_vision(brca.organ_embedding[1])
        pooled = (brca(x).attention @ brca.attention_net[:3](x)).squeeze(1)
        torch.testing.assert_close(brca(x).embedding, pooled + text)
        assert not torch.allclose(lung(x).logits, brca(x).logits)
    with pytest.raises(ValueError, match="organ"):
        chief_model(organ="kidney")


def test_chief_text_table_and_checkpoint_load(tmp_path):
    table = torch.randn(19, 768)
    torch.save(table, tmp_path / "Text_emdding.pth")
    model = chief_model(text_weights=str(tmp_path / "Text_emdding.pth"))
    torch.testing.assert_close(model.organ_embedding, table)
    state = {f"module.{k}": v for k, v in model.state_dict().items()}
    state["module.instance_classifiers.0.weight"] = torch.zeros(2, 512)  # CLAM parts, skipped
    state["module.att_head.fc1.weight"] = torch.zeros(256, 512)
    torch.save(state, tmp_path / "CHIEF_pretraining.pth")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        loaded = create_mil(
            "chief_aggregator", 768, 2, weights=str(tmp_path / "CHIEF_pretraining.pth")
        ).eval()
    assert loaded.load_report == {"missing": [], "unexpected": []}
    x = torch.randn(1, 5, 768)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x).logits, model(x).logits)
    with pytest.raises(WeightsUnavailableError, match="Text_emdding"):
        chief_model(text_weights=str(tmp_path / "absent.pth"))


def test_chief_checkpoint_layout():
    keys = set(chief_model().state_dict())
    assert {
        "attention_net.0.weight",
        "attention_net.3.attention_a.0.weight",
        "attention_net.3.attention_b.0.weight",
        "attention_net.3.attention_c.weight",
        "classifiers.weight",
        "text_to_vision.0.weight",
        "organ_embedding",
    } <= keys
