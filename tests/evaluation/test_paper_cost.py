"""Cost as the paper counts it: #Parameter like '12M+0.80M', FLOPs of a 512-patch forward."""

from __future__ import annotations

import pytest
import torch

from abmilx.evaluation import paper_cost as cost
from abmilx.evaluation.evaluate import memory_cost
from abmilx.models import create_encoder, create_mil


@pytest.mark.parametrize(
    ("encoder", "paper_flops", "paper_encoder_params"),
    [
        ("resnet18_layer3", 0.93e12, "12M"),
        ("resnet50_layer3", 2.12e12, "26M"),
        ("resnet50_layer3_v1", 2.12e12, "26M"),  # the paper configs' two-stage features
    ],
)
def test_paper_flops_and_parameters_of_the_resnets(encoder, paper_flops, paper_encoder_params):
    dim = create_encoder(encoder).out_dim
    aggregator = create_mil("abmil", dim, 2)
    counted = cost.paper_cost(encoder, aggregator, dim)
    assert counted["paper_macs"] == pytest.approx(paper_flops, rel=0.02)
    assert counted["paper_params"].startswith(f"{paper_encoder_params}+")
    aggregator_params = sum(p.numel() for p in aggregator.parameters())
    assert counted["paper_params_aggregator"] == aggregator_params
    assert counted["paper_flops"] == f"{counted['paper_macs'] / 1e12:.2f}T"


def test_short_counts_print_like_the_paper():
    assert cost.short_count(11_689_512) == "12M"
    assert cost.short_count(800_000) == "0.80M"
    assert cost.short_count(2.09e12, "T") == "2.09T"


def test_inference_time_runs_every_patch_through_both_models(monkeypatch):
    monkeypatch.setattr(cost, "INFERENCE_PATCHES", 20)
    monkeypatch.setattr(cost, "PAPER_PATCHES", 8)
    seen = []
    encoder = torch.nn.Sequential(torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten())
    encoder.register_forward_hook(lambda module, args, out: seen.append(out.shape[0]))
    aggregator = create_mil("abmil", 3, 2)
    seconds = cost.inference_seconds(encoder, aggregator, torch.device("cpu"))
    assert seconds > 0 and seen == [8, 8, 4]


def test_memory_says_which_memory_it_is():
    assert memory_cost({"peak_rss_mb": 900.0}) == {
        "memory_mb": 900.0,
        "memory_source": "cpu peak rss",
    }
    both = memory_cost({"peak_rss_mb": 900.0, "peak_gpu_mb": 5000.0})
    assert both == {"memory_mb": 5000.0, "memory_source": "gpu peak allocated"}


def test_features_without_an_encoder_count_the_aggregator_only():
    aggregator = create_mil("abmil", 64, 2)
    counted = cost.paper_cost(None, aggregator, 64)
    assert counted["paper_params"].startswith("?+")
    assert counted["paper_flops"].endswith("(aggregator only)")
    assert 0 < counted["paper_macs"] < 1e9
