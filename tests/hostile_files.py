"""Hostile inputs for the integrity checks: damaged files, lost intermediates, changed inputs
between a crash and its resume. Each case damages a copy of small real artefacts and runs one
real command in a subprocess; `outcome` sorts what happened into:

- "message": exit 1 and one stderr line naming the file (the user commands);
- "job_error": a non-zero exit whose last stderr line names the file or the slides (a stage
  command, as a Snakemake job would fail at its start);
- "recovered": exit 0 after the damage was noticed and the saved state discarded or rebuilt;
- "silent": exit 0 with the damage unnoticed;
- "crash": a signal, or an error that does not name the file.

tests/test_hostile_files.py runs every case and checks the outcome recorded here.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch

SRC = Path(__file__).resolve().parents[1] / "src"
TRAIN = {"epochs": 3, "lr": 2e-3, "seed": 1, "classes": ["neg", "pos"]}
EVALUATE = {
    "n_boot": 10,
    "seed": 0,
    "device": "cpu",
    "model_weights": "main",
    "paper_inference_time": False,
}


def make_base(base: Path) -> Path:
    """A patch store, feature files with their split, and a trained two-stage run."""
    from abmilx.patches.store import PatchStoreWriter
    from abmilx.two_stage import train

    rng = np.random.default_rng(0)
    with PatchStoreWriter(
        base / "patches.lmdb", patch_size=32, jpeg_quality=90, scales={"main": 0.5}
    ) as writer:
        for slide_id in ("a", "b", "c"):
            images = rng.integers(0, 256, size=(40, 32, 32, 3), dtype=np.uint8)
            coords = np.stack([np.arange(40) * 32, np.zeros(40, dtype=int)], axis=1)
            writer.add_images(slide_id, "main", coords, list(images))
    labels = {f"s{k}": k % 2 for k in range(8)}
    (base / "features").mkdir()
    for k, (slide_id, label) in enumerate(labels.items()):
        features = rng.normal(size=(6 + k, 8)).astype(np.float32)
        features[:2, 0] += 4.0 * label
        coords = np.stack([np.arange(6 + k) * 256, np.zeros(6 + k)], axis=1).astype(np.int64)
        torch.save(
            {"features": torch.from_numpy(features), "coords": torch.from_numpy(coords)},
            base / "features" / f"{slide_id}.pt",
        )
    pd.DataFrame(
        {
            "slide_id": list(labels),
            "case_id": list(labels),
            "label": ["pos" if y else "neg" for y in labels.values()],
            "split": ["train"] * 6 + ["test"] * 2,
            "fold": 0,
        }
    ).to_csv(base / "splits.csv", index=False)
    train(base / "features", base / "splits.csv", 0, base / "run", threads=1, **TRAIN)
    (base / "run" / "metrics.json").write_text(json.dumps({"metrics": {"auc": {"point": 1.0}}}))
    return base


@dataclass(frozen=True)
class Case:
    group: str
    damage: Callable[[Path], list[str]]  # damages the copy in the folder, returns the command
    expected: str
    names: str = ""  # what the message must name ("" = the damaged file's name)


def python(*args: str) -> list[str]:
    return [sys.executable, *args]


def info(path: str) -> Callable[[Path], list[str]]:
    return lambda root: python("-m", "abmilx", "info", str(root / path))


def two_stage(root: Path, out: str = "out") -> list[str]:
    return python(
        "-m", "abmilx.two_stage", "train", "--features-dir", str(root / "features"),
        "--splits", str(root / "splits.csv"), "--fold", "0", "--out-dir", str(root / out),
        "--settings", json.dumps(TRAIN),
    )  # fmt: skip


def evaluate(root: Path) -> list[str]:
    return python(
        "-m", "abmilx.evaluation", "evaluate", "--run-dir", str(root / "run"),
        "--splits", str(root / "splits.csv"), "--fold", "0", "--kind", "two_stage",
        "--features-dir", str(root / "features"), "--out-dir", str(root / "evaluated"),
        "--settings", json.dumps(EVALUATE),
    )  # fmt: skip


def truncate(path: Path, size: int) -> None:
    with open(path, "r+b") as handle:
        handle.truncate(max(size, 0))


def overwrite(path: Path, offset: int, data: bytes) -> None:
    with open(path, "r+b") as handle:
        handle.seek(offset)
        handle.write(data)


def flip(path: Path, offset: int) -> None:
    with open(path, "r+b") as handle:
        handle.seek(offset)
        byte = handle.read(1)
        handle.seek(offset)
        handle.write(bytes([byte[0] ^ 0xFF]))


def damaged(path: str, harm: Callable[[Path], object], command) -> Callable[[Path], list[str]]:
    def run(root: Path) -> list[str]:
        harm(root / path)
        return command(root)

    return run


STORE, MODEL, FEATURE = "patches.lmdb", "run/model.pt", "features/s2.pt"  # s2: training


def size(path: Path) -> int:
    return path.stat().st_size


def _store_cases() -> dict[str, Case]:
    harms = {
        "truncated_half": lambda p: truncate(p, size(p) // 2),
        "truncated_one_page": lambda p: truncate(p, 4096),
        "truncated_100_bytes": lambda p: truncate(p, 100),
        "empty": lambda p: truncate(p, 0),
        "last_page_cut": lambda p: truncate(p, size(p) - 4096),
        "one_byte_short": lambda p: truncate(p, size(p) - 1),
        "zeroed": lambda p: p.write_bytes(bytes(size(p))),
        "meta_pages_zeroed": lambda p: overwrite(p, 0, bytes(8192)),
        "first_meta_page_zeroed": lambda p: overwrite(p, 0, bytes(4096)),
        "magic_flipped": lambda p: flip(p, 16),
        "random_bytes": lambda p: p.write_bytes(np.random.default_rng(1).bytes(size(p))),
        "text_file": lambda p: p.write_text("slide_id,label\na,1\n"),
    }
    cases = {
        f"store_{name}": Case("damaged store", damaged(STORE, harm, info(STORE)), "message")
        for name, harm in harms.items()
    }
    # Bytes of a patch's JPEG: `info` reads only the meta, the damage is met when decoding.
    cases["store_data_page_flipped"] = Case(
        "damaged store", damaged(STORE, lambda p: flip(p, size(p) // 2), info(STORE)), "silent"
    )
    return cases


def _not_a_run(path: Path) -> None:
    torch.save({"weight": torch.zeros(3)}, path)


def _plain_zip(path: Path) -> None:
    import zipfile

    path.unlink()
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("notes.txt", "not a checkpoint")


def _model_cases() -> dict[str, Case]:
    harms = {
        "truncated_half": lambda p: truncate(p, size(p) // 2),
        "truncated_10_bytes": lambda p: truncate(p, 10),
        "empty": lambda p: truncate(p, 0),
        "one_byte_short": lambda p: truncate(p, size(p) - 1),
        "zeroed": lambda p: p.write_bytes(bytes(size(p))),
        "zip_magic_flipped": lambda p: flip(p, 0),
        "text_file": lambda p: p.write_text("model"),
        "state_dict_not_a_run": _not_a_run,
        "zip_not_torch": _plain_zip,
        "lmdb_named_model_pt": lambda p: shutil.copy(p.parents[1] / STORE, p),
    }
    cases = {
        f"model_{name}": Case("damaged model.pt", damaged(MODEL, harm, info(MODEL)), "message")
        for name, harm in harms.items()
    }
    cases["model_truncated_evaluate"] = Case(
        "damaged model.pt", damaged(MODEL, lambda p: truncate(p, size(p) // 2), evaluate),
        "job_error",
    )  # fmt: skip
    return cases


def _feature_cases() -> dict[str, Case]:
    harms = {
        "truncated": lambda p: truncate(p, size(p) // 2),
        "empty": lambda p: truncate(p, 0),
        "zeroed": lambda p: p.write_bytes(bytes(size(p))),
        "text_file": lambda p: p.write_text("features"),
    }
    cases = {
        f"feature_{name}_train": Case(
            "damaged feature file", damaged(FEATURE, harm, two_stage), "job_error"
        )
        for name, harm in harms.items()
    }
    cases["feature_truncated_evaluate"] = Case(
        "damaged feature file",
        damaged("features/s7.pt", lambda p: truncate(p, size(p) // 2), evaluate),
        "job_error",
    )
    return cases


def _lost_cases() -> dict[str, Case]:
    return {
        "lost_train_feature_file": Case(
            "lost intermediate", damaged("features/s1.pt", Path.unlink, two_stage),
            "job_error", names="s1",
        ),
        "lost_test_feature_file_train": Case(
            "lost intermediate", damaged("features/s7.pt", Path.unlink, two_stage),
            "job_error", names="s7",
        ),
        "lost_test_feature_file_evaluate": Case(
            "lost intermediate", damaged("features/s7.pt", Path.unlink, evaluate),
            "job_error", names="s7",
        ),
        "lost_model_evaluate": Case(
            "lost intermediate", damaged(MODEL, Path.unlink, evaluate), "job_error",
            names="model.pt",
        ),
    }  # fmt: skip


def _split_with(change: Callable[[pd.DataFrame], pd.DataFrame]) -> Callable[[Path], None]:
    def harm(path: Path) -> None:
        change(pd.read_csv(path)).to_csv(path, index=False)

    return harm


def _split_cases() -> dict[str, Case]:
    unknown = _split_with(
        lambda t: pd.concat([t, t.iloc[[0]].assign(slide_id="ghost", case_id="ghost")])
    )
    return {
        "split_slide_without_features": Case(
            "damaged split", damaged("splits.csv", unknown, two_stage), "job_error",
            names="ghost",
        ),
        "split_empty": Case(
            "damaged split", damaged("splits.csv", lambda p: truncate(p, 0), two_stage),
            "job_error", names="splits.csv",
        ),
        "split_truncated_mid_row": Case(
            "damaged split",
            damaged("splits.csv", lambda p: truncate(p, size(p) - 9), two_stage),
            "job_error", names="splits.csv",
        ),
        "split_zeroed": Case(
            "damaged split",
            damaged("splits.csv", lambda p: p.write_bytes(bytes(size(p))), two_stage),
            "job_error", names="splits.csv",
        ),
    }  # fmt: skip


def _metrics_cases() -> dict[str, Case]:
    harms = {
        "truncated": lambda p: truncate(p, size(p) // 2),
        "empty": lambda p: truncate(p, 0),
        "a_list": lambda p: p.write_text("[1, 2]"),
    }
    return {
        f"metrics_json_{name}": Case(
            "damaged metrics.json", damaged("run/metrics.json", harm, info("run")), "message",
            names="metrics.json",
        )
        for name, harm in harms.items()
    }  # fmt: skip


RESUME_SCRIPT = """
import sys, os, torch
from pathlib import Path
from abmilx.training.callbacks import Callback
from abmilx.two_stage import train
root, change, phase = Path(sys.argv[1]), sys.argv[2], sys.argv[3]
settings = {"epochs": 3, "lr": 2e-3, "seed": 1, "classes": ["neg", "pos"]}

class Kill(Callback):
    def on_epoch_end(self, trainer, epoch, row):
        if epoch == 1:
            raise KeyboardInterrupt

if change == "settings_changed" and phase == "resume":
    settings["lr"] = 1e-3
if phase == "kill":
    try:
        train(root / "features", root / "splits.csv", 0, root / "out",
              extra_callbacks=[Kill()], **settings)
    except KeyboardInterrupt:
        pass
    sys.exit(0)
state = root / "out" / ".resume" / "state.pt"
if change == "feature_same_size_and_mtime":
    path = root / "features" / "s2.pt"
    stat = path.stat()
    record = torch.load(path)
    record["features"] = record["features"] + 1.0
    torch.save(record, path)
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert path.stat().st_size == stat.st_size
elif change == "split_label_flipped":
    text = (root / "splits.csv").read_text().replace("s0,s0,neg", "s0,s0,pos")
    (root / "splits.csv").write_text(text)
elif change == "state_truncated":
    state.write_bytes(state.read_bytes()[:500])
elif change == "state_zeroed":
    state.write_bytes(bytes(state.stat().st_size))
elif change == "state_deleted":
    state.unlink()
started = []

class Watch(Callback):
    def on_fit_start(self, trainer, start):
        started.append(start)

train(root / "features", root / "splits.csv", 0, root / "out", extra_callbacks=[Watch()],
      **settings)
print("started at epoch", started[0])
sys.exit(0 if started[0] == 0 else 3)
"""


def _resume_cases() -> dict[str, Case]:
    def resume(change: str) -> Callable[[Path], list[str]]:
        # The crash and the resume are two processes, as a killed job and its rerun are.
        both = f'"{sys.executable}" -c "$0" "$1" "$2" kill; "{sys.executable}" -c "$0" "$1" "$2" resume'
        return lambda root: ["sh", "-c", both, RESUME_SCRIPT, str(root), change]

    changes = (
        "feature_same_size_and_mtime",
        "split_label_flipped",
        "settings_changed",
        "state_truncated",
        "state_zeroed",
        "state_deleted",
    )
    return {
        f"resume_{change}": Case("changed input before resume", resume(change), "recovered")
        for change in changes
    }


CASES: dict[str, Case] = {
    **_store_cases(),
    **_model_cases(),
    **_feature_cases(),
    **_lost_cases(),
    **_split_cases(),
    **_metrics_cases(),
    **_resume_cases(),
}


def outcome(result: subprocess.CompletedProcess, names: str) -> str:
    """Sort a finished command into the outcomes of the module docstring."""
    if result.returncode < 0 or result.returncode >= 128:
        return "crash"
    if result.returncode == 0:
        return "recovered" if "started at epoch 0" in result.stdout else "silent"
    if result.returncode == 3:  # the resume script: training went on from the old state
        return "silent"
    lines = [line for line in result.stderr.strip().splitlines() if line.strip()]
    last = lines[-1] if lines else ""
    if names not in last:
        return "crash"
    if "Traceback" not in result.stderr and len(lines) == 1:
        return "message"
    return "job_error"


def run_case(name: str, base: Path, work: Path, src: Path = SRC) -> tuple[str, str]:
    """Damage a fresh copy of `base` in `work` as case `name` says, run its command with the
    package at `src`; (outcome, last stderr line)."""
    case = CASES[name]
    root = work / name
    shutil.copytree(base, root)
    command = case.damage(root)
    environment = {**os.environ, "PYTHONPATH": str(src), "OMP_NUM_THREADS": "1"}
    result = subprocess.run(
        command, capture_output=True, text=True, timeout=300, env=environment, cwd=root
    )
    names = case.names or _damaged_name(name)
    last = (result.stderr.strip().splitlines() or [""])[-1]
    return outcome(result, names), last


def _damaged_name(name: str) -> str:
    if name.startswith("store_"):
        return STORE
    if name.startswith("model_"):
        return "model.pt"
    return "s2.pt" if name.endswith("_train") else "s7.pt"
