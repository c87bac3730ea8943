"""Static checks of the workflow: lint, formatting, and a DAG that resolves."""

import os
import subprocess
import sys
from pathlib import Path

from abmilx.config import REPO_ROOT

BIN = Path(sys.executable).parent
ENV = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}"}


def _run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        args, cwd=REPO_ROOT, env=ENV, capture_output=True, text=True, timeout=300
    )


def test_snakemake_lint_is_clean():
    result = _run(str(BIN / "snakemake"), "--lint")
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert "Lints for" not in output, output


def test_snakefmt_check_is_clean():
    result = _run(str(BIN / "snakefmt"), "--check", "Snakefile", "workflow/rules")
    assert result.returncode == 0, result.stdout + result.stderr


def test_dry_run_of_the_demo_resolves_every_stage():
    result = _run(str(BIN / "snakemake"), "-n", "results/tables", "results/figures")
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    for rule in [
        "synthesize_slide",
        "segment_tissue",
        "tile_slide",
        "pack_tiles",
        "make_splits",
        "extract_features",
        "train_two_stage",
        "train_e2e",
        "evaluate_fold",
        "aggregate_folds",
        "tables",
        "figures",
    ]:
        assert rule in output, f"{rule} missing from the dry run:\n{output}"
