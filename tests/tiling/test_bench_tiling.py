"""The tiling bench runs the per-slide commands end to end at a tiny size."""

import importlib
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_tiling_bench_runs_both_tile_sizes(monkeypatch, capsys):
    monkeypatch.syspath_prepend(str(REPO))
    results = importlib.import_module("bench.tiling").main(["--size", "4096", "--runs", "40x"])
    assert set(results) == {"240/40x", "256/40x"}
    assert results["240/40x"]["readers"] == ["jpeg_tiles"]
    assert results["256/40x"]["readers"] == ["passthrough"]  # 256-px tiles are the patches
    assert results["240/40x"]["patches"] == results["256/40x"]["patches"] > 100
    for row in results.values():
        assert row["limit_s"] > 0 and row["segment_s"] > 0 and row["tile_s"] > 0
        assert row["shrink_s"] == 0  # 40x is read at its own size
    assert capsys.readouterr().out.count("e2e/limit < 1.5") == 1


def test_tiling_bench_default_run_tiles_the_config_scales(monkeypatch):
    monkeypatch.syspath_prepend(str(REPO))
    bench = importlib.import_module("bench.tiling")
    results = bench.main(["--size", "4096", "--runs", "default", "--working-mpp", "16"])
    assert set(results) == {"240/default", "256/default"}
    record = results["256/default"]
    assert record["readers"] == ["jpeg_tiles", "passthrough"]  # 10x is a level: passed through
    assert record["patches"] > 0 and record["limit_s"] > 0
    assert all(row["shrink_s"] > 0 for row in results.values())  # 5x: 10x tiles shrunk 2x
