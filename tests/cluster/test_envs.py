"""The conda environments of `--sdm conda` (envs/*.yaml) pin what pyproject.toml pins."""

import os
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import yaml

from abmilx.config import REPO_ROOT

ENVS = sorted((REPO_ROOT / "envs").glob("*.yaml"))
# Snakemake itself runs outside the job environments.
NOT_IN_JOBS = {"snakemake"}


def _name(requirement: str) -> str:
    return re.sub(r"[-_.]+", "-", requirement.split("==")[0].strip()).lower()


def pyproject_pins() -> tuple[dict[str, str], set[str], str]:
    """(every pin, the runtime dependencies' names, requires-python)."""
    project = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]
    runtime = project["dependencies"]
    extras = [req for group in project["optional-dependencies"].values() for req in group]
    pins = {}
    for requirement in runtime + extras:
        assert "==" in requirement, f"pyproject.toml: {requirement!r} is not an exact pin"
        pins[_name(requirement)] = requirement.split("==")[1].strip()
    return pins, {_name(r) for r in runtime}, project["requires-python"]


def env_pins(path) -> tuple[dict[str, str], str | None]:
    """(pip pins of the environment, its python version)."""
    dependencies = yaml.safe_load(path.read_text())["dependencies"]
    python = next(
        (
            d.split("=", 1)[1]
            for d in dependencies
            if isinstance(d, str) and d.startswith("python=")
        ),
        None,
    )
    pip = next((d["pip"] for d in dependencies if isinstance(d, dict) and "pip" in d), [])
    pins = {_name(r): r.split("==")[1].strip() for r in pip if "==" in r}
    return pins, python


def test_there_is_an_environment():
    assert ENVS, "envs/ holds no environment"


def differences(path) -> dict[str, tuple[str, str | None]]:
    """{name: (env version, pyproject version)} of every pin that differs."""
    pins, _, _ = pyproject_pins()
    env, _ = env_pins(path)
    return {name: (v, pins.get(name)) for name, v in env.items() if pins.get(name) != v}


@pytest.mark.parametrize("path", ENVS, ids=lambda p: p.name)
def test_environment_pins_equal_pyproject(path):
    _, runtime, requires_python = pyproject_pins()
    env, python = env_pins(path)
    assert differences(path) == {}, f"{path.name}: (env, pyproject) versions differ"
    missing = sorted(runtime - NOT_IN_JOBS - set(env))
    assert missing == [], f"{path.name} lacks runtime dependencies of pyproject.toml"
    assert python is not None and f">={python}" in requires_python, (python, requires_python)


def test_a_changed_pin_is_caught(tmp_path):
    pins, _, _ = pyproject_pins()
    text = (REPO_ROOT / "envs" / "abmilx.yaml").read_text()
    drifted = tmp_path / "abmilx.yaml"
    drifted.write_text(text.replace(f"torch=={pins['torch']}", "torch==0.0.1"))
    assert differences(drifted) == {"torch": ("0.0.1", pins["torch"])}


def local_installs(path) -> dict[str, Path]:
    """{pip entry: where it resolves when Snakemake builds the environment} for every entry
    naming a local path (`-e ..`, `.`, `/abs/dir`, `file:...`). Snakemake creates an environment
    from a copy of its file at `<workdir>/.snakemake/conda/<hash>.yaml` (only that file), and
    conda runs pip in the copy's folder, so relative paths resolve there."""
    dependencies = yaml.safe_load(path.read_text())["dependencies"]
    pip = next((d["pip"] for d in dependencies if isinstance(d, dict) and "pip" in d), [])
    copy_folder = Path("/workdir/.snakemake/conda")
    found = {}
    for entry in pip:
        target = re.sub(r"^(-e|--editable)\s+", "", entry.strip()).removeprefix("file:")
        if target.startswith((".", "/", "~")):
            found[entry] = (copy_folder / target).resolve()
    return found


@pytest.mark.parametrize("path", ENVS, ids=lambda p: p.name)
def test_environments_install_no_local_path(path):
    """A path to the project in an env file never reaches the checkout from Snakemake's copy;
    the jobs import the workflow's src/ instead (test below)."""
    assert local_installs(path) == {}, f"{path.name}: local installs and where they resolve"


def test_a_local_install_is_caught(tmp_path):
    text = (REPO_ROOT / "envs" / "abmilx.yaml").read_text()
    local = tmp_path / "abmilx.yaml"
    local.write_text(text.replace("      - pillow==", "      - -e ..\n      - pillow=="))
    assert local_installs(local) == {"-e ..": Path("/workdir/.snakemake")}


# Snakemake parses the workflow in this process, then prints the PYTHONPATH its jobs inherit.
JOBS_PYTHONPATH = """
import os, sys
from snakemake.cli import main
try:
    main(sys.argv[1:])
finally:
    print("PYTHONPATH=" + os.environ.get("PYTHONPATH", ""))
"""


def jobs_pythonpath(tmp_path, pythonpath: str, *options: str) -> list[str]:
    """The jobs' PYTHONPATH entries after Snakemake parsed the demo with ``options``."""
    (tmp_path / "config.yaml").write_text((REPO_ROOT / "config.yaml").read_text())
    result = subprocess.run(
        [sys.executable, "-c", JOBS_PYTHONPATH, "--snakefile", str(REPO_ROOT / "Snakefile"),
         "--directory", str(tmp_path), "--list-rules", *options],
        capture_output=True, text=True, env={**os.environ, "PYTHONPATH": pythonpath},
        timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    line = next(x for x in result.stdout.splitlines() if x.startswith("PYTHONPATH="))
    return [p for p in line.removeprefix("PYTHONPATH=").split(os.pathsep) if p]


def test_conda_jobs_import_the_workflows_own_package(tmp_path):
    """Under --sdm conda (the environment has no abmilx) the jobs find the checkout's src/,
    after the PYTHONPATH the user set (here a link to the same package, so that Snakemake itself
    parses); without conda the jobs' PYTHONPATH is left alone."""
    mine = tmp_path / "my_src"
    mine.symlink_to(REPO_ROOT / "src", target_is_directory=True)
    conda = jobs_pythonpath(tmp_path, str(mine), "--sdm", "conda")
    assert conda == [str(mine), str(REPO_ROOT / "src")]
    assert (Path(conda[1]) / "abmilx" / "__init__.py").is_file()
    assert jobs_pythonpath(tmp_path, str(mine)) == [str(mine)]
