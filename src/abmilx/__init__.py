"""ABMILX reproduction workflow: slides -> patches -> MIL / E2E training -> paper tables."""

import os

# Idle OpenMP threads sleep instead of spinning. Snakemake runs jobs side by side and E2E loaders
# decode in worker processes, so a process rarely has its cores alone; with spinning threads a
# two-stage training took 64-76 s instead of 11 s beside one other busy job on 2 cores. Read
# when libgomp loads, so it must be set before torch is imported; an OMP_WAIT_POLICY already in
# the environment wins.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

__version__ = "0.1.0"
