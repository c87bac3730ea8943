"""Time and peak memory of ABMILX inference on one large bag (CPU, attention-plus on).

Usage: .venv/bin/python bench/mil_memory.py [--instances 50000] [--impl auto] [--threads 1]

The measurement runs in a fresh subprocess so that its peak RSS (getrusage ru_maxrss) belongs
to this one forward pass and not to whatever ran before. An explicit N x N similarity matrix
for 50,000 instances and 8 heads would need 80 GB in fp32; the SDPA path needs O(N).
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--instances", type=int, default=50_000)
    parser.add_argument("--in-dim", type=int, default=1024)
    parser.add_argument("--impl", choices=("auto", "explicit", "sdpa"), default="auto")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def measure(args: argparse.Namespace) -> dict:
    """One no-grad forward in this process; the two-stage setting of the paper (0.80 M)."""
    import torch

    from abmilx.models import count_parameters, create_mil

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = create_mil(
        "abmilx",
        args.in_dim,
        2,
        inner_dim=512,
        n_heads=8,
        mil_bias=True,
        attn_bias=True,
        attn_plus=True,
        attn_plus_impl=args.impl,
    ).eval()
    bag = torch.randn(1, args.instances, args.in_dim)
    rss_before = peak_rss_mib()
    start = time.perf_counter()
    with torch.no_grad():
        out = model(bag)
    seconds = time.perf_counter() - start
    return {
        "instances": args.instances,
        "in_dim": args.in_dim,
        "impl": args.impl,
        "uses_sdpa": model.attn_plus.uses_sdpa(args.instances),
        "threads": args.threads,
        "parameters": count_parameters(model),
        "seconds": round(seconds, 2),
        "peak_rss_mib": round(peak_rss_mib(), 1),
        "peak_rss_before_forward_mib": round(rss_before, 1),
        "input_mib": round(bag.numel() * 4 / 2**20, 1),
        "attention_sums_to_one": bool(torch.allclose(out.attention.sum(-1), torch.ones(1, 8))),
    }


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    if args.child:
        print(json.dumps(measure(args)))
        return {}
    command = [sys.executable, str(Path(__file__).resolve()), "--child"]
    command += ["--instances", str(args.instances), "--in-dim", str(args.in_dim)]
    command += ["--impl", args.impl, "--threads", str(args.threads)]
    finished = subprocess.run(command, capture_output=True, text=True, check=True)
    result = json.loads(finished.stdout.strip().splitlines()[-1])
    print(
        f"ABMILX inference, N={result['instances']} x {result['in_dim']}, "
        f"A+ via {'SDPA (padded value)' if result['uses_sdpa'] else 'explicit N x N'}, "
        f"{result['threads']} thread(s): {result['seconds']} s, peak RSS "
        f"{result['peak_rss_mib']} MiB (before forward {result['peak_rss_before_forward_mib']} "
        f"MiB, input {result['input_mib']} MiB)"
    )
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
