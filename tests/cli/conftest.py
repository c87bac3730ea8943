"""The finished tiny run (tests/conftest.py) under the name the CLI tests use."""

import pytest


@pytest.fixture(scope="session")
def tiny_run(finished_tiny_run):
    """Working folder whose results/ holds both tiny experiments trained and evaluated."""
    return finished_tiny_run
