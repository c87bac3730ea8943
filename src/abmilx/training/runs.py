"""Run outputs: `model.pt`, `train_log.csv`, and the hidden per-epoch resume state.

Resume state lives in `<out_dir>/.resume/`, which is not a declared Snakemake output: Snakemake
deletes declared outputs before a job starts, so a resumable state must live elsewhere.
"""

from __future__ import annotations

import csv
import resource
import shutil
from pathlib import Path
from typing import Any

import torch

from abmilx.integrity import DamagedFileError, load_torch_file, written_whole

RUN_FILE = "model.pt"
LOG_FILE = "train_log.csv"
RESUME_DIR = ".resume"
RESUME_FILE = "state.pt"
RUN_KEYS = ("kind", "task", "classes", "settings", "state_dict")


def _atomic_save(obj: Any, path: Path) -> None:
    """torch.save through a temporary file so a crash never leaves a truncated checkpoint."""
    with written_whole(path) as partial:
        torch.save(obj, partial)


def save_run(
    path: str | Path,
    *,
    kind: str,
    task: str,
    classes: list[str],
    settings: dict,
    state_dict: dict[str, torch.Tensor],
    history: list[dict],
    cost: dict,
    ema_state_dict: dict[str, torch.Tensor] | None = None,
    selection: dict | None = None,
) -> None:
    """Write a run checkpoint (`model.pt`); `kind` is the run's `Task.kind`."""
    payload = {
        "kind": kind,
        "task": task,
        "classes": list(classes),
        "settings": settings,
        "state_dict": state_dict,
        "history": history,
        "cost": cost,
        "selection": selection or {},
    }
    if ema_state_dict is not None:
        payload["ema_state_dict"] = ema_state_dict
    _atomic_save(payload, Path(path))


def load_run(path: str | Path) -> dict:
    """Read a run checkpoint; `path` is the run directory or the model.pt file."""
    path = Path(path)
    if path.is_dir():
        path = path / RUN_FILE
    checkpoint = load_torch_file(path)
    missing = [key for key in RUN_KEYS if not isinstance(checkpoint, dict) or key not in checkpoint]
    if missing:
        raise DamagedFileError(path, f"not a run checkpoint (no {', '.join(missing)})")
    return checkpoint


def write_train_log(out_dir: str | Path, history: list[dict]) -> None:
    """Rewrite `train_log.csv` from the full history (one row per finished epoch)."""
    if not history:
        return
    path = Path(out_dir) / LOG_FILE
    fields = list(history[0].keys())
    with written_whole(path) as partial, open(partial, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=fields)
        writer.writeheader()
        writer.writerows(history)


def resume_path(out_dir: str | Path) -> Path:
    return Path(out_dir) / RESUME_DIR / RESUME_FILE


def save_resume(out_dir: str | Path, state: dict) -> None:
    _atomic_save(state, resume_path(out_dir))


def load_resume(out_dir: str | Path) -> dict | None:
    """The resume state left by an interrupted run, or None."""
    path = resume_path(out_dir)
    if not path.exists():
        return None
    return load_torch_file(path)


def clear_resume(out_dir: str | Path) -> None:
    shutil.rmtree(Path(out_dir) / RESUME_DIR, ignore_errors=True)


def peak_rss_mb() -> float:
    """Peak resident memory of this process or of its largest finished child (DataLoader workers)."""
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return max(own, children) / 1024.0


def count_parameters(model: torch.nn.Module) -> int:
    return sum(parameter.numel() for parameter in model.parameters())
