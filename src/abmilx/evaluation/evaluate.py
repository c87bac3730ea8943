"""Evaluate one trained run on one fold: predictions, attention and bootstrap metrics on disk.

`evaluate_predictions` does the metric work from a logits table and the checkpoint dict, so it
is testable without any model; `evaluate` wraps it with `abmilx.kinds.predict`, which
serves every run kind.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import inspect
import json
import logging
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from abmilx.arguments import parse_settings
from abmilx.evaluation.aggregate import aggregate_files
from abmilx.evaluation.bootstrap import bootstrap
from abmilx.evaluation.metrics import (
    ClassificationScores,
    SurvivalScores,
    median_survival_bin,
    softmax,
    survival_risk,
)
from abmilx.provenance import git_commit

log = logging.getLogger(__name__)

# Official bootstrap seeds are fold + a constant; ours mix the configured seed and the fold.
BOOTSTRAP_STREAM = 7784414403328510413


def _logit_columns(logits: pd.DataFrame, n_outputs: int | None) -> list[str]:
    columns = [c for c in logits.columns if c.startswith("logit_")]
    expected = [f"logit_{i}" for i in range(n_outputs if n_outputs is not None else len(columns))]
    if columns != expected:
        raise ValueError(f"predictions need columns {expected}, got {columns}")
    return columns


def _join_truth(logits: pd.DataFrame, truth: pd.DataFrame) -> tuple[pd.DataFrame, list[str]]:
    """Truth rows (slide_id, case_id, label[, time, event]) that have logits, and the slides
    without a prediction (failed slides: no patches or features), which are left out."""
    if logits["slide_id"].duplicated().any():
        raise ValueError("predictions contain a slide_id more than once")
    logit_columns = [c for c in logits.columns if c.startswith("logit_")]
    merged = truth.merge(
        logits[["slide_id", *logit_columns]], on="slide_id", how="left", indicator=True
    )
    missing = merged.loc[merged["_merge"] == "left_only", "slide_id"].tolist()
    if len(missing) == len(merged):
        raise ValueError(f"no prediction for any of the {len(merged)} evaluated slides")
    if missing:
        log.warning("no prediction for %d slide(s), left out: %s", len(missing), missing[:10])
    merged = merged[merged["_merge"] == "both"].drop(columns="_merge")
    return merged.reset_index(drop=True), missing


def _json_safe(value: Any) -> Any:
    """Checkpoint values (numpy or torch scalars, tuples) as plain JSON types."""
    if isinstance(value, Mapping):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(v) for v in value]
    if hasattr(value, "item") and callable(value.item):
        value = value.item()
    if isinstance(value, float) and not np.isfinite(value):
        return None
    return value


def _torch_version() -> str:
    try:
        return importlib.metadata.version("torch")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def evaluate_predictions(
    logits: pd.DataFrame,
    truth: pd.DataFrame,
    checkpoint: Mapping[str, Any],
    *,
    fold: int,
    n_boot: int,
    seed: int,
    model_weights: str,
    dataset: str = "",
    experiment: str = "",
    config_hash: str = "",
    encoder_weights: str = "",
    split: str = "test",
    inference_seconds_per_slide: float | None = None,
    device: str = "cpu",
) -> tuple[pd.DataFrame, dict[str, Any]]:
    """Bootstrap metrics of one fold from slide-level logits; returns (predictions, metrics).

    `n_boot`, `seed` and `model_weights` are the config's `evaluation` block (defaults in its
    schema); `device` is only recorded.

    logits: slide_id + logit_0..logit_{C-1}. truth: split-file rows of the evaluated slides.
    Classification is scored per slide (bootstrap units = cases, a case's slides drawn
    together); survival per case, with logits averaged over the case's slides before the risk.
    """
    task = checkpoint["task"]
    classes = [str(c) for c in checkpoint.get("classes") or []]
    table, missing = _join_truth(logits, truth)
    if task == "classification":
        columns = _logit_columns(logits, len(classes))
        probs = softmax(table[columns].to_numpy(dtype=float))
        predictions = table[["slide_id", "case_id", "label"]].copy()
        predictions["label"] = predictions["label"].astype(str)
        for i, name in enumerate(classes):
            predictions[f"prob_{name}"] = probs[:, i]
        predictions["pred"] = [classes[i] for i in probs.argmax(axis=1)]
        data = {"y": predictions["label"].to_numpy(), "probs": probs}
        metric_fn = ClassificationScores(classes)
        groups = predictions["case_id"].to_numpy()
    elif task == "survival":
        columns = _logit_columns(logits, None)
        per_case = table.groupby("case_id", sort=True)
        case_logits = per_case[columns].mean().to_numpy(dtype=float)
        predictions = per_case[["label", "time", "event"]].first().reset_index()
        predictions["label"] = predictions["label"].astype(int)
        predictions["risk"] = survival_risk(case_logits)
        predictions["pred"] = median_survival_bin(case_logits)
        data = {
            "time": predictions["time"].to_numpy(dtype=float),
            "event": predictions["event"].to_numpy(dtype=int),
            "risk": predictions["risk"].to_numpy(),
        }
        metric_fn = SurvivalScores()
        groups = None
    else:
        raise ValueError(f"checkpoint has unknown task '{task}'")

    bootstrap_seed = [int(seed), int(fold), BOOTSTRAP_STREAM]
    summaries = bootstrap(metric_fn, data, n=n_boot, seed=bootstrap_seed, groups=groups)
    train_settings = checkpoint.get("settings") or {}
    cost = dict(_json_safe(checkpoint.get("cost") or {}))
    cost["inference_seconds_per_slide"] = inference_seconds_per_slide
    metrics = {
        "dataset": dataset,
        "experiment": experiment,
        "kind": checkpoint.get("kind"),
        # clean or official (docs/protocol.md); runs trained before the switch were clean
        "protocol": train_settings.get("protocol", "clean"),
        "model_weights": model_weights,
        "task": task,
        "fold": int(fold),
        "split": split,
        "n": len(predictions),
        "n_cases": int(table["case_id"].nunique()),
        "n_slides": len(table),
        "missing_predictions": missing,
        "classes": classes,
        "metrics": summaries,
        "selection": _json_safe(checkpoint.get("selection") or {}),
        "bootstrap": {"n_boot": n_boot, "seed": int(seed), "unit": "case", "ci": "percentile 95%"},
        "cost": cost,
        "provenance": {
            "git_commit": git_commit(),
            "config_hash": config_hash,
            "seed": _json_safe(train_settings.get("seed", seed)),
            "device": device,
            "encoder_weights": encoder_weights or train_settings.get("encoder_weights", ""),
            "torch_version": _torch_version(),
        },
    }
    return predictions, metrics


def write_outputs(
    out_dir: str | Path,
    predictions: pd.DataFrame,
    attention: Mapping[str, Mapping[str, np.ndarray]],
    metrics: Mapping[str, Any],
) -> None:
    """predictions.csv, attention.npz (`<slide_id>/coords`, `<slide_id>/attention`), metrics.json."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    predictions.to_csv(out_dir / "predictions.csv", index=False)
    arrays = {}
    for slide_id, maps in attention.items():
        arrays[f"{slide_id}/coords"] = np.asarray(maps["coords"], dtype=np.int64)
        arrays[f"{slide_id}/attention"] = np.asarray(maps["attention"], dtype=np.float32)
    np.savez_compressed(out_dir / "attention.npz", **arrays)
    (out_dir / "metrics.json").write_text(json.dumps(metrics, indent=2, allow_nan=False) + "\n")


FLOP_SLIDES = 4


def count_flops(task, model, n_classes, slide_ids, case_ids) -> dict[str, float]:
    """FLOPs per slide (torch's counter: 2 per multiply-add of matmuls and convolutions; for
    two-stage runs the aggregator's only, the features being precomputed), on a second pass
    of the evaluated model over the first FLOP_SLIDES test slides: the counter slows a pass
    about 2x, so the timed pass must not carry it."""
    from torch.utils.flop_counter import FlopCounterMode

    from abmilx.training.predictions import predict_loaded

    counted = slide_ids[:FLOP_SLIDES]
    with FlopCounterMode(display=False) as counter:
        predict_loaded(
            task, model, n_classes, counted, None if case_ids is None else case_ids[:FLOP_SLIDES]
        )
    return {
        "flops_per_slide": counter.get_total_flops() / len(counted),
        "flops_slides": len(counted),
    }


def run_paper_cost(
    checkpoint: dict, model, features_dir: str | Path | None, inference_time: bool
) -> dict[str, Any]:
    """#Parameter, FLOPs (and IT) of the evaluated model as the paper counts them; the
    encoder of a two-stage run is the one its features were extracted with."""
    import torch

    from abmilx.evaluation.paper_cost import inference_seconds, paper_cost
    from abmilx.models import create_encoder

    aggregator = getattr(model, "mil", model)
    if checkpoint["kind"] == "two_stage":
        first = next(iter(sorted(Path(features_dir).glob("*.pt"))))  # our feature file
        encoder_name = torch.load(first, map_location="cpu", weights_only=False).get("encoder")
        feature_dim = int(checkpoint["settings"]["in_dim"])
    else:
        encoder_name = checkpoint["settings"]["encoder"]
        feature_dim = int(model.encoder.out_dim)
    cost = paper_cost(encoder_name, aggregator, feature_dim)
    if inference_time and encoder_name is not None:
        device = next(aggregator.parameters()).device
        encoder = getattr(model, "encoder", None) or create_encoder(encoder_name)
        cost["paper_inference_seconds"] = inference_seconds(encoder, aggregator, device)
        cost["paper_inference_device"] = device.type
    return cost


def memory_cost(cost: dict) -> dict[str, Any]:
    """The paper's Memory column: training's GPU peak on CUDA, else the CPU's peak RSS (the
    source is recorded, so a table never passes one off as the other)."""
    if cost.get("peak_gpu_mb") is not None:
        return {"memory_mb": cost["peak_gpu_mb"], "memory_source": "gpu peak allocated"}
    if cost.get("peak_rss_mb") is not None:
        return {"memory_mb": cost["peak_rss_mb"], "memory_source": "cpu peak rss"}
    return {}


def evaluate(
    run_dir: str | Path,
    splits: str | Path,
    fold: int,
    kind: str,
    out_dir: str | Path,
    store: str | Path | None = None,
    features_dir: str | Path | None = None,
    threads: int = 1,
    *,
    n_boot: int,
    seed: int,
    model_weights: str,
    device: str,
    paper_inference_time: bool,
    dataset: str = "",
    experiment: str = "",
    config_hash: str = "",
    encoder_weights: str = "",
    split: str = "test",
) -> dict[str, Any]:
    """Predict the fold's `split` slides with the run's model.pt and write the three outputs.

    device: "auto" | "cpu" | "cuda", where the model runs. model_weights: "main" or "ema" (the
    EMA teacher of an E2E run, when it kept one; two-stage runs have main weights only), or
    "both": the outputs are the main model's and metrics.json adds the EMA teacher's metrics
    under "ema" (null when the run kept no EMA), as the official code tests both.
    """
    import torch

    from abmilx.kinds import load_trained, task_type
    from abmilx.training.bags import read_split, require_slides
    from abmilx.training.predictions import predict_loaded
    from abmilx.training.runs import load_run

    task_type(kind)  # fails early on an unknown kind
    torch.set_num_threads(threads)
    table = read_split(splits, {"slide_id": str, "case_id": str, "label": str})
    rows = table[(table["fold"] == fold) & (table["split"] == split)]
    if rows.empty:
        raise ValueError(f"{splits}: no '{split}' slides in fold {fold}")
    rows = rows.drop(columns=["split", "fold", "repeat"], errors="ignore").reset_index(drop=True)
    slide_ids = rows["slide_id"].tolist()

    # model.pt is this workflow's own output (kind, task, classes, settings, history, cost).
    checkpoint = load_run(run_dir)
    if checkpoint["kind"] != kind:
        raise ValueError(f"{run_dir}/model.pt is a {checkpoint['kind']} run, not {kind}")
    source = store if store is not None else features_dir
    if source is None:
        raise ValueError(f"kind {kind} needs its data: --store (e2e, c2c, ft) or --features-dir")
    # A survival case's slides form one bag.
    case_ids = rows["case_id"].tolist() if checkpoint["task"] == "survival" else None
    n_classes = len(checkpoint["classes"])
    both = model_weights == "both"
    started = time.perf_counter()  # building the model counts, as it did in `predict`
    task, model, _ = load_trained(checkpoint, source, "main" if both else model_weights, device)
    require_slides(slide_ids, task.available(), splits, str(source))
    logits, attention = predict_loaded(task, model, n_classes, slide_ids, case_ids)
    seconds_per_slide = (time.perf_counter() - started) / len(slide_ids)
    on_gpu = device != "cpu" and torch.cuda.is_available()
    resolved_device = f"cuda ({torch.cuda.get_device_name(0)})" if on_gpu else "cpu"

    predictions, metrics = evaluate_predictions(
        logits,
        rows,
        checkpoint,
        fold=fold,
        n_boot=n_boot,
        seed=seed,
        dataset=dataset,
        experiment=experiment,
        config_hash=config_hash,
        encoder_weights=encoder_weights,
        split=split,
        inference_seconds_per_slide=seconds_per_slide,
        device=resolved_device,
        model_weights=model_weights,
    )
    metrics["cost"].update(count_flops(task, model, n_classes, slide_ids, case_ids))
    metrics["cost"].update(
        run_paper_cost(checkpoint, model, features_dir, paper_inference_time),
        **memory_cost(metrics["cost"]),
    )
    if metrics["cost"].get("train_seconds") is not None:
        metrics["cost"]["train_hours"] = metrics["cost"]["train_seconds"] / 3600
    if both:
        metrics["ema"] = None
        if checkpoint.get("ema_state_dict") is not None:
            _, ema_model, _ = load_trained(checkpoint, source, "ema", device)
            ema_logits, _ = predict_loaded(task, ema_model, n_classes, slide_ids, case_ids)
            _, ema = evaluate_predictions(
                ema_logits, rows, checkpoint, fold=fold, n_boot=n_boot, seed=seed,
                model_weights="ema",
            )  # fmt: skip
            metrics["ema"] = {
                "metrics": ema["metrics"],
                "epoch": (checkpoint.get("selection") or {}).get("ema_epoch"),
            }
    write_outputs(out_dir, predictions, attention, metrics)
    summary = ", ".join(
        f"{name} {s['point']:.4f} [{s['ci_low']:.4f}, {s['ci_high']:.4f}]"
        for name, s in metrics["metrics"].items()
        if s["point"] is not None and s["ci_low"] is not None
    )
    log.info("fold %d %s: n=%d %s", fold, split, metrics["n"], summary)
    return metrics


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m abmilx.evaluation", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    command = commands.add_parser("evaluate", help="bootstrap metrics of one run and fold")
    command.add_argument("--run-dir", required=True, help="directory holding model.pt")
    command.add_argument("--splits", required=True, help="split CSV of the dataset")
    command.add_argument("--fold", required=True, type=int)
    command.add_argument("--kind", required=True, help="run kind: two_stage, or e2e, c2c, ft")
    source = command.add_mutually_exclusive_group(required=True)
    source.add_argument("--store", help="patch store (LMDB) for kinds e2e, c2c, ft")
    source.add_argument("--features-dir", help="feature directory for kind two_stage")
    command.add_argument("--out-dir", required=True)
    command.add_argument("--settings", default="{}", help="JSON object of evaluate options")
    command.add_argument("--threads", type=int, default=1)
    combine = commands.add_parser("aggregate", help="combine the folds of one experiment")
    combine.add_argument("--metrics", nargs="+", required=True, help="per-fold metrics.json")
    combine.add_argument("--predictions", nargs="+", required=True, help="per-fold CSVs")
    combine.add_argument("--out-metrics", required=True)
    combine.add_argument("--out-predictions", required=True)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    if args.command == "aggregate":
        aggregate_files(args.metrics, args.predictions, args.out_metrics, args.out_predictions)
        return
    command_line = {
        name
        for name, parameter in inspect.signature(evaluate).parameters.items()
        if parameter.kind is not inspect.Parameter.KEYWORD_ONLY
    }
    settings = parse_settings(parser, args.settings, evaluate, command_line)
    evaluate(
        args.run_dir,
        args.splits,
        args.fold,
        args.kind,
        args.out_dir,
        store=args.store,
        features_dir=args.features_dir,
        threads=args.threads,
        **settings,
    )
