"""The real Snakemake DAG on the tiny generated cohort of tests/integration/tiny_config.yaml.

The package source is copied next to the run and put first on PYTHONPATH, so tests can edit a
module of each stage in a copy and check what would rerun.
"""

import os
import shutil
import subprocess
import sys
from pathlib import Path

from abmilx.config import REPO_ROOT

BIN = Path(sys.executable).parent
# what the default target builds for the tiny config's one dataset: tables, figures, the QC
# table, the segmentation overview and the per-run plots
TARGETS = [
    "results/tables",
    "results/figures",
    "results/qc/slides.tsv",
    "results/qc/segmentation/tiny.png",
    "results/report/tiny",
]
TINY_CONFIG = REPO_ROOT / "tests" / "integration" / "tiny_config.yaml"


def snakemake_command(
    workdir: Path, *args: str, src: Path | None = None
) -> tuple[list[str], dict[str, str]]:
    """Command line and environment of Snakemake on ``workdir`` with the package copy ``src``
    (default: the one in ``workdir``) first on PYTHONPATH."""
    env = {
        **os.environ,
        "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}",
        "PYTHONPATH": str(src or workdir / "src"),
    }
    command = [
        str(BIN / "snakemake"), "--snakefile", str(REPO_ROOT / "Snakefile"),
        "--directory", str(workdir), "--configfile", str(workdir / "config.yaml"), *args,
    ]  # fmt: skip
    return command, env


def snakemake(workdir: Path, *args: str, timeout: int = 900) -> subprocess.CompletedProcess:
    command, env = snakemake_command(workdir, *args)
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=timeout)


def finish_tiny_run(workdir: Path) -> Path:
    """Copy the package (schemas included) and the tiny config into ``workdir`` and build every
    target there."""
    shutil.copytree(
        REPO_ROOT / "src", workdir / "src", ignore=shutil.ignore_patterns("__pycache__")
    )
    shutil.copy(TINY_CONFIG, workdir / "config.yaml")
    result = snakemake(workdir, "--cores", "2", *TARGETS)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-8000:]
    return workdir
