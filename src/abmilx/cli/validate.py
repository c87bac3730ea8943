"""`abmilx validate CONFIG`: every check the workflow makes before its first job, without a job.

The faithful way to run exactly those checks is the workflow's own parse: a Snakemake dry run of
this repository's Snakefile on the config (schema, sheets, files, registries: whatever the
Snakefile checks at parse time, now and later). Nothing is written except Snakemake's own
bookkeeping in `.snakemake/` of the working directory.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

from abmilx.config import REPO_ROOT, load_config
from abmilx.experiments import resolve_experiments

# Lines of Snakemake's own chatter, never part of an error message.
_NOISE = re.compile(
    r"^(Using workflow specific profile|Assuming unrestricted|Building DAG|Config file|"
    r"host:|Provided cores|Rules claiming|Select jobs|Nothing to be done|Complete log)"
)

# Traceback lines ("  File ..., line N, in <module>") that follow Snakemake's error message.
_TRACEBACK = re.compile(r'^\s*File ".*", line \d+')


@dataclass
class Validation:
    """What a dry run found: ok, the message when not, and jobs per rule when ok."""

    ok: bool
    message: str = ""
    jobs: dict[str, int] = field(default_factory=dict)
    datasets: dict[str, dict] = field(default_factory=dict)
    experiments: dict[str, dict] = field(default_factory=dict)


def job_counts(output: str) -> dict[str, int]:
    """The dry run's "Job stats" table as {rule: count}, including `total`."""
    counts: dict[str, int] = {}
    lines = iter(output.splitlines())
    for line in lines:
        if line.strip() == "Job stats:":
            break
    for line in lines:
        parts = line.split()
        if len(parts) == 2 and parts[1].isdigit():
            counts[parts[0]] = int(parts[1])
            if parts[0] == "total":
                break
    return counts


def error_message(output: str) -> str:
    """Snakemake's report of what failed, from its first error line, without its chatter."""
    lines = [
        line
        for line in output.splitlines()
        if line.strip() and not _NOISE.match(line) and not _TRACEBACK.match(line)
    ]
    for position, line in enumerate(lines):
        if re.search(r"\w*(Error|Exception)\b", line):
            return "\n".join(lines[position:])
    return "\n".join(lines)


def validate(
    config: str | Path, targets: list[str] | None = None, directory: str | Path = "."
) -> Validation:
    """Dry-run the workflow on `config` (replacing the default config) in `directory`."""
    config = Path(config).resolve()
    if not config.is_file():
        return Validation(False, f"config file {config} does not exist")
    command = [
        sys.executable, "-m", "snakemake", "--snakefile", str(REPO_ROOT / "Snakefile"),
        "--directory", str(Path(directory).resolve()), "--configfile", str(config),
        "--replace-workflow-config", "--dry-run", "--quiet", "rules", *(targets or []),
    ]  # fmt: skip
    bin_dir = str(Path(sys.executable).parent)
    env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}"}
    result = subprocess.run(command, capture_output=True, text=True, env=env, check=False)
    output = result.stdout + "\n" + result.stderr
    if result.returncode != 0:
        return Validation(False, error_message(output))
    settings = load_config(config)
    datasets = {
        name: {
            "task": dataset["task"],
            "source": next(k for k in ("synthetic", "adapter", "slides") if k in dataset),
            "classes": dataset.get("classes"),
        }
        for name, dataset in settings["datasets"].items()
    }
    experiments = {  # presets, bases and grids resolved, as the workflow runs them
        name: {"kind": experiment["kind"], "datasets": experiment.get("datasets")}
        for name, experiment in resolve_experiments(settings).experiments.items()
    }
    return Validation(True, jobs=job_counts(output), datasets=datasets, experiments=experiments)


def summary(config: str | Path, validation: Validation) -> str:
    """Human-readable lines for the terminal."""
    if not validation.ok:
        return f"INVALID {config}\n{validation.message}"
    lines = [f"OK {config}", "datasets:"]
    for name, dataset in validation.datasets.items():
        classes = f" ({', '.join(map(str, dataset['classes']))})" if dataset["classes"] else ""
        lines.append(f"  {name}: {dataset['task']}{classes}, from {dataset['source']}")
    lines.append("experiments:")
    for name, experiment in validation.experiments.items():
        on = ", ".join(experiment["datasets"] or ["every dataset"])
        lines.append(f"  {name}: {experiment['kind']}, on {on}")
    total = validation.jobs.get("total", 0)
    jobs = ", ".join(f"{rule} {n}" for rule, n in validation.jobs.items() if rule != "total")
    lines.append(f"jobs to run: {total}" + (f" ({jobs})" if jobs else " (nothing to be done)"))
    return "\n".join(lines)
