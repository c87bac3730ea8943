"""`abmilx validate CONFIG`: every check the workflow makes before its first job, without a job.

Two layers. The package's own checks run everywhere, an installed package included: the schema,
the experiments resolved into runs, the cross-key checks, tables and figures
(abmilx.workflow_plan, which the Snakefile calls too), and the datasets' sheets or adapters.
Then, where the workflow is at hand (``--snakefile``, or the checkout this package runs from), a
Snakemake dry run of it on the config: whatever else the Snakefile checks at parse time, and the
jobs a run would start. Nothing is written except Snakemake's own bookkeeping in `.snakemake/` of
the working directory.
"""

from __future__ import annotations

import contextlib
import os
import re
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

from abmilx.config import REPO_ROOT, device_problem, load_config, naming_config_files
from abmilx.report.coverage import missing_by_table, summary_line
from abmilx.sheets import load_dataset_sheets
from abmilx.workflow_plan import WorkflowPlan, plan_workflow

# Lines of Snakemake's own chatter, never part of an error message.
_NOISE = re.compile(
    r"^(Using workflow specific profile|Assuming unrestricted|Building DAG|"
    r"Config file .* is (extended|replaced) by|"
    r"host:|Provided cores|Rules claiming|Select jobs|Nothing to be done|Complete log)"
)

# Traceback lines ("  File ..., line N, in <module>") that follow Snakemake's error message.
_TRACEBACK = re.compile(r'^\s*File ".*", line \d+')


@dataclass
class Validation:
    """What the checks found: ok, the message when not; when ok, the datasets and experiments,
    the sheets' warnings and the dry run's jobs per rule (None where no Snakefile was found)."""

    ok: bool
    message: str = ""
    jobs: dict[str, int] | None = None
    datasets: dict[str, dict] = field(default_factory=dict)
    experiments: dict[str, dict] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    coverage: list[str] = field(default_factory=list)


def checkout_snakefile() -> Path | None:
    """The Snakefile of the checkout this package runs from (``src/abmilx`` beside it), or None
    for an installed package."""
    snakefile = REPO_ROOT / "Snakefile"
    in_checkout = Path(__file__).resolve().parents[1] == REPO_ROOT / "src" / "abmilx"
    return snakefile if in_checkout and snakefile.is_file() else None


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


def check_inputs(config: dict) -> list[str]:
    """Load every dataset's sheets (checked, slide files included) or run its adapter, as the
    workflow does at parse time; returns the sheets' warnings, raises on a fault."""
    warnings = []
    for name, dataset in config["datasets"].items():
        if "adapter" in dataset:
            from abmilx.adapters import ADAPTERS

            ADAPTERS[dataset["adapter"]["name"]](**dataset["adapter"]["options"])
        elif "slides" in dataset:
            _, found = load_dataset_sheets(dataset, config["strict"])
            warnings += [f"[{name}] {warning}" for warning in found]
    return warnings


def validate(
    config: str | Path,
    targets: list[str] | None = None,
    directory: str | Path = ".",
    snakefile: str | Path | None = None,
) -> Validation:
    """Check `config` as the workflow would in `directory` (relative paths in the config resolve
    there): the package's checks, then a dry run of `snakefile` (default: the checkout's)."""
    config = Path(config).resolve()
    directory = Path(directory).resolve()
    if not config.is_file():
        return Validation(False, f"config file {config} does not exist")
    try:
        with contextlib.chdir(directory):
            settings = load_config(config)  # its errors name the file already
            with naming_config_files([config]):
                plan = plan_workflow(settings)
            warnings = check_inputs(plan.config)
        if (problem := device_problem(plan.config)) is not None:
            return Validation(False, problem)
    except (ValueError, OSError) as error:  # ConfigError and SheetError are ValueErrors
        return Validation(False, str(error))
    validation = Validation(True, warnings=warnings, **described(plan))
    snakefile = checkout_snakefile() if snakefile is None else Path(snakefile).resolve()
    if snakefile is None:
        return validation
    if snakefile.is_dir():
        snakefile = snakefile / "Snakefile"
    if not snakefile.is_file():
        return Validation(False, f"Snakefile {snakefile} does not exist")
    command = [
        sys.executable, "-m", "snakemake", "--snakefile", str(snakefile),
        "--directory", str(directory), "--configfile", str(config),
        "--replace-workflow-config", "--dry-run", "--quiet", "rules", *(targets or []),
    ]  # fmt: skip
    bin_dir = str(Path(sys.executable).parent)
    env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}"}
    result = subprocess.run(command, capture_output=True, text=True, env=env, check=False)
    output = result.stdout + "\n" + result.stderr
    if result.returncode != 0:
        return Validation(False, error_message(output))
    validation.jobs = job_counts(output)
    return validation


def described(plan: WorkflowPlan) -> dict[str, dict]:
    """Datasets (task, source, classes) and experiments (kind, datasets) for the summary."""
    datasets = {
        name: {
            "task": dataset["task"],
            "source": next(k for k in ("synthetic", "adapter", "slides") if k in dataset),
            "classes": dataset.get("classes"),
        }
        for name, dataset in plan.config["datasets"].items()
    }
    experiments = {  # presets, bases and grids resolved, as the workflow runs them
        name: {"kind": experiment["kind"], "datasets": experiment.get("datasets")}
        for name, experiment in plan.experiments.experiments.items()
    }
    # the paper ledger's line, then the missing cells by table
    coverage = [summary_line(plan.coverage), *missing_by_table(plan.coverage)]
    return {"datasets": datasets, "experiments": experiments, "coverage": coverage}


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
    lines += [f"warning: {warning}" for warning in validation.warnings]
    lines += validation.coverage  # the ledger's line, then the missing cells by table
    if validation.jobs is None:
        lines.append(
            "workflow dry run: skipped, no Snakefile here (an installed package has none); "
            "give --snakefile with a checkout's Snakefile to count the jobs"
        )
        return "\n".join(lines)
    total = validation.jobs.get("total", 0)
    jobs = ", ".join(f"{rule} {n}" for rule, n in validation.jobs.items() if rule != "total")
    lines.append(f"jobs to run: {total}" + (f" ({jobs})" if jobs else " (nothing to be done)"))
    return "\n".join(lines)
