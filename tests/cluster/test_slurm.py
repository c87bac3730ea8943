"""The tiny demo through a real local SLURM cluster with profiles/slurm equals a local run, and a
segmentation shard job that fails on one slide keeps the slides it finished.

Opt-in (`make slurm-test`, or `pytest -m slurm tests/cluster`); skipped, saying why, when the
daemons cannot start. Both runs use one thread per job so that they compute the same floats.
Submissions are counted from the SLURM controller itself (`scontrol show job`, checked against
its log of accepted `sbatch` requests) and compared with what bench.scale reads from the dry run.
"""

import json
import os
import shutil
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest
import yaml
from slurm_cluster import ClusterUnavailable, LocalSlurm

from abmilx.cohort import plan_from_settings
from abmilx.config import REPO_ROOT

sys.path.insert(0, str(REPO_ROOT))
from bench.scale import local_rules, submissions

pytestmark = pytest.mark.slurm
BIN = Path(sys.executable).parent
TARGETS = ["results/tables", "results/qc/slides.tsv"]
SLIDE_GROUPS = {"synthesis": "synthesize_slide"}  # per-slide jobs grouped on a cluster
SHARD_RULES = {"segment_tissue": "segmentation", "tile_slide": "tiling"}  # a job per shard
SLIDE_RULES = set(SLIDE_GROUPS.values())
CLUSTER_RULES = SLIDE_RULES | set(SHARD_RULES) | {"pack_tiles", "pretrain_encoder",
    "extract_features", "train_two_stage", "train_e2e", "evaluate_fold"}  # fmt: skip
LOCAL_RULES = {"cohort_sheets", "make_splits", "aggregate_folds", "qc_table", "tables",
               "combine_feature_shards"}  # fmt: skip
SLIDES_PER_JOB = 4  # so that the tiny cohorts' 14 slides make several group and shard jobs


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
    for rule in SHARD_RULES:
        config["resources"][rule]["threads"] = 1
    for block in ("features", *SHARD_RULES.values()):  # several shard jobs per dataset
        config[block] = {**config.get(block, {}), "slides_per_job": SLIDES_PER_JOB}
    return config


def prepare(workdir: Path, config: dict) -> None:
    shutil.copytree(
        REPO_ROOT / "src", workdir / "src", ignore=shutil.ignore_patterns("__pycache__")
    )
    (workdir / "config.yaml").write_text(yaml.safe_dump(config))


def snakemake(
    workdir: Path, *args: str, env: dict, timeout: int, targets: list[str] = TARGETS
) -> subprocess.CompletedProcess:
    """Run under `timeout -s KILL`: a Snakemake waiting on a lost job ignores SIGTERM."""
    env = {**env, "PATH": f"{BIN}{os.pathsep}{env['PATH']}", "PYTHONPATH": str(workdir / "src"),
           "OMP_NUM_THREADS": "1"}  # fmt: skip
    command = [
        "timeout", "-s", "KILL", str(timeout), str(BIN / "snakemake"),
        "--snakefile", str(REPO_ROOT / "Snakefile"), "--directory", str(workdir),
        "--configfile", str(workdir / "config.yaml"), "--max-threads", "1", *args, *targets,
    ]  # fmt: skip
    return subprocess.run(command, env=env, capture_output=True, text=True)


def slurm_args(slides_per_job: int, cores: int) -> list[str]:
    """profiles/slurm with `slides_per_job` slides per synthesis group job, sized for `cores` at a
    time (the SLURM plugin runs them one after another all the same: docs/scale.md)."""
    return [
        "--workflow-profile", str(REPO_ROOT / "profiles" / "slurm"),
        "--jobs", "4", "--latency-wait", "5",
        "--group-components", *(f"{group}={slides_per_job}" for group in SLIDE_GROUPS),
        "--cores", str(cores),
        "--slurm-status-command", "squeue",
        "--slurm-init-seconds-before-status-checks", "1",
        "--slurm-keep-successful-logs",
    ]  # fmt: skip


def planned(workdir: Path, args: list[str], targets: list[str] = TARGETS) -> tuple[Counter, str]:
    """The cluster jobs a dry run plans, counted as bench.scale counts them (a group once, as
    `group` and `group:rule`; other rules by name), and the dry run's output."""
    run = snakemake(workdir, "-n", *args, env=dict(os.environ), timeout=600, targets=targets)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    by_rule, by_group = submissions(run.stdout, local_rules())
    return by_rule + by_group, run.stdout


def counted(jobs: list[dict[str, str]], rules: set[str]) -> Counter:
    """SLURM jobs counted like `planned`, from the comment the executor plugin gives each sbatch:
    `rule_<group>_<rule>` for a group job, `rule_<rule>` or `rule_<rule>_wildcards_...` else."""
    found: Counter = Counter()
    for job in jobs:
        comment = job["Comment"]
        groups = [g for g, r in SLIDE_GROUPS.items() if comment == f"rule_{g}_{r}"]
        names = [
            r
            for r in rules
            if comment in (f"rule_{r}",) or comment.startswith(f"rule_{r}_wildcards_")
        ]
        if groups:
            found[groups[0]] += 1
            found[f"{groups[0]}:{SLIDE_GROUPS[groups[0]]}"] += 1
        elif len(names) == 1:
            found[names[0]] += 1
        else:
            found[f"unknown:{comment}"] += 1
    return found


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
    args = slurm_args(SLIDES_PER_JOB, cores=1)  # a group job asks for 1 CPU of the 2-CPU node
    plan, _ = planned(on_slurm, args)
    started = time.monotonic()
    try:
        with LocalSlurm(tmp_path / "cluster") as cluster:
            run = snakemake(on_slurm, *args, env=cluster.env, timeout=1500)
            jobs = cluster.submitted_jobs()
    except ClusterUnavailable as reason:
        pytest.skip(f"no local SLURM cluster: {reason}")
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-6000:]
    # every sbatch the controller accepted, against the dry run's count (a group job once)
    ran = counted(jobs, CLUSTER_RULES | LOCAL_RULES | set(plan))
    assert ran == plan, f"SLURM ran {dict(ran)}, the dry run planned {dict(plan)}"
    assert all(job["JobState"] == "COMPLETED" for job in jobs), jobs
    assert set(ran) >= CLUSTER_RULES - SLIDE_RULES, ran
    assert not set(ran) & (LOCAL_RULES | SLIDE_RULES), ran  # per-slide work is grouped
    sizes = [d["synthetic"]["n_slides"] for d in config["datasets"].values()]
    for group, rule in SLIDE_GROUPS.items():
        assert ran[group] == ran[f"{group}:{rule}"] == -(-sum(sizes) // SLIDES_PER_JOB), ran
    for rule in SHARD_RULES:  # one sbatch per shard of each dataset's slides
        assert ran[rule] == sum(-(-n // SLIDES_PER_JOB) for n in sizes), ran
    # one sbatch per feature shard: the evaluation dataset's slides in runs of SLIDES_PER_JOB
    assert ran["extract_features"] == -(-config["datasets"]["tiny"]["synthetic"]["n_slides"]
                                        // SLIDES_PER_JOB), ran  # fmt: skip
    print(f"\nsbatch submissions (scontrol, {len(jobs)} in all): {dict(sorted(ran.items()))}")

    on_slurm_seconds = time.monotonic() - started
    reference = snakemake(local, "--cores", "2", env=dict(os.environ), timeout=1500)
    assert reference.returncode == 0, reference.stderr[-6000:]
    print(
        f"SLURM run {on_slurm_seconds:.0f} s ({len(jobs)} sbatch submissions),"
        f" local run {time.monotonic() - started - on_slurm_seconds:.0f} s"
    )
    expected, got = outputs(local), outputs(on_slurm)
    assert len(expected) >= 7 and any("predictions" in key for key in expected), list(expected)
    assert got.keys() == expected.keys()
    for key, value in expected.items():
        assert got[key] == value, f"{key} differs between the SLURM and the local run"
    print(f"equal: {', '.join(expected)}")


def segmentation_files(slide: str) -> list[str]:
    prefix = f"results/qc/segmentation/tiny/{slide}"
    return [f"{prefix}{ext}" for ext in (".json", ".geojson", ".mask.png", ".overlay.png")]


def test_failed_shard_keeps_finished_slides_and_reruns_only_the_rest(tmp_path):
    """A segmentation shard job of three slides; one slide file is broken (`strict: true`
    makes that a failed slide). The job segments the other two, then fails naming the broken
    one, with no manifest; the two keep their files, the broken one has none. Once the file is
    mended, the rerun's one shard job segments that slide alone."""
    config = cluster_config()
    config["strict"] = True
    config["segmentation"]["slides_per_job"] = 3
    workdir = tmp_path / "run"
    prepare(workdir, config)
    tiny = config["datasets"]["tiny"]
    plan = plan_from_settings("tiny", {"task": tiny["task"], "classes": tiny["classes"],
                                       **tiny["synthetic"]}).sort_values("slide_id")  # fmt: skip
    shards = -(-len(plan) // 3)
    manifest = f"results/qc/segmentation/tiny.shards/3/00000-of-{shards:05d}.json"
    first = plan.head(3)  # the first shard: the first three slide ids
    slides = list(first["slide_id"])
    broken, slide_file = slides[1], workdir / "results/cohort/tiny/slides" / first["file"].iloc[1]
    # the slide files, made here (a local run), then one of them broken
    files = [f"results/cohort/tiny/slides/{name}" for name in first["file"]]
    made = snakemake(workdir, "--cores", "1", env=dict(os.environ), timeout=600, targets=files)
    assert made.returncode == 0, made.stderr[-4000:]
    intact = slide_file.read_bytes()
    slide_file.write_bytes(b"not a slide\n")

    args = [*slurm_args(slides_per_job=3, cores=1), "--retries", "0"]
    plan_jobs, _ = planned(workdir, args, [manifest])
    assert plan_jobs == {"segment_tissue": 1}, plan_jobs
    try:
        with LocalSlurm(tmp_path / "cluster") as cluster:
            failed = snakemake(workdir, *args, env=cluster.env, timeout=900, targets=[manifest])
            failed_jobs = cluster.submitted_jobs()
            present = {slide: all((workdir / f).exists() for f in segmentation_files(slide))
                       for slide in slides}  # fmt: skip
            partial = [f for s in slides for f in segmentation_files(s)
                       if not present[s] and (workdir / f).exists()]  # fmt: skip
            kept = {f: (workdir / f).stat() for s in slides if present[s]
                    for f in segmentation_files(s)}  # fmt: skip
            had_manifest = (workdir / manifest).exists()
            slide_file.write_bytes(intact)
            plan_again, _ = planned(workdir, args, [manifest])
            again = snakemake(workdir, *args, env=cluster.env, timeout=900, targets=[manifest])
            jobs = cluster.submitted_jobs()
    except ClusterUnavailable as reason:
        pytest.skip(f"no local SLURM cluster: {reason}")
    assert failed.returncode != 0, failed.stdout[-3000:]
    assert [(j["Comment"].split("_wildcards_")[0], j["JobState"]) for j in failed_jobs] == [
        ("rule_segment_tissue", "FAILED")
    ], failed_jobs
    assert not partial, partial  # the failed slide wrote nothing
    assert not had_manifest  # the shard is not done
    assert present == {slide: slide != broken for slide in slides}, present
    assert plan_again == {"segment_tissue": 1}, plan_again

    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-6000:]
    assert [(j["Comment"].split("_wildcards_")[0], j["JobState"]) for j in jobs[1:]] == [
        ("rule_segment_tissue", "COMPLETED")
    ], jobs  # one more shard job, which segmented the mended slide only
    for name, before in kept.items():
        after = (workdir / name).stat()
        assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns), name
    assert all((workdir / f).is_file() for s in slides for f in segmentation_files(s))
    record = json.loads((workdir / segmentation_files(broken)[0]).read_text())
    assert record["status"] == "ok", record
    print(f"\nkept {sorted(s for s in slides if present[s])}, reran {broken}")
