# Set-up and entry points. `make results` and `make test` create .venv on first use.
SHELL := /bin/bash
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
CORES ?= all

.PHONY: venv results test lint bench clean-results slurm-test

venv: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev,slurm,hub]'
	touch $(STAMP)

results: $(STAMP)
	PATH=$(CURDIR)/$(BIN):$$PATH $(BIN)/snakemake --cores $(CORES)

# Lint, snakefmt and the DAG dry run are tests too (tests/workflow/test_static.py).
test: $(STAMP)
	$(BIN)/ruff check src tests bench
	PATH=$(CURDIR)/$(BIN):$$PATH $(BIN)/pytest

# Opt-in: a real single-node SLURM on this machine (Debian's packages, needs root), the tiny demo
# through profiles/slurm with shard and group jobs: its sbatch submissions counted against the dry
# run's, its splits, predictions and metrics compared with a local run's; then a segmentation
# shard job that fails on one slide, whose finished slides must be kept and not recomputed.
slurm-test: $(STAMP)
	@missing=; for tool in slurmctld slurmd sbatch munged; do command -v $$tool >/dev/null || missing=1; done; \
	if [ -n "$$missing" ]; then apt-get update -qq && DEBIAN_FRONTEND=noninteractive \
		apt-get install -y -qq slurmctld slurmd slurm-client munge; fi
	$(BIN)/python -c 'import snakemake_executor_plugin_slurm' 2>/dev/null || \
		$(BIN)/pip install --quiet -e '.[dev,slurm,hub]'
	PATH=$(CURDIR)/$(BIN):$$PATH PYTHONPATH=$(CURDIR)/src timeout -s KILL 3600 \
		$(BIN)/pytest -m slurm -p no:cacheprovider -rs -s tests/cluster/test_slurm.py

lint: $(STAMP)
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench
	$(BIN)/snakefmt --check Snakefile workflow/rules
	$(BIN)/snakemake --lint

bench: $(STAMP)
	PATH=$(CURDIR)/$(BIN):$$PATH $(BIN)/python -m bench --markdown docs/performance.md

clean-results:
	find results -mindepth 1 ! -name README.md -delete
