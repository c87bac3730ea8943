"""Every hostile input of hostile_cases.py fails while the workflow parses, naming the key (or
the file, line and column): each through the parse-time checks in-process, a sample of them and
the valid cohort through a real `snakemake -n`."""

import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from hostile_cases import BASE, Case, all_cases, dry_run

from abmilx.config import (
    REPO_ROOT,
    ConfigError,
    check_config,
    device_problem,
    evaluation_datasets,
    naming_config_files,
    read_yaml,
    validate_config,
)
from abmilx.experiments import resolve_experiments
from abmilx.report.figures.plan import plan_figures
from abmilx.report.tables import plan_tables
from abmilx.sheets import SheetError, load_dataset_sheets

CASES = {case.name: case for case in all_cases()}
# One case of each check the Snakefile wires in, dry-run for real (the rest run in-process).
DRY_RUN_SAMPLE = [
    "dataset-ampersand",
    "experiment-parent",
    "slide_id-dash",
    "main_coarser_than_low",
    "warmup_above_epochs_pretrain",
    "oversample_unknown_class",
    "device_cuda_without_gpu",
    "duplicate_nested_key",
    "unclosed_flow_mapping",
]


def parse(folder: Path) -> None:
    """The checks the Snakefile and workflow/rules/common.smk run while parsing, in order."""
    raw = read_yaml(folder / "config.yaml")
    with naming_config_files(["config.yaml"]):
        config = validate_config(raw)
        experiments = resolve_experiments(config)
        config["experiments"] = experiments.runs
        check_config(config)
        if (problem := device_problem(config)) is not None:
            raise ConfigError(problem)
        tasks = {name: config["datasets"][name]["task"] for name in evaluation_datasets(config)}
        plan_tables(config["tables"], experiments, tasks)
    plan_figures(config["figures"], experiments, tasks, config["feature_sets"])
    for dataset in config["datasets"].values():
        if "slides" in dataset:
            load_dataset_sheets(dataset, config["strict"])


def cuda_available() -> bool:
    return device_problem({"device": "cuda"}) is None


def test_there_are_at_least_60_cases_in_three_groups():
    groups = {case.group for case in CASES.values()}
    assert len(CASES) >= 60 and groups == {"names", "config", "yaml"}


def test_the_valid_cohort_parses(tmp_path, monkeypatch):
    monkeypatch.chdir(Case("valid", "none", "", BASE).write(tmp_path))
    parse(tmp_path)


@pytest.mark.parametrize("name", list(CASES))
def test_hostile_input_fails_while_parsing_naming_the_key(name, tmp_path, monkeypatch):
    case = CASES[name]
    if name == "device_cuda_without_gpu" and cuda_available():
        pytest.skip("this machine has CUDA: device cuda is valid here")
    monkeypatch.chdir(case.write(tmp_path))
    with pytest.raises((ConfigError, SheetError, ValueError)) as raised:
        parse(tmp_path)
    assert case.expect in str(raised.value)


@pytest.fixture(scope="module")
def dry_runs(tmp_path_factory) -> dict[str, dict]:
    cases = [Case("valid", "none", "", BASE)] + [CASES[name] for name in DRY_RUN_SAMPLE]
    with ThreadPoolExecutor(len(cases)) as pool:
        results = pool.map(
            lambda case: dry_run(case, tmp_path_factory.mktemp(case.name), REPO_ROOT), cases
        )
    return {result["case"]: result for result in results}


def test_the_valid_cohort_plans_its_jobs(dry_runs):
    assert not dry_runs["valid"]["caught"], dry_runs["valid"]["tail"]


@pytest.mark.parametrize("name", DRY_RUN_SAMPLE)
def test_snakemake_dry_run_fails_naming_the_key(dry_runs, name):
    if name == "device_cuda_without_gpu" and cuda_available():
        pytest.skip("this machine has CUDA: device cuda is valid here")
    assert dry_runs[name]["caught"] and dry_runs[name]["names_key"], dry_runs[name]["tail"]


def test_the_script_counts_cases(tmp_path):
    """hostile_cases.py as a script on one case: the counts it prints for before/after runs."""
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    script = Path(__file__).with_name("hostile_cases.py")
    result = subprocess.run(
        [sys.executable, str(script), "--checkout", str(REPO_ROOT), "--workdir", str(tmp_path),
         "--out", str(tmp_path / "results.json"), "--only", "negative_seed"],
        env=env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "config: 1 cases, 1 fail the dry run, 1 naming the key" in result.stdout
