"""`abmilx validate CONFIG`: the workflow's own checks, by a dry run, with a summary or the error."""

import subprocess
import sys

import yaml

from abmilx.cli import main
from abmilx.config import REPO_ROOT

TINY_CONFIG = REPO_ROOT / "tests" / "integration" / "tiny_config.yaml"


def test_a_good_config_is_ok_with_its_datasets_experiments_and_jobs(tmp_path, capsys):
    code = main(["validate", str(TINY_CONFIG), "--directory", str(tmp_path)])
    out = capsys.readouterr().out
    assert code == 0, out
    assert out.startswith(f"OK {TINY_CONFIG}")
    assert "tiny: subtyping (IDC, ILC), from synthetic" in out
    assert "abmilx_e2e: e2e, on every dataset" in out
    assert "tiny_pretraining: pretraining, from synthetic" in out
    assert "segment_tissue 2" in out and "train_e2e 1" in out and "pretrain_encoder 1" in out
    assert not (tmp_path / "results").exists()  # a dry run: nothing was made


def test_experiments_from_presets_and_grids_are_listed_resolved(tmp_path, capsys):
    config = yaml.safe_load(TINY_CONFIG.read_text())
    config["experiments"]["heads"] = {
        "base": "abmilx_e2e",
        "grid": {"settings.mil_kwargs.n_heads": [2]},
    }
    config["experiments"]["preset_run"] = {"preset": "abmilx_e2e_r18_subtyping"}
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    assert main(["validate", str(path), "--directory", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "heads__n_heads-2: e2e" in out and "preset_run: e2e" in out


def test_a_bad_config_fails_with_the_key_and_exit_code_1(tmp_path, capsys):
    config = yaml.safe_load(TINY_CONFIG.read_text())
    config["experiments"]["abmilx_e2e"]["settings"]["n_patchez"] = 12
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(config))
    code = main(["validate", str(bad), "--directory", str(tmp_path)])
    err = capsys.readouterr().err
    assert code == 1
    assert err.startswith(f"INVALID {bad}")
    assert "experiments/abmilx_e2e/settings" in err and "n_patchez" in err
    assert err.count(f"{bad}:") == 1  # the file named once
    assert "Traceback" not in err


def test_python_m_abmilx_is_the_same_command():
    result = subprocess.run(
        [sys.executable, "-m", "abmilx", "validate", "missing.yaml"], capture_output=True, text=True
    )
    assert result.returncode == 1
    assert "config file" in result.stderr and "missing.yaml does not exist" in result.stderr


def test_a_missing_snakefile_is_named(tmp_path, capsys):
    code = main(["validate", str(TINY_CONFIG), "--snakefile", str(tmp_path / "nowhere")])
    assert code == 1
    assert f"Snakefile {tmp_path / 'nowhere'} does not exist" in capsys.readouterr().err
