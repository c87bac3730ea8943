"""ABMILX against the official DAttentionX equations (docs/method.md), written out in numpy."""

import math

import numpy as np
import pytest
import torch

from abmilx.models import count_parameters, create_mil
from abmilx.models.mil.abmilx import AttentionPlus, attention_hidden_dim

N, D_IN, D, H, C = 3, 4, 4, 2, 3
HEAD = D // H


def gelu(v):
    return 0.5 * v * (1.0 + np.vectorize(math.erf)(v / math.sqrt(2.0)))


def layer_norm(v, gain, bias, eps=1e-5):
    mean = v.mean(-1, keepdims=True)
    var = ((v - mean) ** 2).mean(-1, keepdims=True)
    return (v - mean) / np.sqrt(var + eps) * gain + bias


def softmax(v):
    e = np.exp(v - v.max())
    return e / e.sum()


def explicit_weights(model):
    """Give every parameter a distinct, seeded value so that no term can hide."""
    rng = np.random.default_rng(7)
    with torch.no_grad():
        for param in model.parameters():
            param.copy_(torch.from_numpy(rng.normal(0, 0.7, tuple(param.shape))))
    return {name: p.detach().numpy().copy() for name, p in model.named_parameters()}


def reference(x, w, mil_norm, ffn, attn_plus, shortcut):
    """The equations step by step for one slide; w maps parameter names to arrays (Linear: out x in)."""
    h = layer_norm(x, w["embed.0.weight"], w["embed.0.bias"]) if mil_norm == "ln" else x
    first = 1 if mil_norm == "ln" else 0
    z = gelu(h @ w[f"embed.{first}.weight"].T + w[f"embed.{first}.bias"])  # dropout: eval
    pooled = []
    attentions = []
    for head in range(H):
        zh = z[:, head * HEAD : (head + 1) * HEAD]
        a = np.array(
            [
                gelu(zh[i] @ w["attention.fc1.weight"].T + w["attention.fc1.bias"])
                @ w["attention.fc2.weight"].T
                + w["attention.fc2.bias"]
                for i in range(N)
            ]
        )[:, 0]
        if attn_plus:
            zn = layer_norm(zh, w["attn_plus.norm.weight"], w["attn_plus.norm.bias"])
            qk = zn @ w["attn_plus.qk.weight"].T
            q, k = qk[:, :HEAD], qk[:, HEAD:]
            s = np.zeros((N, N))
            for i in range(N):
                s[i] = softmax(np.array([q[i] @ k[j] / math.sqrt(HEAD) for j in range(N)]))
            alpha = w["attn_plus.alpha"].item()
            propagated = np.array([alpha * sum(s[i, j] * a[j] for j in range(N)) for i in range(N)])
            a = a + propagated if shortcut else propagated
        attention = softmax(a)
        attentions.append(attention)
        pooled.append(sum(attention[i] * zh[i] for i in range(N)))
    slide = np.concatenate(pooled) @ w["proj.weight"].T + w["proj.bias"]
    if ffn:
        pre = slide if mil_norm == "ln" else layer_norm(slide, w["ffn.0.weight"], w["ffn.0.bias"])
        hidden = gelu(pre @ w["ffn.1.weight"].T + w["ffn.1.bias"])
        slide = slide + hidden @ w["ffn.3.weight"].T + w["ffn.3.bias"]
    if mil_norm == "ln":
        slide = layer_norm(slide, w["norm1.weight"], w["norm1.bias"])
    return slide @ w["classifier.weight"].T + w["classifier.bias"], np.stack(attentions)


@pytest.mark.parametrize(
    "mil_norm, ffn, attn_plus, shortcut",
    [
        ("ln", False, True, True),
        ("none", True, True, True),
        ("ln", True, True, True),
        ("none", False, False, True),
        ("none", False, True, False),
    ],
)
def test_matches_hand_computation(mil_norm, ffn, attn_plus, shortcut):
    model = create_mil(
        "abmilx",
        D_IN,
        C,
        inner_dim=D,
        n_heads=H,
        mil_norm=mil_norm,
        ffn=ffn,
        attn_plus=attn_plus,
        attn_plus_shortcut=shortcut,
        mil_bias=True,
        attn_bias=True,
        attn_plus_impl="explicit",
    )
    model = model.double().eval()
    weights = explicit_weights(model)
    x = np.random.default_rng(3).normal(size=(N, D_IN))
    expected_logits, expected_attention = reference(x, weights, mil_norm, ffn, attn_plus, shortcut)
    out = model(torch.from_numpy(x))
    np.testing.assert_allclose(
        out.logits[0].detach().numpy(), expected_logits, rtol=1e-10, atol=1e-12
    )
    np.testing.assert_allclose(out.attention[0].detach().numpy(), expected_attention, rtol=1e-10)


def test_sdpa_padded_path_equals_explicit_path():
    torch.manual_seed(0)
    model = create_mil("abmilx", 32, 2, inner_dim=64, n_heads=4, attn_plus_impl="explicit").eval()
    x = torch.randn(2, 300, 32, requires_grad=True)
    explicit = model(x)
    explicit.logits.sum().backward()
    explicit_grad = x.grad.clone()
    x.grad = None
    model.attn_plus.impl = "sdpa"
    fused = model(x)
    fused.logits.sum().backward()
    torch.testing.assert_close(fused.attention, explicit.attention, rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(fused.logits, explicit.logits, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(x.grad, explicit_grad, rtol=1e-3, atol=1e-6)


def test_auto_switches_to_sdpa_for_large_bags():
    plus = AttentionPlus(8, impl="auto", sdpa_min_instances=1000)
    assert not plus.uses_sdpa(999) and plus.uses_sdpa(1000)
    assert AttentionPlus(8, impl="sdpa").uses_sdpa(2) and not AttentionPlus(
        8, impl="explicit"
    ).uses_sdpa(10**6)


def test_learnable_alpha_is_standard_normal_at_init():
    draws = []
    for seed in range(400):
        torch.manual_seed(seed)
        draws.append(create_mil("abmilx", 8, 2, inner_dim=8, n_heads=2).attn_plus.alpha.item())
    assert abs(np.mean(draws)) < 0.15 and 0.85 < np.std(draws) < 1.15
    assert min(draws) < 0 < max(draws)


def test_alpha_options():
    fixed = create_mil("abmilx", 8, 2, inner_dim=8, n_heads=2, alpha="fixed")
    assert fixed.attn_plus.alpha.item() == 1.0
    assert "attn_plus.alpha" not in dict(fixed.named_parameters())
    chosen = create_mil("abmilx", 8, 2, inner_dim=8, n_heads=2, alpha_init=0.0)
    assert chosen.attn_plus.alpha.item() == 0.0 and chosen.attn_plus.alpha.requires_grad
    with pytest.raises(ValueError, match="alpha"):
        create_mil("abmilx", 8, 2, alpha="frozen")


def test_linear_init_is_xavier_normal_with_zero_bias():
    torch.manual_seed(0)
    model = create_mil("abmilx", 1024, 2, mil_bias=True, attn_bias=True)
    weight = model.embed[0].weight
    expected_std = math.sqrt(2.0 / (1024 + 512))
    assert abs(weight.std().item() / expected_std - 1) < 0.02
    assert all(
        not layer.bias.any()
        for layer in model.modules()
        if isinstance(layer, torch.nn.Linear) and layer.bias is not None
    )


def test_attention_mlp_width_rule():
    assert attention_hidden_dim(64, 8, None) == 64
    assert attention_hidden_dim(64, 8, 128) == 16  # > 10: total width split over heads
    assert attention_hidden_dim(64, 8, 2) == 32  # <= 10: divisor of the head dim
    model = create_mil("abmilx", 16, 2, inner_dim=64, n_heads=8, attn_dim=128)
    assert model.attention.fc1.out_features == 16


@pytest.mark.parametrize(
    "options, n_classes, millions",
    [
        # parameter counts of the official DAttentionX class for the same options
        (dict(in_dim=256, inner_dim=256, n_heads=8, mil_norm="ln"), 2, 0.135),
        (dict(in_dim=256, inner_dim=256, n_heads=8, mil_norm="ln", attn_bias=True), 4, 0.136),
        (dict(in_dim=256, inner_dim=512, n_heads=4, mil_norm="ln", ffn=True), 6, 2.546),
        (dict(in_dim=1024, inner_dim=256, n_heads=8, mil_norm="ln"), 2, 0.333),
        (dict(in_dim=1024, inner_dim=256, n_heads=4, mil_norm="ln", ffn=True), 6, 0.869),
        (dict(in_dim=1024, inner_dim=512, n_heads=8, mil_bias=True, attn_bias=True), 2, 0.801),
    ],
)
def test_parameter_counts_match_the_official_configs(options, n_classes, millions):
    in_dim = options.pop("in_dim")
    model = create_mil("abmilx", in_dim, n_classes, **options)
    assert round(count_parameters(model) / 1e6, 3) == millions


def test_abmil_parameter_counts_against_the_paper():
    """Paper: ABMIL "+0.66M". Plain ABMIL (attention 128) is 0.592 M, gated 0.657 M."""
    assert count_parameters(create_mil("abmil", 1024, 2)) == 591_619
    gated = count_parameters(create_mil("gated_abmil", 1024, 2))
    assert gated == 657_283 and abs(gated / 0.66e6 - 1) < 0.05


def test_inner_dim_must_split_into_heads():
    with pytest.raises(ValueError, match="divisible"):
        create_mil("abmilx", 8, 2, inner_dim=10, n_heads=4)
