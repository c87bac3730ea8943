"""The package stands alone: built as a wheel, installed into a fresh virtual environment outside
the checkout, and run from a temporary folder.

The new environment sees the heavy dependencies (torch, OpenSlide, ...) of the environment running
the tests through a .pth file instead of installing them again; the package itself, its schemas
and its console script come from the wheel only (PYTHONPATH is cleared, and the running
environment's editable install is not processed: a path in a .pth file is not a site folder).
"""

from __future__ import annotations

import json
import os
import shutil
import site
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from abmilx.cohort.slidefile import write_slide
from abmilx.config import REPO_ROOT, load_config

pytestmark = pytest.mark.packaging
TINY_CONFIG = REPO_ROOT / "tests" / "integration" / "tiny_config.yaml"


@dataclass(frozen=True)
class Installed:
    """A fresh virtual environment holding the wheel of this checkout."""

    venv: Path
    env: dict[str, str]

    def run(self, *args: str, cwd: Path) -> subprocess.CompletedProcess:
        """``args[0]`` from the environment's bin/ (abmilx, python), in ``cwd``."""
        command = [str(self.venv / "bin" / args[0]), *args[1:]]
        return subprocess.run(
            command, cwd=cwd, env=self.env, capture_output=True, text=True, timeout=300
        )


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Installed:
    root = tmp_path_factory.mktemp("installed")
    # Build from a copy: setuptools writes build/ and *.egg-info beside the sources it builds.
    source = root / "source"
    shutil.copytree(
        REPO_ROOT / "src",
        source / "src",
        ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"),
    )
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO_ROOT / name, source / name)
    wheels = root / "wheels"
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "--quiet"]
    build = [*pip, "wheel", "--no-deps", "--no-build-isolation", "--no-index", "-w", str(wheels)]
    subprocess.run([*build, str(source)], check=True, capture_output=True, timeout=300)
    (wheel,) = wheels.glob("abmilx-*.whl")

    venv = root / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = venv / "bin" / "python"
    install = [*pip, "--python", str(python), "install", "--no-deps", "--no-index", str(wheel)]
    subprocess.run(install, check=True, capture_output=True, timeout=300)
    purelib = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
        check=True, capture_output=True, text=True,
    ).stdout.strip()  # fmt: skip
    # Added after the install, so that pip never saw the running environment's packages.
    heavy = "\n".join(site.getsitepackages())
    (Path(purelib) / "zz_running_environment.pth").write_text(heavy + "\n")
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env["PATH"] = f"{venv / 'bin'}{os.pathsep}{env['PATH']}"
    return Installed(venv=venv, env=env)


@pytest.fixture
def elsewhere(tmp_path) -> Path:
    """A working folder outside the checkout."""
    folder = tmp_path / "elsewhere"
    folder.mkdir()
    return folder


def test_the_package_comes_from_the_new_environment(installed, elsewhere):
    probe = "import abmilx, abmilx.config as c; print(abmilx.__file__); print(c.SCHEMA_PATH)"
    result = installed.run("python", "-c", probe, cwd=elsewhere)
    assert result.returncode == 0, result.stderr
    package, schema = result.stdout.split()
    assert Path(package).is_relative_to(installed.venv), package
    assert Path(schema).is_file() and Path(schema).is_relative_to(installed.venv)


def test_validate_checks_a_config_without_the_workflow(installed, elsewhere):
    shutil.copy(REPO_ROOT / "config.yaml", elsewhere / "config.yaml")
    result = installed.run("abmilx", "validate", "config.yaml", cwd=elsewhere)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.startswith("OK config.yaml")
    assert "demo_subtyping: subtyping (IDC, ILC), from synthetic" in result.stdout
    assert "abl_heads__n_heads-1: e2e" in result.stdout  # grids resolved, without torch
    assert "workflow dry run: skipped, no Snakefile here" in result.stdout

    config = yaml.safe_load((REPO_ROOT / "config.yaml").read_text())
    config["experiments"]["abl_heads"]["grid"] = {"settings.mil_kwargs.n_head": [1]}
    (elsewhere / "bad.yaml").write_text(yaml.safe_dump(config))
    result = installed.run("abmilx", "validate", "bad.yaml", cwd=elsewhere)
    assert result.returncode == 1
    assert result.stderr.startswith("INVALID bad.yaml")
    assert "experiments/abl_heads/grid/settings.mil_kwargs.n_head': unknown key" in result.stderr


def test_validate_dry_runs_a_checkouts_workflow_with_the_installed_package(installed, elsewhere):
    shutil.copy(TINY_CONFIG, elsewhere / "config.yaml")
    result = installed.run(
        "abmilx", "validate", "config.yaml", "--snakefile", str(REPO_ROOT), cwd=elsewhere
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "segment_tissue 2" in result.stdout and "train_e2e 1" in result.stdout
    assert not (elsewhere / "results").exists()


def test_stage_commands_build_a_store_that_info_describes(installed, elsewhere):
    """Segmentation, tiling and packing by the installed package's own commands, on one slide."""
    config = load_config(TINY_CONFIG)
    image = np.full((900, 1200, 3), 235, np.uint8)
    image[150:750, 200:1000] = (200, 110, 180)  # 0.48 mm² of tissue at 1 µm/px
    slide = write_slide(elsewhere / "s1.svs", image, mpp=1.0, downsamples=(1, 4))
    strict = {"strict": config["strict"]}
    steps = [
        ["segmentation", "segment", "--slide", str(slide), "--slide-id", "s1",
         "--dataset", "mine", "--mpp", "", "--out-prefix", "qc/s1",
         "--settings", json.dumps({**config["segmentation"], **strict})],
        ["tiling", "tile", "--slide", str(slide), "--slide-id", "s1",
         "--dataset", "mine", "--mpp", "", "--segmentation", "qc/s1",
         "--out-store", "tiles/slides/s1.lmdb", "--out-qc", "tiles/slides/s1.json",
         "--settings", json.dumps({**config["tiling"], **strict})],
        ["tiling", "pack", "--mode", "index", "--stores", "tiles/slides/s1.lmdb",
         "--out", "tiles/patches.lmdb"],
    ]  # fmt: skip
    # The rules' commands (python -m abmilx.<stage> ...), in one interpreter to import once.
    script = (
        "import importlib, json, sys\n"
        "for stage, *argv in json.loads(sys.argv[1]):\n"
        "    code = importlib.import_module(f'abmilx.{stage}.__main__').main(argv)\n"
        "    assert not code, (stage, argv[0], code)\n"
    )
    result = installed.run("python", "-c", script, json.dumps(steps), cwd=elsewhere)
    assert result.returncode == 0, result.stdout + result.stderr

    result = installed.run("abmilx", "info", "tiles/patches.lmdb", "--json", cwd=elsewhere)
    assert result.returncode == 0, result.stderr
    found = json.loads(result.stdout)
    assert found["type"] == "patch store" and found["slides"] == 1
    assert found["scales_mpp"] == {"main": 2.0, "low": 4.0} and found["patch_size"] == 32
    assert found["patches"]["main"] > 0
    assert found["made_with"]["tiling"]["jpeg_quality"] == 85
    result = installed.run("abmilx", "info", "tiles/patches.lmdb", cwd=elsewhere)
    assert result.returncode == 0 and "type: patch store" in result.stdout


@pytest.mark.integration
def test_predict_and_info_on_a_finished_run(installed, elsewhere, finished_tiny_run):
    """The finished tiny run (shared with the CLI and integration tests)."""
    run = finished_tiny_run / "results" / "runs" / "tiny" / "abmil_two_stage"
    result = installed.run("abmilx", "info", str(run / "fold0"), cwd=elsewhere)
    assert result.returncode == 0, result.stderr
    assert "kind: two_stage" in result.stdout

    evaluated = pd.read_csv(run / "fold0" / "predictions.csv").head(2)
    cohort = finished_tiny_run / "results" / "cohort" / "tiny"
    sheet = pd.read_csv(cohort / "slides.csv").set_index("slide_id").loc[evaluated.slide_id]
    sheet["path"] = [str(cohort / path) for path in sheet.path]
    sheet.reset_index().to_csv(elsewhere / "new.csv", index=False)
    result = installed.run(
        "abmilx", "predict", "--run", str(run), "--slides", "new.csv", "--out", "predicted",
        "--device", "cpu", cwd=elsewhere,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    predicted = pd.read_csv(elsewhere / "predicted" / "predictions.csv").set_index("slide_id")
    probs = [c for c in evaluated.columns if c.startswith("prob_")]
    got = predicted.loc[evaluated.slide_id, probs].to_numpy()
    np.testing.assert_allclose(got, evaluated[probs].to_numpy(), rtol=0, atol=1e-6)
    record = json.loads((elsewhere / "predicted" / "predict.json").read_text())
    assert record["git_commit"] == "unknown"  # an installed package belongs to no checkout
