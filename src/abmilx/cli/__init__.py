"""The `abmilx` command (also `python -m abmilx`): what users need without writing Snakemake.

abmilx validate CONFIG [TARGET ...]   check a config as the workflow would, run nothing
abmilx predict --run RUN --slides SHEET --out DIR   apply a trained run to new slides
abmilx info STORE|RUN                 what a patch store or a run holds, how it was made
abmilx export-qupath --run RUN --out DIR   a run's attention and tissue as QuPath GeoJSON
abmilx heatmap --run RUN --slide ID --out PNG   one slide's attention, up to full patch scale
abmilx settings CONFIG EXPERIMENT --dataset NAME [--protocol P]   its training job's settings
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence


def _validate(args: argparse.Namespace) -> int:
    from abmilx.cli.validate import summary, validate

    result = validate(args.config, args.targets, directory=args.directory, snakefile=args.snakefile)
    print(summary(args.config, result), file=sys.stdout if result.ok else sys.stderr)
    return 0 if result.ok else 1


def _predict(args: argparse.Namespace) -> int:
    from abmilx.cli.predict import predict_slides

    options = {k: v for k, v in vars(args).items() if k not in ("command", "handler")}
    predictions = predict_slides(**options)
    print(predictions.to_string(index=False))
    print(f"wrote {args.out}/predictions.csv, attention.npz, heatmaps/, slides.tsv")
    return 0


def _info(args: argparse.Namespace) -> int:
    from abmilx.cli.info import info, render, to_json

    found = info(args.path)
    print(to_json(found) if args.json else render(found))
    return 0


def _export_qupath(args: argparse.Namespace) -> int:
    from abmilx.cli.qupath import export_qupath

    written = export_qupath(
        args.run, args.out, slides=args.slides, fold=args.fold, results=args.results
    )
    print(f"wrote {len(written)} GeoJSON files (tissue annotations, attention tiles) to {args.out}")
    return 0


def _heatmap(args: argparse.Namespace) -> int:
    from abmilx.cli.heatmap import draw_slide_heatmap

    path = draw_slide_heatmap(
        args.run,
        args.slide,
        args.out,
        fold=args.fold,
        mpp=args.mpp,
        normalisation=args.normalisation,
        slide=args.slide_file,
    )
    print(f"wrote {path}")
    return 0


def _settings(args: argparse.Namespace) -> int:
    import json

    from abmilx.cli.settings import resolve_job_settings

    settings, handover = resolve_job_settings(
        args.config, args.experiment, args.dataset, args.protocol
    )
    print(json.dumps(settings, sort_keys=True, indent=2))
    if handover:
        print(
            f"mil {handover['from']} -> {handover['to']}: handed on "
            f"{json.dumps(handover['handed'], sort_keys=True)}; not handed (the new model has "
            f"no such option, or they were {handover['from']}'s own): "
            f"{json.dumps(handover['left'], sort_keys=True)}",
            file=sys.stderr,
        )
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="abmilx", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    commands = parser.add_subparsers(dest="command", required=True)

    check = commands.add_parser("validate", help="check a config as the workflow would")
    check.add_argument("config", help="YAML config (replaces the repository's config.yaml)")
    check.add_argument("targets", nargs="*", help="targets to check (default: the whole demo)")
    check.add_argument(
        "--directory", default=".", help="working directory whose results/ count (default: .)"
    )
    check.add_argument(
        "--snakefile",
        help="the workflow to dry-run (a Snakefile or its checkout; default: the checkout this "
        "package runs from; without one, only the package's checks run)",
    )
    check.set_defaults(handler=_validate)

    apply = commands.add_parser("predict", help="apply a trained run to new slides")
    apply.add_argument("--run", required=True, help="run folder (fold<k>/ or its experiment)")
    apply.add_argument(
        "--slides", required=True, help="slide sheet: slide_id, case_id, path[, mpp]"
    )
    apply.add_argument("--out", required=True, help="new or empty output folder")
    apply.add_argument("--labels", help="optional label sheet: fills the label column")
    apply.add_argument("--fold", type=int, help="fold of an experiment folder with several")
    apply.add_argument("--store", help="the run's training patch store (default: from layout)")
    apply.add_argument(
        "--features",
        dest="features_dir",
        metavar="DIR",
        help="two-stage: the run's feature set (default: from layout)",
    )
    apply.add_argument("--weights", choices=("main", "ema"), default="main")
    apply.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    apply.add_argument("--threads", type=int, default=1)
    apply.add_argument(
        "--allow-partial",
        action="store_true",
        help="exit 0 even when some slides could not be predicted (they are still listed)",
    )
    apply.set_defaults(handler=_predict)

    show = commands.add_parser("info", help="what a patch store or run holds")
    show.add_argument("path", help="patch store (.lmdb), run folder, experiment folder or model.pt")
    show.add_argument("--json", action="store_true", help="machine-readable JSON")
    show.set_defaults(handler=_info)

    qupath = commands.add_parser(
        "export-qupath", help="a run's attention and tissue contours as QuPath GeoJSON"
    )
    qupath.add_argument("--run", required=True, help="evaluated run: experiment or fold<k>/")
    qupath.add_argument("--out", required=True, help="folder for <slide_id>.geojson files")
    qupath.add_argument("--slides", nargs="+", help="only these test slides (default: all)")
    qupath.add_argument("--fold", type=int, help="only this fold of an experiment folder")
    qupath.add_argument(
        "--results", help="results folder of a run moved out of the layout (default: its own)"
    )
    qupath.set_defaults(handler=_export_qupath)

    heat = commands.add_parser("heatmap", help="one test slide's attention as a large PNG")
    heat.add_argument("--run", required=True, help="evaluated run: experiment or fold<k>/")
    heat.add_argument("--slide", required=True, help="slide id (a test slide of the run)")
    heat.add_argument("--out", required=True, help="PNG file to write")
    heat.add_argument("--fold", type=int, help="fold of an experiment folder")
    heat.add_argument(
        "--mpp", type=float, help="µm per output pixel (default: 2048 px longest side)"
    )
    heat.add_argument(
        "--normalisation", choices=("percentile", "minmax", "rank"), default="percentile"
    )
    heat.add_argument("--slide-file", help="the slide (default: from the dataset's slide sheet)")
    heat.set_defaults(handler=_heatmap)

    job = commands.add_parser(
        "settings", help="the settings an experiment's training job gets on a dataset (JSON)"
    )
    job.add_argument("config", help="YAML config")
    job.add_argument("experiment", help="experiment name (a grid point's name too)")
    job.add_argument("--dataset", required=True, help="dataset of the config")
    job.add_argument(
        "--protocol",
        choices=("clean", "official"),
        help="as if the config's top-level protocol were this (default: the config's)",
    )
    job.set_defaults(handler=_settings)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the console script; returns the exit code (1 with a message on errors)."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        return args.handler(args)
    except (OSError, ValueError) as error:  # files not found, damaged, partial predictions
        print(f"abmilx {args.command}: error: {error}", file=sys.stderr)
        return 1
