"""Sharded feature extraction through the real Snakemake workflow: shard jobs of the tiny
cohort equal one extraction of its patch store, file by file; a new shard size reuses them."""

import json
import shutil

import pytest
import yaml
from tiny_workflow import TINY_CONFIG, snakemake

from abmilx.config import REPO_ROOT, encode_settings, schema_defaults
from abmilx.features.extract import extract

pytestmark = pytest.mark.integration

MANIFEST = "results/features/tiny/r18.manifest.json"


def _config(workdir, slides_per_job):
    config = yaml.safe_load(TINY_CONFIG.read_text())
    config["features"] = {"slides_per_job": slides_per_job}
    (workdir / "config.yaml").write_text(yaml.safe_dump(config))
    return config


def _jobs(output, rule):
    return output.count(f"rule {rule}:")


def test_shard_jobs_equal_one_job_and_a_new_size_keeps_the_files(tmp_path):
    shutil.copytree(
        REPO_ROOT / "src", tmp_path / "src", ignore=shutil.ignore_patterns("__pycache__")
    )
    config = _config(tmp_path, 3)  # 10 slides: shards of 3, 3, 3 and 1
    run = snakemake(tmp_path, "--cores", "2", MANIFEST)
    output = run.stdout + run.stderr
    assert run.returncode == 0, output[-8000:]
    assert _jobs(output, "extract_features") == 4 and _jobs(output, "combine_feature_shards") == 1
    shards = tmp_path / "results/features/tiny/r18.shards/3"
    assert sorted(p.name for p in shards.iterdir()) == [f"0000{i}-of-00004.json" for i in range(4)]

    features = tmp_path / "results/features/tiny/r18"
    one = tmp_path / "one" / "r18"
    settings = encode_settings(schema_defaults("feature_set") | config["feature_sets"]["r18"])
    extract(tmp_path / "results/tiles/tiny/patches.lmdb", one, seed=11, device="cpu", **settings)
    names = sorted(p.name for p in one.iterdir())
    assert len(names) == 10 and sorted(p.name for p in features.iterdir()) == names
    for name in names:
        assert (features / name).read_bytes() == (one / name).read_bytes(), name
    manifest = (tmp_path / MANIFEST).read_text()
    assert manifest == (tmp_path / "one" / "r18.manifest.json").read_text()

    mtimes = {p.name: p.stat().st_mtime_ns for p in features.iterdir()}
    _config(tmp_path, 5)
    run = snakemake(tmp_path, "--cores", "2", MANIFEST)
    output = run.stdout + run.stderr
    assert run.returncode == 0, output[-8000:]
    assert _jobs(output, "extract_features") == 2, output[-4000:]
    logs = tmp_path / "results/logs/extract_features/tiny/r18/5"
    for log in logs.iterdir():
        assert "keeping 5 finished slide files" in log.read_text(), log
    assert {p.name: p.stat().st_mtime_ns for p in features.iterdir()} == mtimes
    assert (tmp_path / MANIFEST).read_text() == manifest
    assert sorted(p.name for p in shards.parent.iterdir()) == ["5"]
    assert json.loads(manifest)["settings"]["seed"] == 11

    again = snakemake(tmp_path, "-n", "--cores", "2", MANIFEST)
    assert "Nothing to be done" in again.stdout + again.stderr
