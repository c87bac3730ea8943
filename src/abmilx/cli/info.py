"""`abmilx info PATH`: what a patch store or a trained run holds, and how it was made."""

from __future__ import annotations

import json
import statistics
from pathlib import Path
from typing import Any

from abmilx.cli.trained import run_directory, store_recipe, workflow_layout
from abmilx.integrity import DamagedFileError, read_json_object


def store_info(path: Path) -> dict[str, Any]:
    """Meta of a patch store: format, scales, patch size, JPEG quality, counts, and its recipe."""
    from abmilx.patches.store import PatchStore

    meta = PatchStore(path).meta
    slides = meta["slides"]
    slide_mpp = [m for m in meta.get("slide_mpp", {}).values() if m is not None]
    info = {
        "type": "patch store",
        "path": str(path),
        "format": f"{meta['format']} v{meta['format_version']}",
        "code_version": meta.get("code_version"),
        "patch_size": meta["patch_size"],
        "jpeg_quality": meta["jpeg_quality"],
        "jpeg_subsampling": meta.get("jpeg_subsampling"),
        "scales_mpp": {name: scale["mpp"] for name, scale in meta["scales"].items()},
        "slides": len(slides),
        "patches": {name: sum(c.get(name, 0) for c in slides.values()) for name in meta["scales"]},
        "slides_without_patches": sorted(s for s, c in slides.items() if not sum(c.values())),
        "slide_mpp_range": [min(slide_mpp), max(slide_mpp)] if slide_mpp else None,
        "patches_per_slide": {
            name: _spread([c.get(name, 0) for c in slides.values()]) for name in meta["scales"]
        },
        "per_slide": slides,
    }
    try:
        info["made_with"] = store_recipe(path)
    except (FileNotFoundError, ValueError) as error:
        info["made_with"] = f"unknown: {error}"
    return info


def _spread(counts: list[int]) -> str:
    if not counts:
        return "none"
    return f"min {min(counts)}, median {statistics.median(counts):g}, max {max(counts)}"


def _fold_info(run_dir: Path) -> dict[str, Any]:
    from abmilx.training.runs import load_run

    checkpoint = load_run(run_dir)
    history = checkpoint.get("history") or []
    info = {
        "kind": checkpoint["kind"],
        "task": checkpoint["task"],
        "classes": checkpoint.get("classes"),
        "weights": ["main", *(["ema"] if "ema_state_dict" in checkpoint else [])],
        "settings": checkpoint.get("settings"),
        "selection": checkpoint.get("selection"),
        "cost": checkpoint.get("cost"),
        "epochs_trained": len(history),
        "last_epoch": history[-1] if history else None,
    }
    metrics_file = run_dir / "metrics.json"
    if metrics_file.is_file():
        metrics = read_json_object(metrics_file)
        info["provenance"] = metrics.get("provenance")
        info["test_metrics"] = {
            name: summary.get("point") for name, summary in metrics.get("metrics", {}).items()
        }
    layout = workflow_layout(run_dir)
    if layout is not None:
        info["dataset"], info["experiment"] = layout["dataset"], layout["experiment"]
        store = layout["results"] / "tiles" / layout["dataset"] / "patches.lmdb"
        info["training_store"] = str(store) if store.is_file() else None
    return info


def run_info(path: Path) -> dict[str, Any]:
    """A run folder (model.pt) or an experiment folder (fold*/model.pt, metrics.json)."""
    if (path / "model.pt").is_file() or path.name == "model.pt":
        return {"type": "run", "path": str(path), **_fold_info(run_directory(path))}
    folds = sorted(p.parent for p in path.glob("fold*/model.pt"))
    info: dict[str, Any] = {"type": "experiment", "path": str(path)}
    if (path / "metrics.json").is_file():
        metrics = read_json_object(path / "metrics.json")
        info["metrics"] = metrics.get("metrics")
    info["folds"] = {fold.name: _fold_info(fold) for fold in folds}
    return info


def info(path: str | Path) -> dict[str, Any]:
    """What PATH is and holds; raises ValueError when it is neither a store nor a run."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path} does not exist")
    if path.is_dir() or path.name == "model.pt":
        if (
            path.name == "model.pt"
            or any(path.glob("model.pt"))
            or any(path.glob("fold*/model.pt"))
        ):
            return run_info(path)
        raise ValueError(f"{path}: no model.pt here nor in fold*/: not a run folder")
    try:
        return store_info(path)
    except DamagedFileError as error:
        if path.suffix == ".lmdb":
            raise  # a damaged store: names the file and what is wrong with it already
        raise ValueError(f"{path} is neither a patch store nor a run: {error}") from None
    except Exception as error:
        raise ValueError(f"{path} is neither a patch store nor a run: {error}") from None


def to_json(value: Any) -> str:
    """JSON text; checkpoint values (tensors, numpy scalars) as plain numbers or lists."""
    return json.dumps(
        value, indent=2, default=lambda v: v.tolist() if hasattr(v, "tolist") else str(v)
    )


def render(value: Any, indent: int = 0, skip: tuple[str, ...] = ("per_slide",)) -> str:
    """Indented `key: value` lines, lists on one line; `skip` keys are for --json only."""
    pad = "  " * indent
    if isinstance(value, dict):
        lines = []
        for key, item in value.items():
            if key in skip:
                continue
            if isinstance(item, dict) and item:
                lines.append(f"{pad}{key}:")
                lines.append(render(item, indent + 1, skip))
            else:
                lines.append(f"{pad}{key}: {_scalar(item)}")
        return "\n".join(lines)
    return f"{pad}{_scalar(value)}"


def _scalar(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.6g}"
    if isinstance(value, list | tuple):
        return json.dumps(value, default=str) if value else "none"
    return "none" if value is None else str(value)
