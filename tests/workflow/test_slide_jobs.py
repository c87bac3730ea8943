"""Shard jobs take their slides' sheet rows: the annotations as inputs, mpp, geojson and
segmentation overrides in the command's --slides, blank ones as empty strings."""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

from abmilx.config import REPO_ROOT

BIN = Path(sys.executable).parent
CONFIG = """
datasets:
  s:
    task: subtyping
    classes: [IDC, ILC]
    slides: data/slides.csv
    labels: data/labels.csv
    split: {scheme: holdout, ratios: [0.5, 0.0, 0.5]}
experiments: {}
"""


def test_segmentation_jobs_take_their_sheet_row(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    for name in ("a.svs", "b.svs"):
        (data / name).write_bytes(b"")  # a dry run never opens the slides
    (data / "a.geojson").write_text('{"type": "FeatureCollection", "features": []}')
    (data / "slides.csv").write_text(
        "slide_id,case_id,path,mpp,geojson,segmentation\n"
        'a,ca,a.svs,0.5,a.geojson,"{""working_mpp"": 8.0}"\n'
        "b,cb,b.svs,,,\n"
    )
    (data / "labels.csv").write_text("case_id,label\nca,IDC\ncb,ILC\n")
    (tmp_path / "config.yaml").write_text(CONFIG)
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}"}
    target = "results/qc/segmentation/s.shards/100/00000-of-00001.json"
    result = subprocess.run(
        [str(BIN / "snakemake"), "-n", "-p", "--directory", str(tmp_path), target],
        cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-4000:]
    inputs = [line.strip() for line in output.splitlines() if line.strip().startswith("input:")]
    assert inputs == [f"input: {data / 'a.svs'}, {data / 'b.svs'}, {data / 'a.geojson'}"]
    slides = json.loads(re.search(r"--slides '(\[.*?\])'", output).group(1))
    assert slides == [
        {"slide_id": "a", "path": str(data / "a.svs"), "mpp": "0.5",
         "geojson": str(data / "a.geojson"), "overrides": '{"working_mpp": 8.0}'},
        {"slide_id": "b", "path": str(data / "b.svs"), "mpp": "", "geojson": "",
         "overrides": ""},  # blank: none
    ]  # fmt: skip


def test_a_shard_too_long_for_one_command_line_fails_before_any_job(tmp_path):
    """500 slides of long paths in one shard would be refused by the kernel at the job's start
    (one argument of at most 128 KiB): the dry run names the key to lower instead."""
    data = tmp_path / "data" / ("long_folder_name_" * 12)
    data.mkdir(parents=True)
    rows = ["slide_id,case_id,path"]
    for k in range(500):
        (data / f"slide_{k:04d}.svs").write_bytes(b"")
        rows.append(f"s{k:04d},c{k:04d},{data / f'slide_{k:04d}.svs'}")
    (tmp_path / "data" / "slides.csv").write_text("\n".join(rows) + "\n")
    labels = [f"c{k:04d},{'IDC' if k % 2 else 'ILC'}" for k in range(500)]
    (tmp_path / "data" / "labels.csv").write_text("case_id,label\n" + "\n".join(labels) + "\n")
    (tmp_path / "config.yaml").write_text(CONFIG + "segmentation: {slides_per_job: 500}\n")
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}"}
    result = subprocess.run(
        [str(BIN / "snakemake"), "-n", "--directory", str(tmp_path),
         "results/qc/segmentation/s.shards/500/00000-of-00001.json"],
        cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    output = result.stdout + result.stderr
    assert result.returncode != 0, output[-4000:]
    assert "config key 'segmentation/slides_per_job': the slides of s's shard" in output, output
    assert "lower slides_per_job" in output
