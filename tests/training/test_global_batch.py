"""The global batch is one thing on any number of processes: one process accumulating two
passes and two DDP processes (gloo, CPU) of one pass compute the same gradient."""

import os
import subprocess
import sys
from pathlib import Path

import torch

from abmilx.config import REPO_ROOT

WORKER = Path(__file__).with_name("global_batch_worker.py")
sys.path.insert(0, str(WORKER.parent))
from global_batch_worker import write_data  # noqa: E402


def _gradients(folder: Path, processes: int) -> dict:
    folder.mkdir()
    write_data(folder)
    path = os.pathsep.join([str(REPO_ROOT / "src"), str(WORKER.parent)])
    env = {**os.environ, "PYTHONPATH": path, "OMP_NUM_THREADS": "1"}
    torchrun = str(Path(sys.executable).parent / "torchrun")
    launcher = [sys.executable]
    if processes > 1:
        launcher = [torchrun, "--standalone", "--nproc-per-node", str(processes)]
    command = [*launcher, "-m", WORKER.stem, str(folder / "grads.pt")]
    subprocess.run(command, env=env, check=True)
    return torch.load(folder / "grads.pt")


def test_one_process_with_accumulation_equals_two_processes(tmp_path):
    single = _gradients(tmp_path / "single", 1)
    ddp = _gradients(tmp_path / "ddp", 2)
    assert (single["world"], single["accumulation"]) == (1, 2)
    assert (ddp["world"], ddp["accumulation"]) == (2, 1)
    assert single["grads"].keys() == ddp["grads"].keys()
    for name, grad in single["grads"].items():
        assert grad.abs().sum() > 0, name
        torch.testing.assert_close(ddp["grads"][name], grad, rtol=0, atol=1e-6, msg=name)
