"""Experiments from the config: presets, bases and grids resolved into runs.

A config experiment may start from a registered **preset** (the paper's settings, by name, like
timm's model variants) or from another experiment (**base**), override part of it, and declare a
**grid** of dotted setting paths to value lists that expands into one experiment per point::

    experiments:
      abmilx_brca: {preset: abmilx_e2e_r18_subtyping}
      heads:
        base: abmilx_brca
        grid: {settings.mil_kwargs.n_heads: [1, 2, 4, 8]}   # heads__n_heads-1 ... heads__n_heads-8

A run's identity is the hash of its effective settings (kind, feature set, training settings), not
its name: experiments with equal settings are one run (``heads__n_heads-8`` above is
``abmilx_brca``), so a row shared by several tables trains once. Overrides merge into the
inherited settings key by key. When ``mil`` changes, the new aggregator receives the old one's
shared MIL settings (activation, input norm, bias, width, dropout) under its own option names, as
the official code hands them to every aggregator; the other options stay behind, and the resolved
experiment lists both (``mil_handover``). An empty ``title`` and a null ``datasets`` or
``features`` inherit.
"""

from __future__ import annotations

import copy
import itertools
import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from abmilx.config import (
    ConfigError,
    DefaultFillingValidator,
    cached_schema,
    load_schema,
    name_problem,
    pretrain_name,
)
from abmilx.provenance import config_hash

# Keys of a resolved experiment: what the rules read, and what the run's provenance hashes.
# Keys a config's experiment may give (besides preset, base and grid).
SPEC_KEYS = ("kind", "title", "datasets", "features", "settings", "gpus")
# + what resolution adds: which MIL settings were handed to a changed aggregator, and which not.
EXPERIMENT_KEYS = (*SPEC_KEYS, "mil_handover")
# What makes two experiments the same run (title and datasets only label and place it; the
# number of DDP processes changes BatchNorm statistics, so it is part of the run).
IDENTITY_KEYS = ("kind", "features", "settings", "gpus")
GRID_SEPARATOR = "__"
GRID_PATH_ROOTS = ("settings", "features", "datasets")

_PRESETS: dict[str, Callable[[], dict[str, Any]]] = {}
PROTOCOLS = ("clean", "official")


def register_preset(factory: Callable[[], dict[str, Any]]):
    """Register ``factory() -> experiment dict`` under its function name."""
    if factory.__name__ in _PRESETS:
        raise ValueError(f"preset {factory.__name__!r} is already registered")
    _PRESETS[factory.__name__] = factory
    return factory


def list_presets() -> list[str]:
    return sorted(_PRESETS)


def get_preset(name: str, protocol: str = "clean") -> dict[str, Any]:
    """A fresh copy of a preset's experiment (kind, title, settings) under `protocol`: under
    official its settings take the official configuration's own choices (``official``)."""
    if name not in _PRESETS:
        raise KeyError(f"unknown preset {name!r}; available: {', '.join(list_presets())}")
    if protocol not in PROTOCOLS:
        raise KeyError(f"unknown protocol {protocol!r}; known: {', '.join(PROTOCOLS)}")
    preset = _PRESETS[name]()
    official = preset.pop("official", {})
    if protocol == "official":
        kind_overlay = OFFICIAL_KIND_SETTINGS.get(preset["kind"], {})
        preset["settings"] = _merge(_merge(preset["settings"], kind_overlay), official)
    preset["settings"]["protocol"] = protocol
    return preset


@dataclass(frozen=True)
class ExperimentSet:
    """Every named experiment, the runs they share, and the grids they came from.

    ``experiments``: name -> resolved experiment (EXPERIMENT_KEYS), grid points included, in
    config order. ``run_of``: name -> the run that computes it. ``runs``: run name -> experiment,
    its datasets the union of those of every experiment it stands for. ``grids``: grid
    experiment -> its axes (dotted paths) and points (name and value per axis).
    """

    experiments: dict[str, dict[str, Any]]
    run_of: dict[str, str]
    runs: dict[str, dict[str, Any]]
    grids: dict[str, dict[str, Any]]


# Dataset tasks the trainers treat as classification (the others are survival).
CLASSIFICATION_TASKS = ("subtyping", "grading", "diagnosis")


def pretrain_checkpoint(name: str) -> str:
    """The encoder checkpoint that `pretrain:<name>` weights load (written by pretrain.smk)."""
    return f"results/pretrain/{name}/encoder.pt"


def weights_path(weights: str) -> str:
    """What an encoder loads: the checkpoint file of `pretrain:<name>`, else the value."""
    name = pretrain_name(weights)
    return weights if name is None else pretrain_checkpoint(name)


def training_settings(config: Mapping[str, Any], run: Mapping[str, Any], dataset: str) -> dict:
    """The settings a run's training job gets on a dataset (its `--settings`): the run's
    settings plus what the dataset and the config decide (task, classes, seed, device)."""
    settings = copy.deepcopy(dict(run["settings"]))
    if "encoder_weights" in settings:
        settings["encoder_weights"] = weights_path(settings["encoder_weights"])
    spec = config["datasets"][dataset]
    settings.update(
        task="classification" if spec["task"] in CLASSIFICATION_TASKS else "survival",
        classes=spec.get("classes"),
        seed=config["seed"],
        device=config["device"],
    )
    return settings


def evaluation_weights(config: Mapping[str, Any], run: Mapping[str, Any]) -> str:
    """The weights a run's evaluation tests: the config's choice, else both (model and EMA
    teacher, as the official code) under protocol official and main under clean."""
    chosen = (config.get("evaluation") or {}).get("model_weights")
    if chosen:
        return chosen
    return "both" if run["settings"].get("protocol") == "official" else "main"


def run_identity(experiment: Mapping[str, Any]) -> str:
    """Hash of what a run computes; equal for experiments that differ only in title or datasets."""
    return config_hash({key: experiment.get(key) for key in IDENTITY_KEYS})


def resolve_experiments(config: Mapping[str, Any]) -> ExperimentSet:
    """Expand presets, bases and grids of a validated config's ``experiments`` into runs."""
    raw = config.get("experiments") or {}
    schema = load_schema()
    resolved: dict[str, dict[str, Any]] = {}
    grids: dict[str, dict[str, Any]] = {}
    explicit: set[str] = set()
    resolver = _Resolver(raw, schema, config.get("protocol", PROTOCOLS[0]))
    for name, spec in raw.items():
        base = resolver.effective(name)
        grid = spec.get("grid") or {}
        if not grid:
            resolved[name] = base
            explicit.add(name)
            continue
        axes = list(grid)
        labels = _axis_labels(axes)
        points = []
        for values in itertools.product(*(grid[axis] for axis in axes)):
            point = dict(zip(axes, values, strict=True))
            words = [f"{labels[axis]}-{_value_label(value)}" for axis, value in point.items()]
            point_name = GRID_SEPARATOR.join([name, *words])
            if (problem := name_problem(point_name)) is not None:
                raise ConfigError(f"config key 'experiments/{name}/grid': grid point {problem}")
            if point_name in resolved:
                raise ConfigError(
                    f"config key 'experiments/{name}/grid': two grid points are both named "
                    f"{point_name!r}; make the values distinguishable"
                )
            experiment = copy.deepcopy(base)
            for axis, value in point.items():
                _set_path(experiment, axis, copy.deepcopy(value), name, schema)
            values_text = ", ".join(
                f"{labels[axis]}={_value_label(value)}" for axis, value in point.items()
            )
            experiment["title"] = f"{base['title'] or name} ({values_text})"
            resolved[point_name] = _validated(experiment, schema, f"{name}/grid ({point_name})")
            points.append({"name": point_name, "values": point})
        grids[name] = {"axes": axes, "labels": labels, "points": points}

    for name, experiment in resolved.items():
        _check_references(name, experiment, config)
    by_identity: dict[str, list[str]] = {}
    for name, experiment in resolved.items():
        by_identity.setdefault(run_identity(experiment), []).append(name)
    run_of, runs = {}, {}
    for names in by_identity.values():
        canonical = next((n for n in names if n in explicit), names[0])
        run = copy.deepcopy(resolved[canonical])
        run["datasets"] = _union_datasets(resolved[n]["datasets"] for n in names)
        runs[canonical] = run
        run_of.update(dict.fromkeys(names, canonical))
    runs = {name: runs[name] for name in resolved if name in runs}
    return ExperimentSet(experiments=resolved, run_of=run_of, runs=runs, grids=grids)


class _Resolver:
    """Effective (inherited, validated, defaulted) experiment of each config entry.

    An experiment's protocol is its own, else the one a child asked of it, else its base's,
    else the config's; a child that names a protocol resolves its whole chain under it, so that
    a preset's official settings come before every override of the chain.
    """

    def __init__(self, raw: Mapping[str, Any], schema: Mapping[str, Any], protocol: str):
        self.raw = raw
        self.schema = schema
        self.protocol = protocol
        self.done: dict[tuple[str, str | None], dict[str, Any]] = {}
        self.active: list[str] = []

    def effective(self, name: str, asked: str | None = None) -> dict[str, Any]:
        key = (name, asked)
        if key in self.done:
            return copy.deepcopy(self.done[key])
        if name in self.active:
            cycle = " -> ".join([*self.active, name])
            raise ConfigError(f"config key 'experiments/{name}/base': circular bases: {cycle}")
        self.active.append(name)
        spec = self.raw[name]
        chosen = asked or spec.get("protocol")
        if spec.get("preset") and spec.get("base"):
            raise ConfigError(f"config key 'experiments/{name}': give a base or a preset, not both")
        if spec.get("preset"):
            try:
                parent = get_preset(spec["preset"], chosen or self.protocol)
            except KeyError as error:
                raise ConfigError(
                    f"config key 'experiments/{name}/preset': {error.args[0]}"
                ) from None
        elif spec.get("base"):
            if spec["base"] not in self.raw:
                raise ConfigError(
                    f"config key 'experiments/{name}/base': no experiment {spec['base']!r}; "
                    f"known: {', '.join(self.raw)}"
                )
            parent = self.effective(spec["base"], chosen)
        else:
            parent = None
        own = {key: copy.deepcopy(spec[key]) for key in SPEC_KEYS if key in spec}
        if parent is not None and "protocol" in (own.get("settings") or {}):
            raise ConfigError(
                f"config key 'experiments/{name}/settings/protocol': set the experiment's "
                "protocol (experiments/<name>/protocol), which also applies a preset's "
                "official settings"
            )
        if parent is None:
            experiment = own
            protocol = chosen or self.protocol
            if protocol == "official":
                overlay = OFFICIAL_KIND_SETTINGS.get(own.get("kind"), {})
                own["settings"] = _merge(copy.deepcopy(overlay), own.get("settings") or {})
        else:
            experiment = _inherit(parent, own)
            protocol = parent["settings"]["protocol"]
        experiment.setdefault("settings", {})["protocol"] = protocol
        self.done[key] = _validated(experiment, self.schema, name)
        self.active.pop()
        return copy.deepcopy(self.done[key])


def _check_references(name: str, experiment: Mapping[str, Any], config: Mapping) -> None:
    """Datasets and feature sets an experiment names must exist (else it would silently not run)."""
    unknown = set(experiment["datasets"] or []) - set(config["datasets"])
    if unknown:
        raise ConfigError(
            f"config key 'experiments/{name}/datasets': no dataset {sorted(unknown)}; "
            f"known: {', '.join(config['datasets'])}"
        )
    features = experiment["features"]
    if features is not None and features not in (config.get("feature_sets") or {}):
        raise ConfigError(
            f"config key 'experiments/{name}/features': no feature set {features!r}; "
            f"known: {', '.join(config.get('feature_sets') or {}) or 'none'}"
        )


def _inherit(parent: dict[str, Any], own: dict[str, Any]) -> dict[str, Any]:
    """``own`` over ``parent``: settings merged key by key, empty title / null lists inherited."""
    child = copy.deepcopy(parent)
    for key in ("kind", "title", "datasets", "features", "gpus"):
        if own.get(key) not in (None, ""):
            child[key] = own[key]
    settings = own.get("settings") or {}
    old_mil = child["settings"].get("mil")
    if "mil" in settings and settings["mil"] != old_mil:
        old_options = child["settings"].pop("mil_kwargs", None) or {}
        handed, left = hand_over_mil_settings(old_options, settings["mil"])
        child["settings"]["mil_kwargs"] = handed
        child["mil_handover"] = {
            "from": old_mil,
            "to": settings["mil"],
            "handed": handed,
            "left": left,
        }
    child["settings"] = _merge(child["settings"], settings)
    return child


# The MIL settings the official code gives every aggregator alike (`get_mil_model_params` in
# modules/utils.py of github.com/DearCaat/E2E-WSI-ABMILX, used by `build_mil` in
# modules/__init__.py): activation, input norm, bias, inner dimension and dropout. Each is
# handed on under the new model's own option name (ABMILX says inner_dim, the others hidden_dim).
SHARED_MIL_SETTINGS = {
    "act": ("act",),
    "mil_norm": ("mil_norm",),
    "mil_bias": ("mil_bias",),
    "inner_dim": ("inner_dim", "hidden_dim"),
    "hidden_dim": ("inner_dim", "hidden_dim"),
    "dropout": ("dropout",),
}


def hand_over_mil_settings(
    options: Mapping[str, Any], mil: str
) -> tuple[dict[str, Any], dict[str, Any]]:
    """The old model's shared MIL settings under `mil`'s option names, and the options left
    behind: the old model's own options and the shared ones that `mil` does not have."""
    accepted = set(cached_schema()["$defs"][f"mil_{mil}"].get("properties") or {})
    handed: dict[str, Any] = {}
    left: dict[str, Any] = {}
    for key, value in options.items():
        names = [name for name in SHARED_MIL_SETTINGS.get(key, ()) if name in accepted]
        if names:
            handed[names[0]] = copy.deepcopy(value)
        else:
            left[key] = copy.deepcopy(value)
    return handed, left


def _merge(base: dict[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in override.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), Mapping):
            merged[key] = _merge(dict(merged[key]), value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def _validated(experiment: dict[str, Any], schema: Mapping[str, Any], where: str) -> dict:
    """Validate against the experiment schema, fill defaults, keep only EXPERIMENT_KEYS."""
    instance = {key: experiment[key] for key in SPEC_KEYS if key in experiment}
    validator = DefaultFillingValidator({"$defs": schema["$defs"], "$ref": "#/$defs/experiment"})
    errors = sorted(validator.iter_errors(instance), key=lambda e: list(e.absolute_path))
    if errors:
        lines = [
            f"  config key 'experiments/{where}/"
            + "/".join(str(p) for p in error.absolute_path)
            + f"': {error.message}"
            for error in errors
        ]
        raise ConfigError("invalid experiment:\n" + "\n".join(lines))
    if instance["kind"] == "two_stage" and not instance["features"]:
        raise ConfigError(
            f"config key 'experiments/{where}/features': two_stage needs a feature set"
        )
    settings = instance["settings"]
    if settings.get("sampling") == "attention" and settings.get("ema") is None:
        raise ConfigError(
            f"config key 'experiments/{where}/settings/ema': sampling 'attention' scores the "
            "patches with the EMA teacher, so ema must be a decay (e.g. 0.9997), not null"
        )
    return {
        **{key: instance[key] for key in SPEC_KEYS},
        "mil_handover": experiment.get("mil_handover"),
    }


def _set_path(experiment: dict, path: str, value: Any, name: str, schema: Mapping) -> None:
    """Set a dotted path of a grid; unknown paths fail naming the grid key."""
    where = f"config key 'experiments/{name}/grid/{path}'"
    parts = path.split(".")
    if parts[0] not in GRID_PATH_ROOTS or (parts[0] != "settings" and len(parts) > 1):
        raise ConfigError(
            f"{where}: a grid sets settings.<key>[.<key>...], features or datasets; "
            f"{path!r} is none of them"
        )
    known = _known_keys(experiment, parts, schema)
    if known is not None and parts[-1] not in known:
        raise ConfigError(
            f"{where}: unknown key {parts[-1]!r} under {'.'.join(parts[:-1])!r}; "
            f"known: {', '.join(sorted(known))}"
        )
    node = experiment
    for part in parts[:-1]:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise ConfigError(f"{where}: {part!r} is not a mapping")
    node[parts[-1]] = value


def _known_keys(experiment: dict, parts: list[str], schema: Mapping) -> set[str] | None:
    """Keys allowed at the grid path's last level; None where any key is allowed."""
    if parts[0] != "settings":
        return None
    if len(parts) == 1:
        return {"settings"}
    node = schema["$defs"][f"{experiment['kind']}_settings"]
    for part in parts[1:-1]:
        node = (node.get("properties") or {}).get(part, {})
        if part == "mil_kwargs" and len(parts) == 3:
            return _mil_options(experiment["settings"]["mil"], schema)
    return set(node.get("properties") or {}) if "properties" in node else None


def _mil_options(mil: str, schema: Mapping) -> set[str] | None:
    """Keyword options of a MIL model, from the schema generated from the registry
    (``$defs/mil_<name>``), so that resolving a grid never imports torch; None for a model
    registered at run time, whose options the schema does not know."""
    options = schema["$defs"].get(f"mil_{mil}")
    return None if options is None else set(options["properties"])


def _axis_labels(axes: list[str]) -> dict[str, str]:
    """Short label of each axis: its last key, or the whole path where that is ambiguous."""
    last = [axis.rsplit(".", 1)[-1] for axis in axes]
    return {
        axis: short if last.count(short) == 1 else axis.replace(".", "-")
        for axis, short in zip(axes, last, strict=True)
    }


def _value_label(value: Any) -> str:
    """A grid value as a file-name- and wildcard-safe word (1e-05, true, none, ...)."""
    if value is None:
        return "none"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, int | float):
        return str(value)  # digits, '.', '-', 'e', '+' (and inf, nan)
    if isinstance(value, str):
        text = value
    else:
        text = json.dumps(value, sort_keys=True, separators=(",", ":"))
    return re.sub(r"[^A-Za-z0-9.+]+", "-", text).strip("-") or "empty"


def _union_datasets(lists) -> list[str] | None:
    union: list[str] = []
    for datasets in lists:
        if datasets is None:
            return None
        union += [d for d in datasets if d not in union]
    return union


# --- Presets: the paper's settings by name (the official configs, docs/paper.md) ---------
# Each E2E preset is one config of config/e2e/ in github.com/DearCaat/E2E-WSI-ABMILX, each
# two-stage preset one of config/feat/ (with options.py's defaults for what a config leaves out).
# The official configs also set the encoder's ImageNet weights, AMP, channels_last and sync BN,
# which are the e2e_settings defaults. `batch_size` is the official GLOBAL batch: the README runs
# train_dist.sh on 2 GPUs, so a step sees twice the config's per-GPU batch_size.
# `official` holds what only the official protocol does (docs/protocol.md): the per-GPU batch
# (accumulated to the global one on fewer processes), early stopping (`patient`, `max_epoch`),
# and model selection, on the test set where the official config sets val2test or val_ratio 0.

# What every official E2E config states for the MIL (act, mil_norm, no_mil_bias, abx_attn_plus;
# dropout is options.py's default), handed on to any aggregator that replaces ABMILX.
_ABMILX_E2E_KWARGS = {
    "attn_plus": True,
    "mil_norm": "ln",
    "mil_bias": False,
    "act": "gelu",
    "dropout": 0.25,
}
OFFICIAL_GPUS = 2

# Official choices of every official E2E config, whatever the preset: the torchaug pipeline's
# img_trans_chunk 4 (one crop box per chunk of the step's patches) and TurboJPEG's BGR decode
# fed with RGB ImageNet statistics (datasets/dataset_img.py).
OFFICIAL_KIND_SETTINGS: dict[str, dict[str, Any]] = {
    "e2e": {"aug_chunks": 4, "channel_order": "bgr"},
}


def _abmilx_e2e(
    encoder: str,
    mil_kwargs: dict[str, Any],
    *,
    official: dict[str, Any],
    gpu_batch: int,
    **settings: Any,
) -> dict[str, Any]:
    short = {"resnet18_layer3": "R18", "resnet50_layer3": "R50"}[encoder]
    return {
        "kind": "e2e",
        "title": f"ABMILX + MRIS (E2E, {short})",
        "settings": {
            "encoder": encoder,
            "encoder_weights": "imagenet",
            "mil": "abmilx",
            "mil_kwargs": {**mil_kwargs, **_ABMILX_E2E_KWARGS},
            "batch_size": gpu_batch * OFFICIAL_GPUS,
            **settings,
        },
        "official": {"micro_batch_size": gpu_batch, **official},
    }


def _stopping(patience: int, max_epoch: int, selection: str) -> dict[str, Any]:
    """Official early stopping (`patient`, `max_epoch`) and the set it watches."""
    return {
        "early_stopping": {"patience": patience, "after_epoch": max_epoch},
        "selection": selection,
    }


# Shared by the official subtyping configs (r18/r50_brca_subtyping) and grading configs
# (r18/r50_panda); each preset adds what its encoder's config sets differently.
_SUBTYPING = {
    "warmup_epochs": 10,
    "lr": 0.00008,
    "weight_decay": 0.0,
    "optimizer": "adamw",
    "patch_batch_size": 512,
    "ema": 0.9997,
    "num_workers": 6,
}
_GRADING = {
    "epochs": 200,
    "warmup_epochs": 0,
    "lr": 0.0002,
    "n_patches": 128,
    "scale_ratio": 4,
    "crop_scale": 0.08,
    "flips": True,
    "patch_batch_size": 2048,
    "ema": 0.9999,
    "selection": "val",
    "num_workers": 8,
}


@register_preset
def abmilx_e2e_r18_subtyping() -> dict[str, Any]:
    """Official r18_brca_subtyping: 8 heads of 32 dims, AdamW 8e-5, 75 epochs, 512 patches."""
    return _abmilx_e2e(
        "resnet18_layer3",
        {"n_heads": 8, "inner_dim": 256},
        **_SUBTYPING,
        epochs=75,
        gpu_batch=3,
        n_patches=512,
        scale_ratio=4,
        crop_scale=0.25,
        official=_stopping(10, 50, "test_official"),
    )


@register_preset
def abmilx_e2e_r50_subtyping() -> dict[str, Any]:
    """Official r50_brca_subtyping: 125 epochs, 128 patches at 1:3, a shift of up to 100/256
    before the crop (its weak_strong augmentation)."""
    return _abmilx_e2e(
        "resnet50_layer3",
        {"n_heads": 8, "inner_dim": 256},
        **_SUBTYPING,
        epochs=125,
        gpu_batch=4,
        n_patches=128,
        scale_ratio=3,
        crop_scale=0.08,
        shift=100 / 256,
        official=_stopping(10, 125, "test_official"),
    )


@register_preset
def abmilx_e2e_r18_grading() -> dict[str, Any]:
    """Official r18_panda: 4 heads, FFN, Adam 2e-4 with L2 1e-5, 200 epochs, flips, EMA 0.9999."""
    return _abmilx_e2e(
        "resnet18_layer3",
        {"n_heads": 4, "inner_dim": 512, "ffn": True},
        **_GRADING,
        weight_decay=0.00001,
        optimizer="adam",
        gpu_batch=8,
        official=_stopping(20, 120, "val"),
    )


@register_preset
def abmilx_e2e_r50_grading() -> dict[str, Any]:
    """Official r50_panda: as r18_panda but inner 256, AdamW with weight decay 1e-2, batch 4."""
    return _abmilx_e2e(
        "resnet50_layer3",
        {"n_heads": 4, "inner_dim": 256, "ffn": True},
        **_GRADING,
        weight_decay=0.01,
        optimizer="adamw",
        gpu_batch=4,
        official=_stopping(20, 200, "val"),
    )


@register_preset
def abmilx_e2e_r18_survival() -> dict[str, Any]:
    """Official r18_brca_survival: attention bias, AdamW wd 0.05, 30 epochs, 768 patches, 1:10."""
    return _abmilx_e2e(
        "resnet18_layer3",
        {"n_heads": 8, "inner_dim": 256, "attn_bias": True},
        epochs=30,
        warmup_epochs=5,
        lr=0.00008,
        weight_decay=0.05,
        optimizer="adamw",
        gpu_batch=2,
        n_patches=768,
        scale_ratio=10,
        crop_scale=0.08,
        patch_batch_size=2048,
        num_workers=6,
        official={**_stopping(10, 20, "test_official"), "fold_seed_step": 100},
    )


def _two_stage(mil: str, title: str, official: dict[str, Any], **settings: Any) -> dict:
    """Two-stage MIL on full bags (AdamW, lr 2e-4, cosine, no warm-up: the defaults)."""
    return {
        "kind": "two_stage",
        "title": title,
        "settings": {"mil": mil, **settings},
        "official": official,
    }


# The official `abmil` is the plain (ungated) ABMIL of modules/abmil.py (DAttention).
_PLAIN_ABMIL = {"mil": "abmil", "mil_kwargs": {}}


@register_preset
def abmil_two_stage_subtyping() -> dict[str, Any]:
    """ABMIL in its gated form (the paper's "+0.66M" parameters), 75 epochs (fm_subtyping)."""
    official = {**_PLAIN_ABMIL, **_stopping(20, 75, "test_official")}
    return _two_stage("gated_abmil", "ABMIL (two-stage)", official, epochs=75)


@register_preset
def abmil_two_stage_grading() -> dict[str, Any]:
    """Gated ABMIL, the official PANDA feature config: 200 epochs, best validation epoch."""
    official = {**_PLAIN_ABMIL, **_stopping(20, 100, "val")}
    return _two_stage("gated_abmil", "ABMIL (two-stage)", official, epochs=200, selection="val")


@register_preset
def abmil_two_stage_survival() -> dict[str, Any]:
    """Gated ABMIL, the official survival feature config: 30 epochs, GELU."""
    official = {
        "mil": "abmil",
        "mil_kwargs": {"act": "gelu"},
        **_stopping(10, 30, "test_official"),
        "fold_seed_step": 100,
    }
    return _two_stage(
        "gated_abmil", "ABMIL (two-stage)", official, epochs=30, mil_kwargs={"act": "gelu"}
    )


@register_preset
def abmilx_two_stage_subtyping() -> dict[str, Any]:
    """ABMILX as the official README's two-stage snippet: 8 heads, inner 512, biases (0.80 M)."""
    return _two_stage(
        "abmilx",
        "ABMILX (two-stage)",
        _stopping(20, 75, "test_official"),
        mil_kwargs={"n_heads": 8, "inner_dim": 512, "mil_bias": True, "attn_bias": True},
        epochs=75,
    )
