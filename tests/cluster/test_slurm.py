"""The tiny demo through a real local SLURM cluster with profiles/slurm equals a local run.

Opt-in (`make slurm-test`, or `pytest -m slurm tests/cluster`); skipped, saying why, when the
daemons cannot start. Both runs use one thread per job so that they compute the same floats.
"""

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from slurm_cluster import ClusterUnavailable, LocalSlurm

from abmilx.config import REPO_ROOT

pytestmark = pytest.mark.slurm
BIN = Path(sys.executable).parent
TARGETS = ["results/tables", "results/qc/slides.tsv"]
SLIDE_GROUPS = {"synthesis": "synthesize_slide", "segmentation": "segment_tissue",
                "tiling": "tile_slide"}  # fmt: skip
SLIDE_RULES = set(SLIDE_GROUPS.values())
CLUSTER_RULES = SLIDE_RULES | {"pack_tiles", "pretrain_encoder", "extract_features",
                               "train_two_stage", "train_e2e", "evaluate_fold"}  # fmt: skip
LOCAL_RULES = {"cohort_sheets", "make_splits", "aggregate_folds", "qc_table", "tables",
               "combine_feature_shards"}  # fmt: skip
SLIDES_PER_JOB = 4  # so that the tiny cohorts' 14 slides make several group jobs


def cluster_config() -> dict:
    """The integration test's tiny config, sized for a 2-CPU node without GPUs."""
    config = yaml.safe_load((REPO_ROOT / "tests/integration/tiny_config.yaml").read_text())
    for experiment in config["experiments"].values():
        experiment["gpus"] = 0
    config["resources"] = {
        rule: {"mem_mb": 1000, "runtime": 20, "cpus_per_task": 1} for rule in CLUSTER_RULES
    }
    for rule in ("pretrain_encoder", "extract_features", "evaluate_fold"):
        config["resources"][rule]["gpus"] = 0
    config["features"] = {"slides_per_job": SLIDES_PER_JOB}  # feature shards: several GPU jobs
    return config


def prepare(workdir: Path, config: dict) -> None:
    shutil.copytree(
        REPO_ROOT / "src", workdir / "src", ignore=shutil.ignore_patterns("__pycache__")
    )
    (workdir / "config.yaml").write_text(yaml.safe_dump(config))


def snakemake(workdir: Path, *args: str, env: dict, timeout: int) -> subprocess.CompletedProcess:
    """Run under `timeout -s KILL`: a Snakemake waiting on a lost job ignores SIGTERM."""
    env = {**env, "PATH": f"{BIN}{os.pathsep}{env['PATH']}", "PYTHONPATH": str(workdir / "src"),
           "OMP_NUM_THREADS": "1"}  # fmt: skip
    command = [
        "timeout", "-s", "KILL", str(timeout), str(BIN / "snakemake"),
        "--snakefile", str(REPO_ROOT / "Snakefile"), "--directory", str(workdir),
        "--configfile", str(workdir / "config.yaml"), "--max-threads", "1", *args, *TARGETS,
    ]  # fmt: skip
    return subprocess.run(command, env=env, capture_output=True, text=True)


def outputs(workdir: Path) -> dict[str, object]:
    """Splits and predictions byte for byte, metrics without their cost (timings) record."""
    results = workdir / "results"
    found: dict[str, object] = {}
    for path in sorted(results.glob("splits/*.csv")) + sorted(results.rglob("predictions.csv")):
        found[str(path.relative_to(results))] = path.read_bytes()
    for path in sorted(results.rglob("metrics.json")):
        metrics = json.loads(path.read_text())
        metrics.pop("cost")
        found[str(path.relative_to(results))] = metrics
    return found


def test_demo_on_slurm_equals_local_run(tmp_path):
    config = cluster_config()
    local, on_slurm = tmp_path / "local", tmp_path / "slurm"
    prepare(local, config)
    prepare(on_slurm, config)
    started = time.monotonic()
    try:
        with LocalSlurm(tmp_path / "cluster") as cluster:
            run = snakemake(
                on_slurm,
                "--workflow-profile", str(REPO_ROOT / "profiles" / "slurm"),
                "--jobs", "4", "--latency-wait", "5",
                "--group-components", *(f"{group}={SLIDES_PER_JOB}" for group in SLIDE_GROUPS),
                "--cores", "1",  # a group job's slides one at a time, on the 2-CPU node
                "--slurm-status-command", "squeue",
                "--slurm-init-seconds-before-status-checks", "1",
                "--slurm-keep-successful-logs",
                env=cluster.env, timeout=1500,
            )  # fmt: skip
    except ClusterUnavailable as reason:
        pytest.skip(f"no local SLURM cluster: {reason}")
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-6000:]
    slurm_logs = on_slurm / ".snakemake" / "slurm_logs"
    submitted = {path.name.removeprefix("rule_") for path in slurm_logs.iterdir()}
    assert submitted >= CLUSTER_RULES - SLIDE_RULES, submitted
    assert not submitted & (LOCAL_RULES | SLIDE_RULES), submitted  # per-slide work is grouped
    # one sbatch (one SLURM log) per group job, each holding SLIDES_PER_JOB slides' jobs of its rule
    n_slides = sum(d["synthetic"]["n_slides"] for d in config["datasets"].values())
    for group, rule in SLIDE_GROUPS.items():
        logs = [log for path in slurm_logs.glob(f"group_{group}_*") for log in path.rglob("*.log")]
        assert len(logs) == -(-n_slides // SLIDES_PER_JOB), (rule, sorted(map(str, logs)))
    # one sbatch per feature shard: the evaluation dataset's slides in runs of SLIDES_PER_JOB
    shards = list((slurm_logs / "rule_extract_features").rglob("*.log"))
    assert len(shards) == -(-config["datasets"]["tiny"]["synthetic"]["n_slides"] // SLIDES_PER_JOB)

    on_slurm_seconds = time.monotonic() - started
    reference = snakemake(local, "--cores", "2", env=dict(os.environ), timeout=1500)
    assert reference.returncode == 0, reference.stderr[-6000:]
    print(
        f"SLURM run {on_slurm_seconds:.0f} s ({len(list(slurm_logs.rglob('*.log')))} jobs),"
        f" local run {time.monotonic() - started - on_slurm_seconds:.0f} s"
    )
    expected, got = outputs(local), outputs(on_slurm)
    assert len(expected) >= 7 and any("predictions" in key for key in expected), list(expected)
    assert got.keys() == expected.keys()
    for key, value in expected.items():
        assert got[key] == value, f"{key} differs between the SLURM and the local run"
    print(f"equal: {', '.join(expected)}")
