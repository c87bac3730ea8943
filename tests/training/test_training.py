"""Shared training machinery: schedule, losses, EMA, selection metric, run files."""

import math
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from torch import nn

from abmilx.training.ema import ModelEma
from abmilx.training.losses import nll_survival_loss, risk_from_logits
from abmilx.training.optim import WarmupCosine, build_optimizer
from abmilx.training.runs import load_run, save_run
from abmilx.training.selection import selection_metric

torch.set_num_threads(1)


def test_warmup_cosine_matches_formula():
    optimizer = build_optimizer(nn.Linear(2, 2).parameters(), "adamw", lr=8e-5, weight_decay=0.0)
    schedule = WarmupCosine(optimizer, lr=8e-5, epochs=75, warmup_epochs=10)
    assert schedule.set_epoch(0) == pytest.approx(1e-6)
    assert optimizer.param_groups[0]["lr"] == pytest.approx(1e-6)
    assert schedule.lr_at(5) == pytest.approx(1e-6 + 5 * (8e-5 - 1e-6) / 10)
    for epoch in (10, 40, 74):
        expected = 1e-7 + 0.5 * (8e-5 - 1e-7) * (1 + math.cos(math.pi * epoch / 75))
        assert schedule.lr_at(epoch) == pytest.approx(expected, rel=1e-12)
    assert schedule.lr_at(10) < 8e-5  # the cosine counts from epoch 0: no plateau at the peak


def test_cosine_without_warmup_starts_at_peak():
    optimizer = build_optimizer(nn.Linear(2, 2).parameters(), "adam", lr=2e-4, weight_decay=0.0)
    assert isinstance(optimizer, torch.optim.Adam)
    assert WarmupCosine(optimizer, lr=2e-4, epochs=200).lr_at(0) == pytest.approx(2e-4)


def test_nll_survival_loss_by_hand():
    logits = torch.tensor([[0.0, 1.0, -1.0, 2.0], [0.5, -0.5, 0.0, 1.0]])
    label = torch.tensor([2, 1])
    event = torch.tensor([1, 0])  # first uncensored, second censored
    h = 1 / (1 + np.exp(-logits.numpy().astype(np.float64)))
    s = np.cumprod(1 - h, axis=1)
    uncensored = -(np.log(s[0, 1]) + np.log(h[0, 2]))  # -log S_{y-1} - log h_y with y = 2
    censored = -np.log(s[1, 1])  # -log S_y with y = 1
    expected = (uncensored + censored) / 2
    assert nll_survival_loss(logits, label, event).item() == pytest.approx(expected, rel=1e-6)


def test_nll_survival_loss_first_bin_and_clamp():
    logits = torch.tensor([[-30.0, 0.0]])
    loss = nll_survival_loss(logits, torch.tensor([0]), torch.tensor([1]))
    # S_{-1} = 1 and h_0 = sigmoid(-30) < 1e-7 is clamped at 1e-7
    assert loss.item() == pytest.approx(-math.log(1e-7), rel=1e-6)


def test_risk_is_negative_expected_survival():
    logits = torch.tensor([[-3.0, -3.0], [3.0, 3.0]])
    risk = risk_from_logits(logits)
    h = torch.sigmoid(logits)
    assert torch.allclose(risk, -(torch.cumprod(1 - h, 1)).sum(1))
    assert risk[1] > risk[0]  # high hazards = high risk


def test_model_ema_lerps_floats_and_copies_ints():
    model = nn.BatchNorm1d(3)
    ema = ModelEma(model, decay=0.9)
    with torch.no_grad():
        model.weight.fill_(2.0)
    model.num_batches_tracked.fill_(7)
    ema.update(model)
    assert torch.allclose(ema.module.weight, torch.full((3,), 0.9 * 1.0 + 0.1 * 2.0))
    assert ema.module.num_batches_tracked.item() == 7
    assert not ema.module.training


def test_selection_metrics():
    labels = np.array([0, 1, 1, 0])
    logits = np.array([[1.0, 0.0], [0.0, 2.0], [0.0, 1.0], [0.5, 0.0]])
    assert selection_metric("classification", logits, labels) == 1.0
    assert math.isnan(selection_metric("classification", logits, np.zeros(4, int)))
    three = np.eye(3)[[0, 1, 2, 2]]
    assert selection_metric("classification", three, np.array([0, 1, 2, 0])) == pytest.approx(
        (1 + 1 + 0.5) / 3
    )
    times = np.array([1.0, 2.0, 3.0])
    events = np.array([1, 1, 1])
    risky_first = np.array([[3.0, 3.0], [0.0, 0.0], [-3.0, -3.0]])
    assert selection_metric("survival", risky_first, None, times, events) == 1.0


def test_save_and_load_run(tmp_path):
    save_run(
        tmp_path / "model.pt",
        kind="two_stage",
        task="classification",
        classes=["a", "b"],
        settings={"lr": 1.0},
        state_dict={"w": torch.ones(2)},
        history=[{"epoch": 0}],
        cost={"train_seconds": 1.0, "peak_rss_mb": 2.0, "params": 2},
    )
    run = load_run(tmp_path)
    assert run["kind"] == "two_stage" and run["classes"] == ["a", "b"]
    assert "ema_state_dict" not in run


def test_load_fold_repeats_oversampled_training_bags(tmp_path):
    from abmilx.training.bags import load_fold

    split = tmp_path / "split.csv"
    split.write_text(
        "slide_id,case_id,label,split,fold,repeat\n"
        "a,ca,IDC,train,0,1\n"
        "b,cb,ILC,train,0,3\n"
        "c,cc,ILC,test,0,1\n"
    )
    bags, classes = load_fold(split, 0, "classification", ["IDC", "ILC"])
    assert [bag.key for bag in bags["train"]] == ["a", "b", "b", "b"]
    assert [bag.key for bag in bags["test"]] == ["c"]
    assert classes == ["IDC", "ILC"]


def test_bag_loss_adds_the_weighted_instance_loss_of_models_that_have_one():
    import torch.nn.functional as F

    from abmilx.models import call_mil, create_mil
    from abmilx.training.losses import bag_loss

    torch.manual_seed(0)
    features, label = torch.randn(1, 20, 16), torch.tensor([1])
    clam = create_mil("clam_sb", 16, 2, k_sample=4).train()
    torch.manual_seed(1)
    output = call_mil(clam, features, labels=label)
    assert output.aux_loss is not None
    expected = F.cross_entropy(output.logits, label) + 0.3 * output.aux_loss
    assert torch.allclose(bag_loss("classification", output, label, None, aux_weight=0.3), expected)
    abmil = create_mil("abmil", 16, 2).train()
    plain = call_mil(abmil, features, labels=label)  # abmil takes no labels: not passed
    assert plain.aux_loss is None
    assert torch.allclose(
        bag_loss("classification", plain, label, None, aux_weight=1.0),
        F.cross_entropy(plain.logits, label),
    )


def test_selection_on_the_test_set_is_explicit_and_uses_test_bags():
    from abmilx.training.bags import Bag, selection_bags

    bags = {"train": [Bag("a", ("a",), 0)], "test": [Bag("t", ("t",), 1)]}
    assert selection_bags(bags, "last") == ([], "last")
    assert selection_bags(bags, "val") == ([], "val")
    assert selection_bags(bags, "test_official") == (bags["test"], "val")
    with pytest.raises(ValueError, match="selection"):
        selection_bags(bags, "test")


@pytest.mark.parametrize(("given", "expected"), [(None, "PASSIVE"), ("ACTIVE", "ACTIVE")])
def test_importing_the_package_keeps_idle_openmp_threads_asleep(given, expected):
    """Before torch loads libgomp, unless the user chose a policy."""
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    if given is not None:
        env["OMP_WAIT_POLICY"] = given
    probe = "import os, sys, abmilx; print(os.environ['OMP_WAIT_POLICY'], 'torch' in sys.modules)"
    result = subprocess.run(
        [sys.executable, "-c", probe], env=env, capture_output=True, text=True, check=True
    )
    assert result.stdout.split() == [expected, "False"]
