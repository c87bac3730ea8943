# Set-up and entry points. `make results` and `make test` create .venv on first use.
SHELL := /bin/bash
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
CORES ?= all

.PHONY: venv results test lint bench clean-results

venv: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

results: $(STAMP)
	$(BIN)/snakemake --cores $(CORES) results/tables results/figures

test: $(STAMP)
	$(BIN)/ruff check src tests workflow
	$(BIN)/snakefmt --check Snakefile workflow/rules
	$(BIN)/snakemake --lint --cores 1 -n
	$(BIN)/pytest

lint: $(STAMP)
	$(BIN)/ruff check src tests workflow
	$(BIN)/ruff format --check src tests
	$(BIN)/snakefmt --check Snakefile workflow/rules
	$(BIN)/snakemake --lint --cores 1 -n

bench: $(STAMP)
	$(BIN)/python -m bench

clean-results:
	find results -mindepth 1 ! -name README.md -delete
