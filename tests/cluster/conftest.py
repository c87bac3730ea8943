"""The `slurm` tests are opt-in: they run only when selected with `-m slurm` (make slurm-test)."""

import pytest


def pytest_collection_modifyitems(config, items):
    if "slurm" in (config.getoption("-m") or ""):
        return
    skip = pytest.mark.skip(reason="opt-in: runs a local SLURM cluster; `make slurm-test`")
    for item in items:
        if "slurm" in item.keywords:
            item.add_marker(skip)
