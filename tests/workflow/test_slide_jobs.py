"""Per-slide jobs take their slide's sheet row: the annotation as an input, mpp, geojson and
segmentation overrides on the command line, blank ones as empty arguments."""

import os
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
    targets = [f"results/qc/segmentation/s/{slide}.json" for slide in "ab"]
    result = subprocess.run(
        [str(BIN / "snakemake"), "-n", "--directory", str(tmp_path), *targets],
        cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-4000:]
    inputs = {line.strip() for line in output.splitlines() if line.strip().startswith("input:")}
    assert inputs == {f"input: {data / 'a.svs'}, {data / 'a.geojson'}", f"input: {data / 'b.svs'}"}
    shells = {
        line.split("--slide-id ")[1][0]: line
        for line in output.splitlines()
        if "--slide-id" in line
    }
    assert (
        f"--mpp=0.5 --geojson={data / 'a.geojson'} --overrides='{{\"working_mpp\": 8.0}}'"
        in shells["a"]
    )
    assert "--mpp= --geojson= --overrides= " in shells["b"]  # empty: none
