"""The memory bench runs end to end in its subprocess and reports the SDPA path."""

import importlib.util
from pathlib import Path

BENCH = Path(__file__).resolve().parents[2] / "bench" / "mil_memory.py"


def test_bench_reports_time_and_peak_memory(capsys):
    spec = importlib.util.spec_from_file_location("mil_memory", BENCH)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    result = bench.main(["--instances", "2500", "--in-dim", "64"])
    assert result["uses_sdpa"] and result["attention_sums_to_one"]
    assert result["peak_rss_mib"] >= result["peak_rss_before_forward_mib"] > 0
    assert result["seconds"] >= 0
    assert "peak RSS" in capsys.readouterr().out
