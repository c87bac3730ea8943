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
