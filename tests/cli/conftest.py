"""A finished tiny run (the integration test's config), made once per session by the real DAG."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from abmilx.config import REPO_ROOT

BIN = Path(sys.executable).parent
TINY_CONFIG = REPO_ROOT / "tests" / "integration" / "tiny_config.yaml"


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory) -> Path:
    """Working folder whose results/ holds both tiny experiments trained and evaluated (fold 0)."""
    workdir = tmp_path_factory.mktemp("cli_run")
    shutil.copy(TINY_CONFIG, workdir / "config.yaml")
    targets = [
        f"results/runs/tiny/{name}/fold0/predictions.csv"
        for name in ("abmilx_e2e", "abmil_two_stage")
    ]
    result = subprocess.run(
        [str(BIN / "snakemake"), "--snakefile", str(REPO_ROOT / "Snakefile"),
         "--directory", str(workdir), "--configfile", str(workdir / "config.yaml"),
         "--cores", "2", *targets],
        env={**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}"},
        capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-8000:]
    return workdir
