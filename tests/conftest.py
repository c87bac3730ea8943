"""Fixtures shared by the workflow tests."""

import re

import pytest
from tiny_workflow import finish_tiny_run

from abmilx.config import REPO_ROOT


@pytest.fixture(scope="session")
def rule_sources() -> dict[str, str]:
    """Rule name -> its text, from workflow/rules/*.smk."""
    rules = {}
    for path in sorted((REPO_ROOT / "workflow" / "rules").glob("*.smk")):
        for block in re.split(r"(?m)^(?=rule )", path.read_text())[1:]:
            rules[re.match(r"rule (\w+):", block)[1]] = block
    return rules


@pytest.fixture(scope="session")
def rule_commands(rule_sources) -> dict[str, str]:
    """Rule name -> the module its shell command runs (`python -m abmilx.<stage>`, or a
    launcher such as torchrun's `-m abmilx.<stage>`)."""
    commands = {}
    for rule, text in rule_sources.items():
        modules = set(re.findall(r"\s-m (abmilx[\w.]*)", text))
        assert len(modules) == 1, f"rule {rule} runs {sorted(modules) or 'no abmilx module'}"
        commands[rule] = modules.pop()
    return commands


@pytest.fixture(scope="session")
def finished_tiny_run(tmp_path_factory):
    """One finished run of the whole DAG on the tiny cohort, shared by the integration and CLI
    tests (it is the slowest fixture of the suite: build it once)."""
    return finish_tiny_run(tmp_path_factory.mktemp("workflow"))
