"""The speed benches run end to end at tiny sizes and print each figure beside its limit."""

import importlib
import math
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def bench(monkeypatch):
    monkeypatch.syspath_prepend(str(REPO))
    return lambda name: importlib.import_module(f"bench.{name}")


def test_bootstrap_bench(bench, capsys):
    seconds = bench("bootstrap_metrics").main(["--cases", "300", "--resamples", "50"])
    assert len(seconds) == 3 and all(0 < s < 60 for s in seconds.values())
    assert capsys.readouterr().out.count("(limit < 1 CPU s)") == 3


def test_inference_bench(bench, capsys):
    results = bench("inference").main(["--patches", "64"])
    assert len(results) == 2
    for rates in results.values():
        assert rates["full_patches_per_s"] > 0 and rates["pure_patches_per_s"] > 0
    assert capsys.readouterr().out.count("(limit >= 0.8)") == 2


def test_e2e_step_bench(bench, capsys):
    result = bench("e2e_step").main(["--steps", "1", "--warmup", "0"])
    assert result["device"] in ("cpu", "cuda") and math.isfinite(result["ratio"])
    assert "full-path step rate / pure-model step rate" in capsys.readouterr().out


def test_segmentation_bench(bench, capsys):
    results = bench("segmentation").main(["--slides", "2", "--views", "4,16"])
    assert set(results) == {4.0, 16.0}
    assert results[4.0]["iou_min"] >= 0.9  # the default view, as tests/segmentation require
    for row in results.values():
        assert row["cpu_s"] > 0 and 0 <= row["artefact_kept"] <= row["worst"] <= 1
    assert capsys.readouterr().out.count("(default)") == 1


def test_bench_writes_the_dated_performance_page(bench, tmp_path):
    page = tmp_path / "docs" / "performance.md"
    sections = bench("__main__").main(["--only", "bootstrap_metrics", "--markdown", str(page)])
    text = page.read_text()
    assert list(sections) == ["bootstrap_metrics"]
    assert text.startswith("# Performance\n\nGenerated on 20")
    assert "- CPU: " in text and "- commit: " in text
    assert text.count("(limit < 1 CPU s)") == 3
    assert "Not run for this page" in text and "- Tiling per slide" in text


def test_scale_bench(bench, capsys):
    """12 placeholder PANDA slides: planned in shards of 5 per stage, finished, no-op."""
    (row,) = bench("scale").main(["--panda", "12", "--tcga", "0", "--slides-per-job", "5"])
    assert row["by_group"] == {}  # no job groups: a paper cohort's slides are files, not drawn
    assert (
        row["by_rule"]["segment_tissue"] == row["by_rule"]["tile_slide"] == 3
    )  # 12 slides, 5 a job
    assert not {"adapt_sheets", "make_splits", "combine_feature_shards"} & set(row["by_rule"])
    assert row["by_rule"]["pack_tiles"] == 1 and row["by_rule"]["train_e2e"] > 1
    assert row["noop_jobs"] == 0  # every output present: nothing left to run
    assert row["noop_recorded_jobs"] == 0  # and Snakemake's records of them agree
    assert row["floor_rules"] == ["segment_tissue", "tile_slide"]  # the floor plans the same
    for key in ("plain", "slurm", "floor", "noop", "noop_recorded"):
        assert row[key]["wall_s"] > 0 and row[key]["cpu_s"] > 0 and row[key]["peak_mb"] > 50
    out = capsys.readouterr().out
    assert "(limit 20 s, 1024 MB:" in out and "(limit 30 s:" in out
    assert "segment_tissue                3  (per-slide stage; limit 3: OK)" in out


def test_pack_bench(bench, capsys):
    """6 small per-slide stores: index and copy built, measured and read, 2 stores open."""
    row = bench("pack").main(
        ["--slides", "6", "--patches", "20", "--n-patches", "16", "--bags", "4", "--rounds", "1",
         "--max-open", "2"]
    )  # fmt: skip
    assert (
        0 < row["index_mb"] < 0.1 * row["packed_mb"] and row["packed_mb"] > 0.5 * row["stores_mb"]
    )
    assert row["index_s"] > 0 and row["copy_s"] > 0 and row["ratio"] > 0
    assert row["index_patches_per_s"] > 0 and row["copy_patches_per_s"] > 0
    out = capsys.readouterr().out
    assert "index read rate / packed read rate" in out and "(limit >= 0.9)" in out
