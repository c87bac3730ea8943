"""What planning a paper-size cohort costs, and how many cluster jobs it submits.

Lays out placeholder data the way the paper configs expect it (empty slide files: the adapters
match file names and never open them, and a dry run reads nothing else), then times
``snakemake -n`` on it, with and without ``profiles/slurm``, and once more with every per-slide
output present (the no-op dry run after a finished run; for cohorts up to ``--records`` slides
also with the job records Snakemake keeps after a real run, which the no-op reads). For scale,
the same count of per-slide shard jobs is planned once more by a minimal Snakefile (chained
one-line rules, nothing else): Snakemake's own floor, which no change of ours can go below.
Peak memory is the largest resident set of the snakemake process and its children
(``getrusage``, through a small launcher). The job table counts what the SLURM profile would
submit: jobs of one group count once, local rules not at all.

Run: ``python -m bench.scale [--panda 10616] [--tcga 1000] [--records 20000]``
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import yaml

from abmilx.config import REPO_ROOT

BIN = Path(sys.executable).parent
SEGMENTATION = {
    "record": ".json",
    "geojson": ".geojson",
    "mask": ".mask.png",
    "overlay": ".overlay.png",
}
TILING = {"record": ".json", "store": ".lmdb"}
PAPER = REPO_ROOT / "workflow" / "configs" / "paper"
UUID = "0b1f2d3c-4a5b-6c7d-8e9f-000000000000"
PLAN_LIMIT_S, PLAN_LIMIT_MB, NOOP_LIMIT_S = 20.0, 1024.0, 30.0
SLIDES_PER_CLUSTER_JOB = 100  # at most one cluster job per this many slides, per per-slide rule
# The per-slide stages, one job per shard of slides (config <stage>/slides_per_job), and the
# folder of each dataset's per-slide files: their shard manifests are read at parse time.
SHARD_RULES = {
    "segment_tissue": ("segmentation", "results/qc/segmentation/{dataset}/{slide}", SEGMENTATION),
    "tile_slide": ("tiling", "results/tiles/{dataset}/slides/{slide}", TILING),
}


def _write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def _touch_all(paths: list[Path]) -> None:
    for folder in {p.parent for p in paths}:
        folder.mkdir(parents=True, exist_ok=True)
    for path in paths:
        path.write_bytes(b"")


def panda_layout(root: Path, n: int) -> list[str]:
    """Kaggle PANDA: ``train_images/<image_id>.tiff``, ``train.csv`` and the official 7:1:2
    split file ``panda.csv``; returns the slide ids."""
    ids = [hashlib.md5(str(k).encode()).hexdigest() for k in range(n)]
    _touch_all([root / "data/panda/train_images" / f"{i}.tiff" for i in ids])
    (root / "data/panda/train_label_masks").mkdir(parents=True, exist_ok=True)  # annotations
    _write(
        root / "data/panda/train.csv",
        "image_id,data_provider,isup_grade,gleason_score\n"
        + "".join(f"{i},radboud,{k % 6},3+3\n" for k, i in enumerate(ids)),
    )
    folds = ["train"] * 7 + ["val"] + ["test"] * 2
    _write(
        root / "data/panda/panda.csv",
        "case,slide,label,fold\n"
        + "".join(f"{i},{i},{k % 6},{folds[k % 10]}\n" for k, i in enumerate(ids)),
    )
    return ids


def tcga_layout(root: Path, n: int) -> list[str]:
    """GDC TCGA-BRCA: ``slides/<uuid>/<barcode>.<uuid>.svs`` and ``clinical.tsv``; returns the
    case ids."""
    cases = [f"TCGA-A1-{k:04d}" for k in range(n)]
    _touch_all(
        [root / f"data/tcga_brca/slides/{k}/{c}-01Z-00-DX1.{UUID}.svs" for k, c in enumerate(cases)]
    )
    diagnosis = ["Infiltrating duct carcinoma, NOS", "Lobular carcinoma, NOS"]
    _write(
        root / "data/tcga_brca/clinical.tsv",
        "case_submitter_id\tproject_id\tprimary_diagnosis\tvital_status\tdays_to_death"
        "\tdays_to_last_follow_up\n"
        + "".join(
            f"{c}\tTCGA-BRCA\t{diagnosis[k % 2]}\tAlive\t'--\t{200 + k}\n"
            for k, c in enumerate(cases)
        ),
    )
    return cases


COHORTS = {
    "panda": (panda_layout, PAPER / "panda.yaml"),
    "tcga_brca": (tcga_layout, PAPER / "tcga_brca_subtyping.yaml"),
}


def local_rules() -> set[str]:
    """The workflow's `localrules:` (they run where Snakemake runs, never submitted)."""
    text = (REPO_ROOT / "workflow" / "rules" / "common.smk").read_text()
    block = re.search(r"^localrules:\n((?:[ \t]+\w+,?\n)+)", text, re.MULTILINE)
    return set(re.findall(r"\w+", block.group(1)))


# Linux carries a process's peak resident set over fork and exec, so a snakemake started straight
# from this process would report this process's memory whenever that is larger (`python -m bench`
# has PyTorch and the earlier benches loaded). A small launcher starts it and reports its usage.
LAUNCHER = """
import json, resource, subprocess, sys
code = subprocess.call(sys.argv[2:])
usage = resource.getrusage(resource.RUSAGE_CHILDREN)
with open(sys.argv[1], "w") as out:
    json.dump([code, usage.ru_utime + usage.ru_stime, usage.ru_maxrss], out)
"""


def snakemake(workdir: Path, *args: str) -> dict:
    """``snakemake`` in ``workdir``: wall and CPU seconds, peak RSS (MB) and its output."""
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}"}
    command = [str(BIN / "snakemake"), "--directory", str(workdir), *args]
    with tempfile.TemporaryFile() as log, tempfile.TemporaryDirectory() as folder:
        report = Path(folder) / "usage.json"
        start = time.perf_counter()
        subprocess.run([sys.executable, "-c", LAUNCHER, str(report), *command], cwd=REPO_ROOT,
                       env=env, stdout=log, stderr=log, check=False)  # fmt: skip
        seconds = time.perf_counter() - start
        log.seek(0)
        text = log.read().decode()
        returncode, cpu_s, maxrss_kb = json.loads(report.read_text())
    if returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed:\n{text[-4000:]}")
    return {
        "wall_s": seconds,
        "cpu_s": cpu_s,
        "peak_mb": maxrss_kb / 1024,
        "output": text,
    }


def dry_run(workdir: Path, *args: str) -> dict:
    return snakemake(workdir, "-n", *args)


def submissions(output: str, local: set[str]) -> tuple[Counter, Counter]:
    """Cluster submissions a dry run plans: (by rule outside groups, by group name), and the
    rules each group holds as ``group:rule`` counts of groups in the second counter."""
    by_rule: Counter = Counter()
    by_group: Counter = Counter()
    group = None
    rules_in_group: set[str] = set()

    def close() -> None:
        if group is not None:
            by_group[group] += 1
            for rule in rules_in_group:
                by_group[f"{group}:{rule}"] += 1

    for line in output.splitlines():
        head = re.search(r"Group job (\S+) \(jobs", line)
        if head:
            close()
            group, rules_in_group = head.group(1), set()
            continue
        job = re.match(r"^(\s*)(?:local)?rule (\w+):", line)
        if not job:
            continue
        indented, rule = bool(job.group(1)), job.group(2)
        if indented and group is not None:
            rules_in_group.add(rule)
            continue
        close()
        group = None
        if rule not in local and rule != "all":
            by_rule[rule] += 1
    close()
    return by_rule, by_group


def directory_outputs() -> dict[str, re.Pattern]:
    """Each rule's ``directory(...)`` outputs as one pattern (a wildcard matches a path part).
    Per rule, because a pattern alone also matches other rules' files (``{feature_set}`` matches
    ``r50.manifest.json`` beside the folder)."""
    patterns: dict[str, list[str]] = {}
    for rules in (REPO_ROOT / "workflow" / "rules").glob("*.smk"):
        for block in re.split(r"^(?=(?:local)?rule |checkpoint )", rules.read_text(), flags=re.M):
            name = re.match(r"(?:local)?(?:rule|checkpoint) (\w+):", block)
            for found in re.findall(r'directory\(\s*"([^"]+)"', block):
                patterns.setdefault(name.group(1), []).append(
                    re.sub(r"\\\{\w+\\\}", "[^/]+", re.escape(found))
                )
    return {rule: re.compile("|".join(found)) for rule, found in patterns.items()}


def shard_manifest(rule: str, output: str, shell: str) -> str:
    """A finished shard's manifest: its slides (the job's --slides) with their files, which are
    made too (empty): the workflow checks at parse time that every listed file is there."""
    stage, pattern, suffixes = SHARD_RULES[rule]
    found = re.search(r"--slides '(\[.*?\])'", shell)
    dataset = re.search(r"--dataset (\S+)", shell).group(1).strip("'")
    slides = {}
    for job in json.loads(found.group(1)) if found else []:
        prefix = pattern.format(dataset=dataset, slide=job["slide_id"])
        slides[job["slide_id"]] = {
            "status": "ok",
            "files": {kind: prefix + suffix for kind, suffix in suffixes.items()},
        }
    record = {"stage": stage, "dataset": dataset, "shard": Path(output).stem, "slides": slides}
    return json.dumps(record)


def finish(workdir: Path, planned: str) -> dict:
    """Every planned job's outputs present and up to date, nothing computed: empty files (a
    directory for its rule's directory outputs, the per-slide files a shard manifest lists) from
    the dry run's ``output:`` lines and shell commands (``-p``), then ``snakemake --touch`` to
    give them the DAG's order of modification times."""
    directories = directory_outputs()
    jobs = re.split(r"^(?=(?:local)?rule \w+:)", planned, flags=re.M)
    for job in jobs:
        head = re.match(r"(?:local)?rule (\w+):", job)
        outputs = re.search(r"^\s*output: (.+)$", job, flags=re.M)
        if not head or not outputs:
            continue
        rule = head.group(1)
        for name in outputs.group(1).split(", "):
            path = workdir / name
            if rule in directories and directories[rule].fullmatch(name):
                path.mkdir(parents=True, exist_ok=True)
            elif rule == "combine_feature_shards":  # read at parse time: a manifest of no slide
                _write(path, json.dumps({"fingerprint": None, "settings": {}, "slides": {}}))
            elif rule in SHARD_RULES:
                manifest = shard_manifest(rule, name, job)
                _write(path, manifest)
                files = json.loads(manifest)["slides"].values()
                _touch_all([workdir / f for entry in files for f in entry["files"].values()])
            else:
                path.parent.mkdir(parents=True, exist_ok=True)
                path.touch()
    return snakemake(workdir, "--touch", "--cores", "1")


FLOOR_RULE = """
rule {name}:
    input:
        "{source}/{{item}}"
    output:
        "{name}/{{item}}"
    shell:
        "cp {{input}} {{output}}"
"""


def snakemake_floor(workdir: Path, jobs: int, rules: list[str], slurm_args: list[str]):
    """Dry-run time of a minimal Snakefile planning ``jobs`` items through ``rules`` (chained in
    order), under the same SLURM arguments as the real plan."""
    workdir.mkdir(parents=True, exist_ok=True)
    _touch_all([workdir / "items" / f"s{k:06d}" for k in range(jobs)])
    last, text = "items", ""
    for rule in rules:
        text += FLOOR_RULE.format(name=rule, source=last)
        last = rule
    all_rule = f'rule all:\n    input:\n        expand("{last}/{{item}}", item=ITEMS)\n'
    _write(
        workdir / "Snakefile",
        f"ITEMS = [f's{{k:06d}}' for k in range({jobs})]\n\n\n{all_rule}\n" + text,
    )
    return snakemake(workdir, "-n", "--snakefile", str(workdir / "Snakefile"), *slurm_args)


def measure(
    name: str, n: int, root: Path, noop: bool, slides_per_job: int | None, records: int
) -> dict:
    """Lay out the cohort, dry-run it three ways and count the submissions."""
    layout, config = COHORTS[name]
    workdir = root / name
    start = time.perf_counter()
    layout(workdir, n)
    settings = yaml.safe_load(config.read_text())
    if slides_per_job is not None:
        for stage, _, _ in SHARD_RULES.values():
            settings.setdefault(stage, {})["slides_per_job"] = slides_per_job
    (workdir / "config.yaml").write_text(yaml.safe_dump(settings, sort_keys=False))
    row = {
        "cohort": name,
        "slides": n,
        "layout_s": time.perf_counter() - start,
        "slides_per_job": slides_per_job or SLIDES_PER_CLUSTER_JOB,
    }
    plain = dry_run(workdir)
    row["plain"] = {k: v for k, v in plain.items() if k != "output"}
    slurm_args = ["--profile", "profiles/slurm"]
    slurm = dry_run(workdir, *slurm_args)
    row["slurm"] = {k: v for k, v in slurm.items() if k != "output"}
    row["by_rule"], row["by_group"] = submissions(slurm["output"], local_rules())
    row["floor_rules"] = [rule for rule in SHARD_RULES if rule in row["by_rule"]]
    shards = max([row["by_rule"][rule] for rule in row["floor_rules"]], default=1)
    floor = snakemake_floor(
        root / f"{name}-floor", shards, row["floor_rules"], ["--executor", "slurm", "--jobs", "100"]
    )
    row["floor"] = {k: v for k, v in floor.items() if k != "output"}
    if noop:
        row["touch"] = {k: v for k, v in finish(workdir, slurm["output"]).items() if k != "output"}
        after = dry_run(workdir, *slurm_args)
        row["noop"] = {k: v for k, v in after.items() if k != "output"}
        row["noop_jobs"] = sum(submissions(after["output"], set())[0].values())
        if n <= records:
            # `--touch` records no job; a real run leaves Snakemake a record per output (params,
            # code, input), which the no-op reads. `--forceall` makes touch record every job, one
            # job at a time (about a minute for PANDA's 400-odd jobs).
            snakemake(workdir, "--touch", "--forceall", "--cores", "2", "--quiet")
            recorded = dry_run(workdir, *slurm_args)
            row["noop_recorded"] = {k: v for k, v in recorded.items() if k != "output"}
            row["noop_recorded_jobs"] = sum(submissions(recorded["output"], set())[0].values())
    return row


def verdict(ok: bool) -> str:
    return "OK" if ok else "MISSED"


def report(row: dict) -> None:
    n = row["slides"]
    print(f"-- {row['cohort']}: {n} placeholder slides (layout {row['layout_s']:.1f} s)")
    for key, label, limit in [
        ("plain", "dry run", None),
        ("slurm", "dry run, profiles/slurm", PLAN_LIMIT_S),
        ("floor", "Snakemake alone, same shard jobs", None),
        ("noop", "no-op dry run after a finished run", NOOP_LIMIT_S),
        ("noop_recorded", "the same, with Snakemake's job records", NOOP_LIMIT_S),
    ]:
        if key not in row:
            continue
        run = row[key]
        line = (
            f"{label:38s} wall {run['wall_s']:6.1f} s  CPU {run['cpu_s']:6.1f} s"
            f"  peak {run['peak_mb']:6.0f} MB"
        )
        if limit is not None:
            planning = key in ("plain", "slurm")
            ok = run["wall_s"] <= limit and (not planning or run["peak_mb"] <= PLAN_LIMIT_MB)
            memory = f", {PLAN_LIMIT_MB:.0f} MB" if planning else ""
            line += f"  (limit {limit:.0f} s{memory}: {verdict(ok)})"
        print(line, flush=True)
    if "floor" in row:
        ratio = row["slurm"]["cpu_s"] / row["floor"]["cpu_s"]
        rules = " + ".join(row["floor_rules"])
        shards = max(row["by_rule"][rule] for rule in row["floor_rules"])
        print(f"{'our plan / Snakemake floor (CPU)':38s} {ratio:6.2f}  (floor: {shards} x {rules})")
    if "noop" in row:
        print(f"{'jobs left after the finished run':38s} {row['noop_jobs']}")
        if "noop_recorded" in row:
            print(f"{'jobs left, with the job records':38s} {row['noop_recorded_jobs']}")
        else:
            print(f"{'the same, with Snakemake job records':38s} not measured (over --records)")
    print("cluster submissions under profiles/slurm (a job group counts once):")
    groups = {k: v for k, v in row["by_group"].items() if ":" not in k}
    for group, count in sorted(groups.items()):
        rules = sorted(k.split(":", 1)[1] for k in row["by_group"] if k.startswith(f"{group}:"))
        print(f"  group {group:18s} {count:6d}  ({', '.join(rules)})")
    limit = -(-n // row["slides_per_job"])
    for rule, count in sorted(row["by_rule"].items()):
        line = f"  {rule:24s} {count:6d}"
        if rule in SHARD_RULES:
            line += f"  (per-slide stage; limit {limit}: {verdict(count <= limit)})"
        print(line)
    total = sum(groups.values()) + sum(row["by_rule"].values())
    print(f"  {'total':24s} {total:6d}", flush=True)


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--panda", type=int, default=10616, help="PANDA-like slides (paper: 10,616)"
    )
    parser.add_argument(
        "--tcga", type=int, default=1000, help="TCGA-BRCA-like slides (paper: ~1,000)"
    )
    parser.add_argument(
        "--no-noop", action="store_true", help="skip the touch and the no-op dry run after it"
    )
    parser.add_argument(
        "--slides-per-job",
        type=int,
        default=None,
        help="slides per segmentation and tiling job (default: the config's)",
    )
    parser.add_argument(
        "--records",
        type=int,
        default=20000,
        help="cohorts of at most this many slides also time the no-op with Snakemake's job"
        " records, as a real run leaves them (recording goes one job at a time)",
    )
    args = parser.parse_args(argv)
    rows = []
    with tempfile.TemporaryDirectory(prefix="abmilx-scale-") as tmp:
        for name, n in [("panda", args.panda), ("tcga_brca", args.tcga)]:
            if n <= 0:
                continue
            row = measure(name, n, Path(tmp), not args.no_noop, args.slides_per_job, args.records)
            report(row)
            rows.append(row)
    return rows


if __name__ == "__main__":
    main()
