"""The conda environments of `--sdm conda` (envs/*.yaml) pin what pyproject.toml pins."""

import re
import tomllib

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
