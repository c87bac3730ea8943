"""Hostile inputs of issue #26: config mistakes, hostile names of every kind and YAML faults.

Each case is a small workflow folder (config.yaml, slide and label sheets) that differs from a
valid sheet-based cohort in one place, and the text the parse-time error must contain (the key,
or the file and line). test_hostile_inputs.py asserts each fails while the workflow parses;
run as a script, this module dry-runs every case through Snakemake on a given checkout and counts
those caught before any job:

    python tests/workflow/hostile_cases.py --checkout /path/to/checkout
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import subprocess
import sys
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import yaml

SLIDES = "slide_id,case_id,path\ns1,c1,slides/a.svs\ns2,c1,slides/b.svs\ns3,c2,slides/c.svs\n"
LABELS = "slide_id,label\ns1,IDC\ns2,IDC\ns3,ILC\n"
BASE = {
    "device": "cpu",
    "datasets": {
        "mine": {
            "task": "subtyping",
            "classes": ["IDC", "ILC"],
            "slides": "slides.csv",
            "labels": "labels.csv",
        },
        "pre": {"task": "pretraining", "synthetic": {"n_slides": 4, "n_cases": 4}},
    },
    "tiling": {"scales": {"main": 1.0, "low": 2.0}},
    "pretrain": {"ssl": {"dataset": "pre", "epochs": 2}},
    "feature_sets": {"r18": {"encoder": "resnet18_layer3", "weights": "random"}},
    "experiments": {
        "ts": {"kind": "two_stage", "features": "r18", "settings": {"mil": "abmil"}},
        "x": {
            "kind": "e2e",
            "settings": {"encoder_weights": "pretrain:ssl", "epochs": 3, "warmup_epochs": 0},
        },
        "g": {"base": "ts", "grid": {"settings.epochs": [2, 3]}},
    },
    "tables": {"t": {"rows": ["ts", "x"]}},
    "figures": {"f": {"kind": "performance_vs_cost", "experiments": ["ts", "x"]}},
}


@dataclass
class Case:
    """One hostile input: the files it changes and what its error must name."""

    name: str
    group: str
    expect: str
    config: dict | None = None
    config_text: str | None = None
    slides: str = SLIDES
    labels: str = LABELS
    files: dict[str, str] = field(default_factory=dict)

    def write(self, folder: Path) -> Path:
        (folder / "slides").mkdir(parents=True, exist_ok=True)
        for name in ("a", "b", "c"):
            (folder / "slides" / f"{name}.svs").write_bytes(b"not read at parse time")
        (folder / "slides.csv").write_text(self.slides)
        (folder / "labels.csv").write_text(self.labels)
        text = self.config_text
        if text is None:
            text = yaml.safe_dump(BASE if self.config is None else self.config, sort_keys=False)
        (folder / "config.yaml").write_text(text)
        return folder


def edited(edit: Callable[[dict], object]) -> dict:
    config = copy.deepcopy(BASE)
    edit(config)
    return config


def renamed(section: str, old: str, new: str, config: dict) -> None:
    """Rename a key of a config section, keeping its place."""
    config[section] = {(new if k == old else k): v for k, v in config[section].items()}


# --- hostile names: one value per kind of trouble, for every kind of name ------------------
HOSTILE = {
    "ampersand": "d&touch PWNED&x",
    "semicolon": "d;touch PWNED",
    "substitution": "d$(touch PWNED)",
    "backtick": "d`touch PWNED`",
    "quote": "d'x",
    "double_quote": 'd"x',
    "parent": "../../evil",
    "dash": "-rf",
}


def rename_dataset(value: str) -> dict:
    return edited(lambda c: renamed("datasets", "mine", value, c))


def rename_feature_set(value: str) -> dict:
    def edit(c):
        renamed("feature_sets", "r18", value, c)
        c["experiments"]["ts"]["features"] = value

    return edited(edit)


def rename_pretrain(value: str) -> dict:
    def edit(c):
        renamed("pretrain", "ssl", value, c)
        c["experiments"]["x"]["settings"]["encoder_weights"] = f"pretrain:{value}"

    return edited(edit)


def rename_table(value: str) -> dict:
    return edited(lambda c: renamed("tables", "t", value, c))


def rename_figure(value: str) -> dict:
    return edited(lambda c: renamed("figures", "f", value, c))


def rename_experiment(value: str) -> dict:
    def edit(c):
        renamed("experiments", "x", value, c)
        c["tables"]["t"]["rows"] = ["ts", value]
        c["figures"]["f"]["experiments"] = ["ts", value]

    return edited(edit)


def rename_scale(value: str) -> dict:
    def edit(c):
        c["tiling"]["scales"] = {"main": 1.0, value: 2.0}
        c["experiments"]["x"]["settings"]["scales"] = {"main": "main", "low": value}

    return edited(edit)


NAME_KINDS = {
    "dataset": (rename_dataset, "datasets/"),
    "feature_set": (rename_feature_set, "feature_sets/"),
    "pretrain": (rename_pretrain, "pretrain/"),
    "table": (rename_table, "tables/"),
    "figure": (rename_figure, "figures/"),
    "experiment": (rename_experiment, "experiments/"),
    "scale": (rename_scale, "tiling/scales/"),
}


def name_cases() -> list[Case]:
    cases = []
    for kind, (rename, section) in NAME_KINDS.items():
        for trouble, value in HOSTILE.items():
            cases.append(Case(f"{kind}-{trouble}", "names", section + value, rename(value)))
    for trouble, value in HOSTILE.items():
        slides = SLIDES.replace("s2,c1", f"{csv_field(value)},c1")
        labels = LABELS.replace("s2,IDC", f"{csv_field(value)},IDC")
        expect = "slides.csv, line 3, column 'slide_id'"
        cases.append(Case(f"slide_id-{trouble}", "names", expect, slides=slides, labels=labels))
    # grid values become words of the point's name ("g2__encoder_weights-.."), sanitised but
    # for dots
    grid = edited(
        lambda c: c["experiments"].update(
            g2={"base": "x", "grid": {"settings.encoder_weights": ["..", "random"]}}
        )
    )
    cases.append(Case("grid_point-parent", "names", "experiments/g2/grid", grid))
    return cases


def csv_field(value: str) -> str:
    return '"' + value.replace('"', '""') + '"' if any(c in value for c in ',"') else value


# --- config mistakes -----------------------------------------------------------------------
def settings(config: dict, experiment: str = "x") -> dict:
    return config["experiments"][experiment]["settings"]


MISTAKES = {
    "main_coarser_than_low": (
        "tiling/scales/low",
        lambda c: c["tiling"].update(scales={"main": 2.0, "low": 1.0}),
    ),
    "main_as_coarse_as_low": (
        "tiling/scales/low",
        lambda c: c["tiling"].update(scales={"main": 1.0, "low": 1.0}),
    ),
    "experiment_low_finer_than_main": (
        "experiments/x/settings/scales/low",
        lambda c: (
            c["tiling"].update(scales={"main": 1.0, "low": 2.0, "fine": 0.5}),
            settings(c).update(scales={"main": "main", "low": "fine"}),
        ),
    ),
    "duplicate_classes": (
        "datasets/mine/classes",
        lambda c: c["datasets"]["mine"].update(classes=["IDC", "IDC"]),
    ),
    "empty_class_name": (
        "datasets/mine/classes/1",
        lambda c: c["datasets"]["mine"].update(classes=["IDC", ""]),
    ),
    "warmup_above_epochs_e2e": (
        "experiments/x/settings/warmup_epochs",
        lambda c: settings(c).update(warmup_epochs=5),
    ),
    "warmup_above_epochs_two_stage": (
        "experiments/ts/settings/warmup_epochs",
        lambda c: settings(c, "ts").update(epochs=2, warmup_epochs=4),
    ),
    "warmup_above_epochs_pretrain": (
        "pretrain/ssl/warmup_epochs",
        lambda c: c["pretrain"]["ssl"].update(warmup_epochs=3),
    ),
    "warmup_above_epochs_c2c": (
        "experiments/c/settings/warmup_epochs",
        lambda c: c["experiments"].update(
            c={"kind": "c2c", "settings": {"epochs": 2, "warmup_epochs": 3}}
        ),
    ),
    "warmup_above_epochs_grid_point": (
        "experiments/g__epochs-2/settings/warmup_epochs",
        lambda c: c["experiments"]["g"].update(settings={"warmup_epochs": 3}),
    ),
    "negative_scale_ratio": (
        "experiments/x/settings/scale_ratio",
        lambda c: settings(c).update(scale_ratio=-4),
    ),
    "zero_scale_ratio": (
        "experiments/x/settings/scale_ratio",
        lambda c: settings(c).update(scale_ratio=0),
    ),
    "scale_ratio_one": (
        "experiments/x/settings/scale_ratio",
        lambda c: settings(c).update(scale_ratio=1),
    ),
    "oversample_unknown_class": (
        "datasets/mine/split/oversample/ILD",
        lambda c: c["datasets"]["mine"].update(split={"oversample": {"ILD": 2.0}}),
    ),
    "oversample_zero_ratio": (
        "datasets/mine/split/oversample/ILC",
        lambda c: c["datasets"]["mine"].update(split={"oversample": {"ILC": 0}}),
    ),
    "device_cuda_without_gpu": ("config key 'device'", lambda c: c.update(device="cuda")),
    "ema_above_one": ("experiments/x/settings/ema", lambda c: settings(c).update(ema=1.5)),
    "negative_ema": ("experiments/ts/settings/ema", lambda c: settings(c, "ts").update(ema=-0.1)),
    "negative_seed": ("config key 'seed'", lambda c: c.update(seed=-1)),
    "negative_split_seed": (
        "datasets/mine/split/seed",
        lambda c: c["datasets"]["mine"].update(split={"seed": -3}),
    ),
    "negative_lesion_fraction": (
        "datasets/pre/synthetic/lesion_fraction",
        lambda c: c["datasets"]["pre"]["synthetic"].update(lesion_fraction=-0.1),
    ),
    "hue_above_360": (
        "segmentation/pen_hue_ranges_deg/0/1",
        lambda c: c.update(segmentation={"pen_hue_ranges_deg": [[70, 400]]}),
    ),
    "zero_epochs": ("experiments/x/settings/epochs", lambda c: settings(c).update(epochs=0)),
    "zero_lr": ("experiments/ts/settings/lr", lambda c: settings(c, "ts").update(lr=0)),
    "zero_patch_size": ("tiling/patch_size", lambda c: c["tiling"].update(patch_size=0)),
    "negative_scale_mpp": (
        "tiling/scales/low",
        lambda c: c["tiling"].update(scales={"main": 1.0, "low": -2.0}),
    ),
    "one_fold": ("datasets/mine/split/k", lambda c: c["datasets"]["mine"].update(split={"k": 1})),
    "zero_n_patches": (
        "experiments/x/settings/n_patches",
        lambda c: settings(c).update(n_patches=0),
    ),
}


def mistake_cases() -> list[Case]:
    return [Case(name, "config", expect, edited(edit)) for name, (expect, edit) in MISTAKES.items()]


# --- YAML faults ---------------------------------------------------------------------------
def yaml_cases() -> list[Case]:
    valid = yaml.safe_dump(BASE, sort_keys=False)
    lines = valid.splitlines(keepends=True)
    task = next(i for i, line in enumerate(lines) if line.strip() == "task: subtyping")
    with_dup_task = "".join([*lines[: task + 1], lines[task], *lines[task + 1 :]])
    experiments = next(i for i, line in enumerate(lines) if line.startswith("experiments:"))
    dup_experiment = "  ts:\n    kind: e2e\n"
    return [
        Case("duplicate_top_level_key", "yaml", "config.yaml:", config_text=valid + "seed: 5\nseed: 6\n"),
        Case("duplicate_nested_key", "yaml", f"config.yaml:{task + 2}:", config_text=with_dup_task),
        Case(
            "duplicate_experiment",
            "yaml",
            "'ts' appears twice",
            config_text="".join(
                [*lines[: experiments + 1], dup_experiment, *lines[experiments + 1 :]]
            ),
        ),
        Case("unclosed_flow_mapping", "yaml", "config.yaml:", config_text=valid + "tables: {t: {rows: [ts]\n"),
        Case("tab_indentation", "yaml", "config.yaml:", config_text=valid + "evaluation:\n\tn_boot: 100\n"),
        Case("unterminated_quote", "yaml", "config.yaml:", config_text=valid + 'seed: "12\n'),
        Case("bad_indentation", "yaml", "config.yaml:", config_text=valid + "evaluation:\n  n_boot: 10\n   seed: 1\n"),
    ]  # fmt: skip


def all_cases() -> list[Case]:
    return name_cases() + mistake_cases() + yaml_cases()


# --- running the cases through Snakemake (the script; before/after counts) ----------------
def dry_run(case: Case, folder: Path, checkout: Path) -> dict:
    """`snakemake -n` of one case on ``checkout``: caught while parsing (no job planned), and
    whether the message names what the case expects."""
    case.write(folder)
    bin_dir = Path(sys.executable).parent
    env = {
        **os.environ,
        "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
        "PYTHONPATH": str(checkout / "src"),
    }
    result = subprocess.run(
        [str(bin_dir / "snakemake"), "-n", "--snakefile", str(checkout / "Snakefile"),
         "--directory", str(folder)],
        env=env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    output = result.stdout + result.stderr
    caught = result.returncode != 0 and "Job stats" not in output
    return {
        "case": case.name,
        "group": case.group,
        "caught": caught,
        "names_key": caught and case.expect in output,
        "tail": output.strip().splitlines()[-3:] if output.strip() else [],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkout", type=Path, required=True)
    parser.add_argument("--workdir", type=Path, required=True)
    parser.add_argument("--jobs", type=int, default=4)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--only", nargs="*", help="case names (default: all)")
    args = parser.parse_args()
    cases = [case for case in all_cases() if not args.only or case.name in args.only]
    with ThreadPoolExecutor(args.jobs) as pool:
        results = list(
            pool.map(
                lambda case: dry_run(case, args.workdir / case.name, args.checkout.resolve()),
                cases,
            )
        )
    args.out.write_text(json.dumps(results, indent=1))
    for group in ("names", "config", "yaml"):
        mine = [r for r in results if r["group"] == group]
        if not mine:
            continue
        caught = sum(r["caught"] for r in mine)
        named = sum(r["names_key"] for r in mine)
        print(f"{group}: {len(mine)} cases, {caught} fail the dry run, {named} naming the key")


if __name__ == "__main__":
    main()
