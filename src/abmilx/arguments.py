"""Command lines of the stages: a ``--settings`` JSON object checked against the function it
feeds, so that a typo or a missing key fails with the key's name before any work."""

from __future__ import annotations

import argparse
import inspect
import json
from functools import partial


def json_object(parser: argparse.ArgumentParser, text: str, option: str = "--settings") -> dict:
    """The ``option`` JSON object, or a usage error naming the option."""
    try:
        settings = json.loads(text)
    except json.JSONDecodeError as error:
        parser.error(f"{option} is not valid JSON: {error}")
    if not isinstance(settings, dict):
        parser.error(f"{option} must be a JSON object")
    return settings


def parse_settings(
    parser: argparse.ArgumentParser,
    text: str,
    function,
    reserved: set[str],
    option: str = "--settings",
    complete: bool = True,
) -> dict:
    """The ``option`` JSON object, checked against ``function``'s keyword arguments; with
    ``complete``, every argument without a default must be there (the rules pass the whole
    config block, defaults filled from the schema)."""
    settings = json_object(parser, text, option)
    parameters = inspect.signature(function).parameters
    allowed = set(parameters) - reserved
    unknown = sorted(set(settings) - allowed)
    if unknown:
        parser.error(f"{option}: unknown settings {unknown}; allowed: {sorted(allowed)}")
    required = {name for name in allowed if parameters[name].default is inspect.Parameter.empty}
    missing = sorted(required - set(settings))
    if complete and missing:
        parser.error(f"{option}: missing settings {missing} (the config schema has their defaults)")
    return settings


def optional_mpp(text: str) -> float | None:
    """``--mpp``: empty means no override (the slide sheet's mpp column was blank)."""
    if text.strip() == "":
        return None
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"--mpp must be a number or empty, got {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"--mpp must be positive, got {text!r}")
    return value


def add_shard_arguments(parser: argparse.ArgumentParser) -> None:
    """The arguments of a per-slide stage's shard job (rules segment_tissue, tile_slide)."""
    parser.add_argument(
        "--slides",
        required=True,
        help="JSON list of the shard's slides: objects with slide_id, path, mpp and the sheet's"
        " per-slide columns",
    )
    parser.add_argument("--dataset", required=True)
    parser.add_argument("--out-dir", required=True, help="where each slide's files go")
    parser.add_argument("--manifest", required=True, help="the shard manifest to write (.json)")
    parser.add_argument(
        "--settings", required=True, help="JSON object: the stage's config block, strict"
    )
    parser.add_argument("--code", required=True, help="digest of the stage's code")
    parser.add_argument(
        "--threads", type=int, default=1, help="slides at a time (threads per slide if fewer)"
    )


def run_shard(parser: argparse.ArgumentParser, args: argparse.Namespace, stage: str, work) -> int:
    """Run ``work(job, settings=, strict=, code=, threads=)`` on every slide of ``--slides``,
    ``--threads`` slides at a time (each with its share of the threads), then write
    the shard manifest, or name the failed slides and exit 1 (abmilx.shards.finish_shard)."""
    from pathlib import Path

    from abmilx.shards import finish_shard, run_slides

    try:
        slides = json.loads(args.slides)
    except json.JSONDecodeError as error:
        parser.error(f"--slides is not valid JSON: {error}")
    if not isinstance(slides, list) or not all(
        isinstance(job, dict) and "slide_id" in job for job in slides
    ):
        parser.error("--slides must be a JSON list of objects with a slide_id")
    settings = json_object(parser, args.settings)
    strict = bool(settings.pop("strict", False))
    # fewer slides than threads (a few large slides on a workstation): each gets the rest
    at_once = max(1, min(args.threads, len(slides)))
    work = partial(
        work, settings=settings, strict=strict, code=args.code, threads=args.threads // at_once
    )
    done, failed = run_slides(work, slides, at_once)
    return finish_shard(
        args.manifest,
        stage=stage,
        dataset=args.dataset,
        shard=Path(args.manifest).stem,
        done=done,
        failed=failed,
    )
