"""Run every benchmark and print its figures: ``python -m bench`` (``make bench``).

Each speed figure is printed beside its limit, measured in this one run (OK or MISSED).
``--markdown docs/performance.md`` also writes what was printed as the dated performance page,
with the machine it ran on: measured figures live there, never in prose.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import platform
import sys
from datetime import UTC, datetime
from pathlib import Path

from bench import (
    bootstrap_metrics,
    e2e_step,
    inference,
    mil_memory,
    pack,
    scale,
    segmentation,
    tiling,
)

BENCHES = {
    "tiling": ("Tiling per slide, end to end, vs the decode-once-plus-encode limit", tiling),
    "segmentation": ("Segmentation view resolution: CPU time vs accuracy", segmentation),
    "mil_memory": ("ABMILX inference on a 50,000 x 1024 bag (CPU)", mil_memory),
    "e2e_step": ("E2E training step: full data path vs pure model", e2e_step),
    "inference": ("Feature extraction and whole-slide inference vs pure encoder", inference),
    "bootstrap_metrics": (
        "Bootstrap of every metric, 1000 resamples of 2,000 cases",
        bootstrap_metrics,
    ),
    "scale": ("Planning a paper-size cohort: dry-run time, memory, cluster submissions", scale),
    "pack": ("A dataset's patches: index of per-slide stores vs packed copy", pack),
}


class _Tee(io.TextIOBase):
    """Writes to the terminal and keeps a copy for the page."""

    def __init__(self, terminal):
        self.terminal, self.copy = terminal, io.StringIO()

    def write(self, text: str) -> int:
        self.terminal.write(text)
        self.copy.write(text)
        return len(text)

    def flush(self) -> None:
        self.terminal.flush()


def machine() -> dict[str, str]:
    """What the figures depend on: CPU, cores, accelerator, library versions, commit."""
    import torch

    from abmilx.provenance import git_commit

    cpu = platform.processor() or platform.machine()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none"
    return {
        "CPU": f"{cpu}, {os.cpu_count()} logical cores",
        "GPU": gpu,
        "system": platform.platform(),
        "Python, PyTorch": f"{platform.python_version()}, {torch.__version__}",
        "commit": git_commit(),
    }


def performance_page(sections: dict[str, str], facts: dict[str, str], when: datetime) -> str:
    """The page: date and machine, then each bench's printed figures as they came."""
    lines = [
        "# Performance",
        "",
        f"Generated on {when:%Y-%m-%d %H:%M} UTC by `python -m bench --markdown "
        "docs/performance.md`; do not edit by hand, regenerate it (`make bench` runs every "
        "bench and rewrites this page). Each figure is printed beside its limit, measured in "
        "the same run, with OK or MISSED. On a shared machine wall times also count other "
        "people's work; the benches say which figures are CPU time.",
        "",
        *(f"- {key}: {value}" for key, value in facts.items()),
    ]
    skipped = [BENCHES[name][0] for name in BENCHES if name not in sections]
    if skipped:
        lines += ["", "Not run for this page (run `make bench` for all):"]
        lines += [f"- {title}" for title in skipped]
    for name, output in sections.items():
        lines += ["", f"## {BENCHES[name][0]}", "", f"`python -m bench.{name}`", "", "```text"]
        lines += [output.rstrip("\n"), "```"]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> dict[str, str]:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--only", nargs="+", choices=list(BENCHES), help="run these benches only")
    parser.add_argument("--markdown", type=Path, help="write the performance page here")
    args = parser.parse_args(argv)
    sections = {}
    for name in args.only or list(BENCHES):
        title, module = BENCHES[name]
        print(f"== {title} ==", flush=True)
        tee = _Tee(sys.stdout)
        with contextlib.redirect_stdout(tee):
            module.main([])
        sections[name] = tee.copy.getvalue()
        print(flush=True)
    if args.markdown:
        args.markdown.parent.mkdir(parents=True, exist_ok=True)
        args.markdown.write_text(performance_page(sections, machine(), datetime.now(UTC)))
        print(f"wrote {args.markdown}")
    return sections


if __name__ == "__main__":
    main()
