"""Baseline MILs (CLAM, DSMIL, TransMIL, RRT-MIL, DTFD, WiKG, 2DMamba) against their
equations and the paper's parameter counts."""

import math

import pytest
import torch
import torch.nn.functional as F

from abmilx.models import count_parameters, create_mil
from abmilx.models.mil.clam import smooth_top1_svm_loss
from abmilx.models.mil.mamba2d import grid_cells, selective_scan_2d
from abmilx.models.mil.rrtmil import RegionAttention, from_regions, to_regions
from abmilx.models.mil.transmil import NystromAttention, iterative_pinv

IN_DIM, N_CLASSES = 16, 3


def seeded(*shape, seed=1):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


# Two-stage setting: 1024-d features, inner width 512, 2 classes. Measured count, paper's.
PARAMETERS = {
    "clam_sb": (790_791, 0.79e6),
    "clam_mb": (791_048, 0.79e6),
    "dsmil": (872_708, 0.87e6),
    "transmil": (2_672_146, 2.67e6),
    "rrtmil": (2_697_474, 2.70e6),
    "wikg": (1_709_059, 1.71e6),
    "mamba2d": (2_294_019, 2.27e6),
    "dtfd": (789_766, None),  # not in the paper's #Parameter column
}


@pytest.mark.parametrize("name", sorted(PARAMETERS))
def test_parameter_counts_match_the_paper(name):
    measured, paper = PARAMETERS[name]
    assert count_parameters(create_mil(name, 1024, 2)) == measured
    if paper is not None:
        assert abs(measured - paper) / paper < 0.05


# --- CLAM -------------------------------------------------------------------------------


def test_smooth_top1_svm_is_a_smoothed_multiclass_hinge():
    scores = seeded(5, 2)
    targets = torch.tensor([0, 1, 1, 0, 1])
    expected = torch.stack(
        [
            torch.logsumexp(s + 1.0 - F.one_hot(t, 2), dim=0) - s[t]
            for s, t in zip(scores, targets, strict=True)
        ]
    ).mean()
    torch.testing.assert_close(smooth_top1_svm_loss(scores, targets), expected)
    hinge = torch.stack(
        [(s + 1.0 - F.one_hot(t, 2)).max() - s[t] for s, t in zip(scores, targets, strict=True)]
    ).mean()
    torch.testing.assert_close(
        smooth_top1_svm_loss(scores, targets, tau=1e-3), hinge, atol=1e-2, rtol=0
    )


@pytest.mark.parametrize("name", ["clam_sb", "clam_mb"])
def test_clam_instance_loss_uses_top_and_bottom_attended_instances(name):
    torch.manual_seed(0)
    model = create_mil(name, IN_DIM, N_CLASSES, dropout=0.0, instance_loss="ce").train()
    x, label = seeded(1, 20, IN_DIM), 1
    out = model(x, labels=torch.tensor([label]))
    h = model.embed(x)[0]
    scores = out.attention[0, label if name == "clam_mb" else 0]
    order = scores.argsort(descending=True)
    chosen = torch.cat([order[:8], order[-8:]])
    targets = torch.cat([torch.ones(8), torch.zeros(8)]).long()
    expected = F.cross_entropy(model.instance_classifiers[label](h[chosen]), targets)
    torch.testing.assert_close(out.aux_loss, expected)


@pytest.mark.parametrize("name", ["clam_sb", "clam_mb", "dsmil"])
def test_aux_loss_of_a_batch_is_the_mean_over_its_slides(name):
    """Batch size 1 works (the official CLAM_SB crashes there) and B > 1 agrees with it."""
    torch.manual_seed(0)
    model = create_mil(name, IN_DIM, N_CLASSES, dropout=0.0).train()
    x, labels = seeded(3, 11, IN_DIM), torch.tensor([2, 0, 1])
    alone = [model(x[i : i + 1], labels=labels[i : i + 1]).aux_loss for i in range(3)]
    torch.testing.assert_close(model(x, labels=labels).aux_loss, torch.stack(alone).mean())


def test_clam_subtyping_adds_out_of_class_negatives():
    torch.manual_seed(0)
    plain = create_mil("clam_sb", IN_DIM, N_CLASSES, dropout=0.0).train()
    torch.manual_seed(0)
    subtyping = create_mil("clam_sb", IN_DIM, N_CLASSES, dropout=0.0, subtyping=True).train()
    x, labels = seeded(1, 12, IN_DIM), torch.tensor([0])
    assert not torch.allclose(
        plain(x, labels=labels).aux_loss, subtyping(x, labels=labels).aux_loss
    )


# --- ABMIL ----------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["abmil", "gated_abmil"])
def test_abmil_attention_bias_follows_mil_bias_as_in_the_official_code(name):
    attention = ("attn_value", "attn_gate", "attn_score")
    plain = create_mil(name, IN_DIM, N_CLASSES, mil_bias=False)
    layers = [getattr(plain, n) for n in attention if getattr(plain, n) is not None]
    assert all(m.bias is None for layer in layers for m in layer.modules() if hasattr(m, "bias"))
    old = create_mil(name, IN_DIM, N_CLASSES, mil_bias=False, attn_bias=True)
    assert old.attn_score.bias is not None and old.classifier.bias is None
    assert create_mil(name, IN_DIM, N_CLASSES).attn_score.bias is not None


def test_abmil_without_bias_matches_a_hand_computation():
    torch.manual_seed(0)
    model = create_mil("abmil", IN_DIM, N_CLASSES, mil_bias=False, hidden_dim=8, attn_dim=4)
    model = model.double().eval()
    x = seeded(7, IN_DIM).double()
    assert model.embed[0].bias is None  # Linear, ReLU, Dropout
    h = torch.relu(x @ model.embed[0].weight.T)
    scores = torch.tanh(h @ model.attn_value[0].weight.T) @ model.attn_score.weight.T
    a = torch.softmax(scores.squeeze(-1), dim=0)
    expected = (a @ h) @ model.classifier.weight.T
    out = model(x)
    torch.testing.assert_close(out.logits, expected[None])
    torch.testing.assert_close(out.attention.view(-1), a)


# --- DSMIL ------------------------------------------------------------------------------


def test_dsmil_bag_score_follows_the_critical_instance_equations():
    torch.manual_seed(0)
    model = create_mil("dsmil", IN_DIM, N_CLASSES).eval()
    x = seeded(1, 7, IN_DIM)
    out = model(x)
    h = model.embed(x)[0]
    scores, queries, values = model.instance_classifier(h), model.query(h), model.value(h)
    conv = model.classifier
    for c in range(N_CLASSES):
        critical = scores[:, c].argmax()
        attention = torch.softmax(queries @ queries[critical] / math.sqrt(128), dim=0)
        torch.testing.assert_close(out.attention[0, c], attention)
    bag = out.attention[0] @ values  # (C, 512)
    expected = torch.einsum("ocd,cd->o", conv.weight, bag) + conv.bias
    torch.testing.assert_close(out.logits[0], expected)


def test_dsmil_aux_loss_is_the_ce_of_the_max_instance_score():
    torch.manual_seed(0)
    model = create_mil("dsmil", IN_DIM, N_CLASSES, dropout=0.0).train()
    x, labels = seeded(2, 6, IN_DIM), torch.tensor([1, 2])
    max_scores = model.instance_classifier(model.embed(x)).amax(dim=1)
    torch.testing.assert_close(
        model(x, labels=labels).aux_loss, F.cross_entropy(max_scores, labels)
    )


# --- TransMIL ---------------------------------------------------------------------------


def test_iterative_pinv_matches_the_pseudo_inverse():
    matrix = torch.softmax(seeded(2, 6, 6), dim=-1).double()
    torch.testing.assert_close(iterative_pinv(matrix, 20), torch.linalg.pinv(matrix))


def test_nystrom_attention_is_exact_when_every_token_is_a_landmark():
    torch.manual_seed(0)
    layer = NystromAttention(8, n_heads=2, head_dim=4, n_landmarks=5, pinv_iterations=30)
    layer = layer.double().eval()
    x = seeded(1, 5, 8).double()
    out, row = layer(x, query_index=2)
    q, k, v = (t.view(1, 5, 2, 4).transpose(1, 2) for t in layer.qkv(x).chunk(3, dim=-1))
    attention = torch.softmax(q @ k.transpose(-2, -1) / 2.0, dim=-1)
    mixed = attention @ v + layer.residual(v)
    expected = layer.out(mixed.transpose(1, 2).reshape(1, 5, 8))
    torch.testing.assert_close(out, expected)
    torch.testing.assert_close(row, attention[:, :, 2])


def test_pinv_scale_batch_takes_the_maxima_over_the_whole_tensor():
    """Hand computation of the Newton-Schulz start: 0 iterations return it."""
    matrix = torch.tensor([[[1.0, 2.0], [3.0, 4.0]], [[0.5, 0.0], [0.0, 0.25]]])
    batch = iterative_pinv(matrix, 0, scale="batch")
    # row sums 3, 7 | 0.5, 0.25 -> max 7; column sums 4, 6 | 0.5, 0.25 -> max 6
    torch.testing.assert_close(batch, matrix.transpose(-2, -1) / 42.0)
    slide = iterative_pinv(matrix, 0, scale="slide")
    torch.testing.assert_close(slide[0], matrix[0].T / 42.0)
    torch.testing.assert_close(slide[1], matrix[1].T / (0.5 * 0.5))
    with pytest.raises(ValueError, match="pinv scale"):
        iterative_pinv(matrix, 0, scale="head")


def test_transmil_default_pinv_scale_is_the_official_batch_wide_one():
    torch.manual_seed(0)
    official = create_mil("transmil", IN_DIM, N_CLASSES, n_landmarks=4).eval()
    torch.manual_seed(0)
    per_slide = create_mil("transmil", IN_DIM, N_CLASSES, n_landmarks=4, pinv_scale="slide")
    per_slide.eval()
    x = torch.cat([seeded(1, 30, IN_DIM), 5 * seeded(1, 30, IN_DIM, seed=2)])
    # per slide and head, a slide's output ignores its batch mates; the official scale does not
    torch.testing.assert_close(
        per_slide(x).logits[:1], per_slide(x[:1]).logits, rtol=1e-5, atol=1e-5
    )
    assert (official(x).logits[:1] - official(x[:1]).logits).abs().max() > 1e-4


def test_transmil_pads_with_landmarks_and_keeps_a_valid_attention_for_long_bags():
    torch.manual_seed(0)
    model = create_mil("transmil", IN_DIM, N_CLASSES, n_landmarks=4).eval()
    out = model(seeded(1, 30, IN_DIM))
    assert out.attention.shape == (1, 8, 30)
    torch.testing.assert_close(out.attention.sum(-1), torch.ones(1, 8))


# --- RRT-MIL ----------------------------------------------------------------------------


def test_regions_round_trip_and_cover_the_padded_square():
    x = seeded(2, 40, 3)
    regions, size = to_regions(x, region_num=2)
    assert regions.shape == (2, 4, 16, 3) and size == 4  # side 7 -> 8, regions of 4 x 4
    torch.testing.assert_close(from_regions(regions, 2, size, 40), x)
    grid = F.pad(x, (0, 0, 0, 24)).view(2, 8, 8, 3)
    torch.testing.assert_close(regions[:, 1].view(2, 4, 4, 3), grid[:, :4, 4:])


def test_region_attention_stays_inside_its_region():
    torch.manual_seed(0)
    attention = RegionAttention(8, 2, 0.0, region_num=2, epeg_kernel=3).eval()
    x = seeded(1, 16, 8)  # 4 x 4 grid, regions of 2 x 2
    changed = x.clone()
    changed[0, 0] += 1.0  # token (0, 0) lies in the region of tokens 0, 1, 4, 5
    moved = (attention(changed) - attention(x)).abs().sum(-1)[0] > 1e-6
    assert moved.nonzero().flatten().tolist() == [0, 1, 4, 5]


def test_cross_region_attention_mixes_regions():
    torch.manual_seed(0)
    model = create_mil("rrtmil", IN_DIM, N_CLASSES, region_num=2).eval()
    x = seeded(1, 16, IN_DIM)
    h = model.layer_norms[1](model.embed(x))
    changed = h.clone()
    changed[0, 0] += 1.0
    moved = (model.cross_region_attention(changed) - model.cross_region_attention(h)).abs()
    assert (moved.sum(-1)[0, [2, 3, 6, 7]] > 1e-6).all()  # the next region over


def test_cross_region_attention_matches_its_equations():
    torch.manual_seed(0)
    model = create_mil("rrtmil", IN_DIM, N_CLASSES, region_num=2, crmsa_k=2).eval()
    cross = model.cross_region_attention
    x = seeded(1, 16, 512)
    regions, _ = to_regions(x, 2)  # (1, 4 regions, 4 tokens, 512)
    representatives, weights = [], []
    for region in regions[0]:
        logits = region @ cross.phi  # (tokens, k)
        combine = torch.softmax(logits, dim=0)
        minmax = (logits - logits.min(0).values) / (logits.max(0).values - logits.min(0).values)
        weights.append(torch.softmax(logits, dim=1) * minmax)
        representatives.append(combine.T @ region)  # (k, 512)
    stacked = torch.stack(representatives)  # (regions, k, 512)
    mixed = torch.stack([cross.attention(stacked[:, j][None])[0] for j in range(2)], dim=1)
    expected = torch.stack([w @ m for w, m in zip(weights, mixed, strict=True)])[None]
    torch.testing.assert_close(cross(x), from_regions(expected, 2, 2, 16), atol=1e-5, rtol=1e-4)


# --- DTFD -------------------------------------------------------------------------------


def test_dtfd_eval_split_is_fixed_and_training_splits_vary():
    torch.manual_seed(0)
    model = create_mil("dtfd", IN_DIM, N_CLASSES, dropout=0.0)
    x = seeded(1, 23, IN_DIM)
    model.eval()
    torch.testing.assert_close(model(x).attention, model(x).attention, rtol=0, atol=0)
    other_seed = create_mil("dtfd", IN_DIM, N_CLASSES, dropout=0.0, split_seed=1).eval()
    other_seed.load_state_dict(model.state_dict())
    assert not torch.allclose(other_seed(x).logits, model(x).logits)
    model.train()
    assert not torch.allclose(model(x).logits, model(x).logits)


def test_dtfd_handles_bags_smaller_than_the_pseudo_bag_count():
    torch.manual_seed(0)
    model = create_mil("dtfd", IN_DIM, N_CLASSES).train()
    out = model(seeded(2, 3, IN_DIM), labels=torch.tensor([0, 1]))
    assert torch.isfinite(out.logits).all() and torch.isfinite(out.aux_loss)
    torch.testing.assert_close(out.attention.sum(-1), torch.ones(2, 1))


def test_dtfd_attention_is_in_the_input_order():
    """With one pseudo-bag, DTFD's attention is its tier-1 gated attention over the slide."""
    torch.manual_seed(0)
    model = create_mil("dtfd", IN_DIM, N_CLASSES, n_pseudo_bags=1).eval()
    x = seeded(1, 9, IN_DIM)
    torch.testing.assert_close(model(x).attention, model.tier1_attention(model.embed(x)))


def test_dtfd_max_attention_distils_an_instance_embedding():
    torch.manual_seed(0)
    model = create_mil("dtfd", IN_DIM, N_CLASSES, n_pseudo_bags=1, distill="max_attention")
    x = seeded(1, 9, IN_DIM)
    model.eval()
    h = model.embed(x)
    top = model.tier1_attention(h)[0, 0].argmax()
    torch.testing.assert_close(model(x).embedding, h[:, top])


# --- WiKG -------------------------------------------------------------------------------


def test_wikg_runs_on_bags_smaller_than_topk():
    torch.manual_seed(0)
    out = create_mil("wikg", IN_DIM, N_CLASSES).eval()(seeded(1, 4, IN_DIM))
    assert torch.isfinite(out.logits).all() and out.attention.shape == (1, 1, 4)


def test_wikg_matches_its_equations_instance_by_instance():
    torch.manual_seed(0)
    model = create_mil("wikg", IN_DIM, N_CLASSES, topk=3).eval()
    x = seeded(1, 6, IN_DIM)
    h = model.embed(x)[0]
    h = (h + h.mean(0)) / 2
    e_head, e_tail = model.head(h), model.tail(h)
    z = []
    for i in range(6):
        logits = torch.stack([e_head[i] @ e_tail[j] for j in range(6)]) / math.sqrt(512)
        top = logits.topk(3)
        p = torch.softmax(top.values, 0)
        gates = [
            torch.tanh(e_head[i] + p[n] * e_tail[j] + (1 - p[n]) * e_head[i])
            for n, j in enumerate(top.indices)
        ]
        w = torch.softmax(
            torch.stack([e_tail[j] @ g for j, g in zip(top.indices, gates, strict=True)]), 0
        )
        message = sum(w[n] * e_tail[j] for n, j in enumerate(top.indices))
        z.append(
            F.leaky_relu(model.sum_interaction(h[i] + message))
            + F.leaky_relu(model.product_interaction(h[i] * message))
        )
    z = torch.stack(z)
    attention = torch.softmax(model.readout(z)[:, 0], 0)
    expected = model.classifier(model.norm(attention @ z))
    out = model(x)
    torch.testing.assert_close(out.attention[0, 0], attention)
    torch.testing.assert_close(out.logits[0], expected)


# --- 2DMamba ----------------------------------------------------------------------------


def test_2d_selective_scan_matches_its_closed_form():
    decay, inputs = torch.rand(3, 4, 2).double(), seeded(3, 4, 2).double()
    expected = torch.zeros_like(inputs)
    for i in range(3):
        for j in range(4):
            for r in range(i + 1):
                for c in range(j + 1):
                    # row pass from (r, c) to (r, j), then column pass from (r, j) to (i, j)
                    path = decay[r, c + 1 : j + 1].prod(0) * decay[r + 1 : i + 1, j].prod(0)
                    expected[i, j] += path * inputs[r, c]
    torch.testing.assert_close(selective_scan_2d(decay, inputs), expected)


def test_grid_cells_from_patch_coordinates():
    coords = torch.tensor([[512, 0], [0, 256], [256, 256], [768, 512]])
    cells, height, width = grid_cells(coords, 4)
    assert cells.tolist() == [[0, 2], [1, 0], [1, 1], [2, 3]] and (height, width) == (3, 4)
    with pytest.raises(ValueError, match="same grid cell"):
        grid_cells(torch.tensor([[0, 0], [0, 0]]), 2)


def test_mamba2d_depends_on_positions_not_on_instance_order():
    torch.manual_seed(0)
    model = create_mil("mamba2d", IN_DIM, N_CLASSES).eval()
    x = seeded(1, 7, IN_DIM)
    coords = torch.tensor([[0, 0], [1, 0], [3, 0], [0, 1], [2, 1], [1, 2], [3, 3]]) * 224
    order = torch.randperm(7, generator=torch.Generator().manual_seed(3))
    out = model(x, coords[None])
    shuffled = model(x[:, order], coords[None, order])
    torch.testing.assert_close(shuffled.logits, out.logits)
    torch.testing.assert_close(shuffled.attention, out.attention[..., order])
    moved = coords.clone()
    moved[[0, 6]] = moved[[6, 0]]
    assert not torch.allclose(model(x, moved[None]).logits, out.logits)


def test_mamba2d_pseudo_grid_is_the_row_major_square():
    torch.manual_seed(0)
    model = create_mil("mamba2d", IN_DIM, N_CLASSES).eval()
    x = seeded(1, 7, IN_DIM)
    index = torch.arange(7)
    coords = torch.stack([index % 3, index // 3], dim=1) * 256  # (x = column, y = row)
    torch.testing.assert_close(model(x).logits, model(x, coords[None]).logits)
