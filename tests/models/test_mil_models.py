"""Properties every registered MIL model must have, checked on the real modules."""

import inspect

import pytest
import torch

from abmilx.models import MILOutput, create_mil, list_mils

IN_DIM, N_CLASSES, N_INSTANCES = 16, 3, 9
ORDER_INVARIANT = {
    "abmil",
    "gated_abmil",
    "abmilx",
    "mean_pool",
    "max_pool",
    "vitmil",
    "qamil",
    "clam_sb",
    "clam_mb",
    "dsmil",
    "wikg",
}
LABELS = torch.arange(N_CLASSES)  # one bag per class: every instance classifier is used


def takes_labels(model: torch.nn.Module) -> bool:
    return "labels" in inspect.signature(model.forward).parameters


def training_loss(model: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    """What a trainer backpropagates: the logits plus the instance loss where there is one."""
    if not takes_labels(model):
        return model(x).logits.sum()
    out = model(x, labels=LABELS)
    return out.logits.sum() + out.aux_loss


# Options under which a slide's output does not depend on its batch mates (TransMIL's official
# pseudo-inverse scale is taken over the whole batch; test_baselines checks that default).
BATCH_INDEPENDENT = {"transmil": {"pinv_scale": "slide"}}


def build(name: str, **options) -> torch.nn.Module:
    torch.manual_seed(0)
    return create_mil(name, IN_DIM, N_CLASSES, **options)


def bags(batch: int = 2, n: int = N_INSTANCES) -> torch.Tensor:
    return torch.randn(batch, n, IN_DIM, generator=torch.Generator().manual_seed(1))


def test_registry_holds_the_required_models():
    assert set(list_mils()) >= ORDER_INVARIANT


@pytest.mark.parametrize("name", list_mils())
def test_output_shapes_and_attention_normalised(name):
    model = build(name).eval()
    out = model(bags())
    assert isinstance(out, MILOutput)
    assert out.logits.shape == (2, N_CLASSES)
    assert out.embedding.dim() == 2 and out.embedding.shape[0] == 2
    assert torch.isfinite(out.logits).all()
    if out.attention is not None:
        assert out.attention.dim() == 3
        assert out.attention.shape[0] == 2 and out.attention.shape[2] == N_INSTANCES
        assert (out.attention >= 0).all()
        torch.testing.assert_close(out.attention.sum(-1), torch.ones(out.attention.shape[:2]))


@pytest.mark.parametrize("name", sorted(ORDER_INVARIANT))
def test_invariant_to_instance_order(name):
    model = build(name).eval()
    x = bags()
    order = torch.randperm(N_INSTANCES, generator=torch.Generator().manual_seed(2))
    out, shuffled = model(x), model(x[:, order])
    torch.testing.assert_close(shuffled.logits, out.logits, rtol=1e-5, atol=1e-5)
    if out.attention is not None:
        torch.testing.assert_close(shuffled.attention, out.attention[..., order])


@pytest.mark.parametrize("name", list_mils())
def test_gradients_reach_the_input_features(name):
    model = build(name).train()
    x = bags(batch=len(LABELS)).requires_grad_()
    training_loss(model, x).backward()
    assert x.grad is not None and torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0
    no_grad = [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None]
    assert not no_grad, f"parameters outside the graph: {no_grad}"


@pytest.mark.parametrize("name", list_mils())
def test_eval_is_deterministic_and_train_uses_dropout(name):
    model = build(name)
    x = bags()
    model.eval()
    torch.testing.assert_close(model(x).logits, model(x).logits, rtol=0, atol=0)
    model.train()
    torch.manual_seed(3)
    first = model(x).logits
    torch.manual_seed(4)
    assert not torch.equal(first, model(x).logits)


@pytest.mark.parametrize("name", list_mils())
def test_slide_alone_equals_slide_in_batch(name):
    model = build(name, **BATCH_INDEPENDENT.get(name, {})).eval()
    x = bags(batch=2)
    together = model(x)
    for i in range(2):
        alone = model(x[i : i + 1])
        torch.testing.assert_close(alone.logits, together.logits[i : i + 1], rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(
            alone.embedding, together.embedding[i : i + 1], rtol=1e-5, atol=1e-5
        )


@pytest.mark.parametrize("name", list_mils())
def test_unbatched_bag_and_coords(name):
    model = build(name).eval()
    x = bags(batch=1)[0]
    coords = torch.arange(2 * N_INSTANCES).view(N_INSTANCES, 2)
    out = model(x, coords=coords)
    assert x.shape == (N_INSTANCES, IN_DIM), "the caller's tensor was reshaped in place"
    assert coords.shape == (N_INSTANCES, 2), "the caller's coords were reshaped in place"
    torch.testing.assert_close(out.logits, model(x.unsqueeze(0), coords.unsqueeze(0)).logits)


@pytest.mark.parametrize("name", list_mils())
def test_aux_loss_only_in_training_with_labels(name):
    model = build(name)
    x = bags(batch=len(LABELS))
    if not takes_labels(model):
        assert model.train()(x).aux_loss is None
        return
    assert model.train()(x).aux_loss is None
    aux = model(x, labels=LABELS).aux_loss
    assert aux.dim() == 0 and torch.isfinite(aux) and aux > 0
    assert model.eval()(x, labels=LABELS).aux_loss is None


@pytest.mark.parametrize("name", list_mils())
def test_unknown_option_is_rejected(name):
    with pytest.raises(TypeError):
        create_mil(name, IN_DIM, N_CLASSES, not_an_option=1)


def test_unknown_name_lists_the_choices():
    with pytest.raises(ValueError, match="abmilx"):
        create_mil("abmilz", IN_DIM, N_CLASSES)


@pytest.mark.parametrize("name", sorted(ORDER_INVARIANT))
def test_bias_free_and_layernorm_options(name):
    model = create_mil(name, IN_DIM, N_CLASSES, mil_norm="ln", mil_bias=False)
    assert isinstance(model.embed[0], torch.nn.LayerNorm) and model.embed[0].bias is None
    assert model.classifier.bias is None
    assert model(bags()).logits.shape == (2, N_CLASSES)
