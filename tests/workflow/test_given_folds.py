"""The official BRCA survival folds through the workflow: the adapter's fold columns plan one
training fold each, their number is checked at parse time, and the split rule's survival bins
follow the config's protocol."""

import json
import re
import subprocess
import sys
from pathlib import Path

from paper_data import fake_paper_data

from abmilx.config import REPO_ROOT

BIN = Path(sys.executable).parent


def dry_run(folder: Path, protocol: str, given_folds: int) -> tuple[int, str]:
    (folder / "config.yaml").write_text(
        f"protocol: {protocol}\n"
        "datasets:\n"
        "  brca:\n"
        "    task: survival\n"
        "    adapter:\n"
        "      name: tcga_survival\n"
        "      options: {fold_files: data/tcga_brca/survival_tcga_brca_3fold,\n"
        "                slide_dir: data/tcga_brca/slides}\n"
        f"    split: {{scheme: given, given_folds: {given_folds}}}\n"
        "experiments:\n"
        "  x: {kind: e2e, settings: {encoder_weights: random}}\n"
    )
    result = subprocess.run(
        [str(BIN / "snakemake"), "-n", "-p", "results/runs/brca/x/metrics.json",
         "--directory", str(folder), "--configfile", str(folder / "config.yaml")],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    return result.returncode, result.stdout + result.stderr


def split_settings(output: str) -> dict:
    match = re.search(r"python -m abmilx\.splits make .*?--settings '(\{.*?\})'", output)
    assert match, output
    return json.loads(match[1])


def test_official_folds_plan_three_folds_and_bins_follow_the_protocol(tmp_path):
    fake_paper_data(tmp_path)
    code, output = dry_run(tmp_path, "official", 3)
    assert code == 0, output
    for fold in range(3):
        assert f"results/runs/brca/x/fold{fold}/model.pt" in output
    assert "fold3" not in output
    settings = split_settings(output)
    assert (settings["scheme"], settings["given_folds"], settings["bins_from"]) == (
        "given", 3, "all",
    )  # fmt: skip
    code, output = dry_run(tmp_path, "clean", 3)
    assert code == 0, output
    assert split_settings(output)["bins_from"] == "train"
    code, output = dry_run(tmp_path, "clean", 2)
    assert code != 0
    assert (
        "config key 'datasets/brca/split/given_folds': 2 given fold(s), but the adapter gives 3 "
        "(split_0, split_1, split_2)"
    ) in output
