"""Dry runs with profiles/slurm: the demo and every paper config resolve, jobs carry the config's
resources, cheap rules stay local, and an experiment's `gpus` starts torchrun."""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from paper_data import fake_paper_data

from abmilx.config import REPO_ROOT

BIN = Path(sys.executable).parent
PAPER_CONFIGS = sorted((REPO_ROOT / "workflow" / "configs" / "paper").glob("*.yaml"))
LOCAL_RULES = {"cohort_sheets", "adapt_sheets", "make_splits", "aggregate_folds", "qc_table",
               "combine_feature_shards", "tables", "table", "table_file", "figure", "figures",
               "coverage"}  # fmt: skip


def dry_run(workdir: Path, config: dict, *targets: str, flag: str = "--profile") -> dict:
    """`snakemake -n --profile profiles/slurm`; jobs by rule, each {resources, shell}."""
    (workdir / "config.yaml").write_text(yaml.safe_dump(config))
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}"}
    result = subprocess.run(
        [str(BIN / "snakemake"), "-n", flag, "profiles/slurm", "--directory", str(workdir),
         *targets],
        cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-6000:]
    jobs: dict[str, list[dict]] = {}
    for block in output.split("\n\n"):
        lines = [line.strip() for line in block.strip().splitlines()]  # group jobs are indented
        heads = [i for i, line in enumerate(lines) if line.startswith(("rule ", "localrule "))]
        if not heads:
            continue
        lines = lines[heads[0] :]
        name = lines[0].rstrip(":").split(" ", 1)[1]
        fields = dict(line.strip().split(": ", 1) for line in lines[1:] if ": " in line)
        resources = dict(
            item.split("=", 1) for item in fields.get("resources", "").split(", ") if "=" in item
        )
        shell = fields.get("Shell command", "")
        jobs.setdefault(name, []).append({"resources": resources, "shell": shell})
    return jobs


def assert_cluster_resources(jobs: dict[str, list[dict]]) -> None:
    """Cluster jobs carry memory and runtime; the local rules none (a dry run prints every job
    as `rule`, so that they run locally is checked by the SLURM test)."""
    for rule, entries in jobs.items():
        for job in entries:
            has = {"mem_mb", "runtime"} <= set(job["resources"])
            assert has != (rule in LOCAL_RULES or rule == "all"), (rule, job)


@pytest.mark.parametrize("path", PAPER_CONFIGS, ids=lambda p: p.stem)
def test_paper_config_resolves_with_the_slurm_profile(tmp_path, path):
    fake_paper_data(tmp_path)
    jobs = dry_run(tmp_path, yaml.safe_load(path.read_text()), "results/tables")
    assert {"adapt_sheets", "segment_tissue", "tile_slide", "train_e2e", "evaluate_fold"} <= set(
        jobs
    ), sorted(jobs)
    assert_cluster_resources(jobs)
    train = jobs["train_e2e"][0]["resources"]
    assert (train["runtime"], train["mem_mb"], train["gpu"]) == ("2880", "32000", "1")


def test_demo_with_two_gpus_a_partition_and_an_account(tmp_path):
    """As the README says, in place of profiles/default, whose one-GPU pool would cap `gpu`."""
    config = yaml.safe_load((REPO_ROOT / "config.yaml").read_text())
    config["experiments"]["abmilx_r18_e2e"]["gpus"] = 2
    config["resources"] = {
        "train_e2e": {"slurm_partition": "gpu", "slurm_account": "lab", "cpus_per_task": 16},
        "tile_slide": {"runtime": 15, "threads": 4},
    }
    jobs = dry_run(tmp_path, config, "results/tables", "results/figures", flag="--workflow-profile")
    assert_cluster_resources(jobs)
    # the demo's main E2E run (C2C and FT keep one GPU)
    train = next(job for job in jobs["train_e2e"] if "/abmilx_r18_e2e/" in job["shell"])
    assert train["resources"]["gpu"] == "2"
    assert train["resources"]["slurm_partition"] == "gpu"
    assert train["resources"]["slurm_account"] == "lab"
    assert train["resources"]["cpus_per_task"] == "16"
    assert train["resources"]["mem_mb"] == "32000"  # the rule's default stays
    assert train["shell"].startswith("torchrun --standalone --nproc-per-node 2 -m abmilx.e2e")
    assert " - 1) / 2 ))" in train["shell"]  # the job's threads shared by 2 processes
    for job in jobs["tile_slide"]:  # one slide's resources, times the shard's rounds of 4
        slides = len(json.loads(re.search(r"--slides '(\[.*?\])'", job["shell"]).group(1)))
        assert job["resources"]["runtime"] == str(15 * -(-slides // 4)), (slides, job)
        assert job["resources"]["mem_mb"] == str(4000 * min(4, slides)), (slides, job)
    assert jobs["train_two_stage"][0]["shell"].startswith("python -m abmilx.two_stage")
    assert jobs["train_two_stage"][0]["resources"]["gpu"] == "0"  # the demo's say gpus: 0


def test_two_stage_experiment_with_two_gpus_is_refused(tmp_path):
    config = yaml.safe_load((REPO_ROOT / "config.yaml").read_text())
    config["experiments"]["abmil_r50"]["gpus"] = 2
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(config))
    result = subprocess.run(
        [str(BIN / "snakemake"), "-n", "--directory", str(tmp_path), "results/tables"],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode != 0
    assert "experiments/abmil_r50/gpus" in result.stdout + result.stderr
