"""Load the workflow config, validate it against the JSON schema (filling defaults) and check
what the schema cannot express, so that every mistake fails while Snakemake parses.

The schema (``abmilx/schemas/config.schema.yaml``, shipped inside the package) is the single
source of defaults and of the description of every key; ``models.schema.yaml`` next to it types the registered models' options
and is generated from their constructors (:func:`write_models_schema`). The Snakefile validates,
resolves the experiments (abmilx.experiments) and runs :func:`check_config` while it parses.
"""

from __future__ import annotations

import ast
import copy
import difflib
import inspect
import math
import re
import subprocess
import sys
import textwrap
import types
import typing
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema
import yaml

REPO_ROOT = Path(__file__).resolve().parents[2]
"""The checkout holding the package when it runs from one (tests, the workflow); an installed
package needs only its own files (the schemas ship inside it)."""
SCHEMA_DIR = Path(__file__).resolve().parent / "schemas"
SCHEMA_PATH = SCHEMA_DIR / "config.schema.yaml"
MODELS_SCHEMA_PATH = SCHEMA_DIR / "models.schema.yaml"
WEIGHTS_KEYWORDS = ("imagenet", "random", "hub")
"""Weights that are not files; any other value is the path of a local checkpoint."""
ENCODER_FAMILIES = ("timm:", "hf-hub:")
"""Encoder names built from timm or the Hugging Face hub (abmilx.models.encoders.hub)."""
PRETRAIN_PREFIX = "pretrain:"
"""``pretrain:<name>`` names the checkpoint of the config's pretrain run <name> (built first)."""
PRETRAINING_TASK = "pretraining"


NAME_RULE = (
    "a name starts with a letter or digit and holds only letters, digits, '.', '_', '+' and "
    "'-', never '..' (names become file names and Snakemake wildcards)"
)


class ConfigError(ValueError):
    """The config is invalid; the message names each offending key path and what is allowed."""


def _with_defaults(validator_class):
    """Extend a validator so that validating an instance fills in schema defaults."""
    validate_properties = validator_class.VALIDATORS["properties"]

    def set_defaults(validator, properties, instance, schema):
        if isinstance(instance, dict):
            for name, subschema in properties.items():
                if "default" in subschema and name not in instance:
                    instance[name] = copy.deepcopy(subschema["default"])
        yield from validate_properties(validator, properties, instance, schema)

    return jsonschema.validators.extend(validator_class, {"properties": set_defaults})


DefaultFillingValidator = _with_defaults(jsonschema.Draft202012Validator)
# libyaml's safe loader when PyYAML has it: the same documents, ~10x faster than pure Python
# (the schema is read by every training and evaluation process).
YAML_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


@cache
def _name_pattern() -> re.Pattern:
    return re.compile(cached_schema()["$defs"]["name"]["pattern"])


def name_problem(name: str) -> str | None:
    """Why ``name`` cannot be a dataset, experiment, slide id or any other name that becomes a
    path or a wildcard (the schema's ``$defs/name``), else None."""
    if _name_pattern().search(name):
        return None
    return f"{name!r} is not allowed: {NAME_RULE}"


class _StrictLoader(YAML_LOADER):
    """YAML loader that rejects a key given twice in one mapping (PyYAML keeps the last)."""

    def construct_mapping(self, node, deep=False):
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            line = key_node.start_mark.line + 1
            if isinstance(key, typing.Hashable) and key in seen:
                raise yaml.constructor.ConstructorError(
                    None,
                    None,
                    f"key {key!r} appears twice in one mapping (first on line {seen[key]}); "
                    "YAML would silently keep the later value",
                    key_node.start_mark,
                )
            seen.setdefault(key, line)
        return super().construct_mapping(node, deep=deep)


def read_yaml(path: str | Path) -> Any:
    """A YAML file's content; a syntax error or a key given twice raises ConfigError naming
    file, line and column."""
    try:
        with open(path, encoding="utf-8") as handle:
            return yaml.load(handle, Loader=_StrictLoader)
    except yaml.MarkedYAMLError as error:
        mark = error.problem_mark or error.context_mark
        where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark else str(path)
        what = "; ".join(part for part in (error.context, error.problem) if part)
        raise ConfigError(f"{where}: invalid YAML: {what}") from None
    except yaml.YAMLError as error:
        raise ConfigError(f"{path}: invalid YAML: {error}") from None


def load_schema(path: str | Path = SCHEMA_PATH) -> dict[str, Any]:
    """The config schema, with the generated per-model definitions (models.schema.yaml)."""
    with open(path) as handle:
        schema = yaml.load(handle, Loader=YAML_LOADER)
    if Path(path) == SCHEMA_PATH:
        with open(MODELS_SCHEMA_PATH) as handle:
            schema["$defs"].update(yaml.load(handle, Loader=YAML_LOADER)["$defs"])
        registry = sys.modules.get("abmilx.models.registry")
        if registry is not None:  # a process with the models: names registered at run time too
            for name, listed in (
                ("mil_name", registry.list_mils),
                ("encoder_name", registry.list_encoders),
            ):
                enum = schema["$defs"][name]["enum"]
                schema["$defs"][name]["enum"] = sorted(set(enum) | set(listed()))
    return schema


def _where(error: jsonschema.ValidationError) -> str:
    """The key path of an error; a rejected name is named as the key it would be."""
    parts = [str(part) for part in error.absolute_path]
    if "propertyNames" in error.absolute_schema_path:
        parts.append(str(error.instance))
    return "/".join(parts) or "<top level>"


def _describe(error: jsonschema.ValidationError) -> str:
    """jsonschema's message, the naming rule for a rejected name, the allowed keys when a key
    is unknown and what each alternative wanted when a value fits none (an encoder name)."""
    if "propertyNames" in error.absolute_schema_path:
        if error.validator == "not":
            return f"name {error.instance!r} contains '__', which separates a grid's points"
        return f"name {error.instance!r} is not allowed: {NAME_RULE}"
    if error.validator == "anyOf" and error.context:
        wanted = "; ".join(dict.fromkeys(e.message for e in error.context if e.validator != "type"))
        return f"{error.instance!r} is none of the allowed forms: {wanted}"
    if error.validator != "additionalProperties" or "properties" not in error.schema:
        return error.message
    known = sorted(error.schema["properties"])
    unknown = sorted(set(error.instance) - set(known))
    owner = f" of {error.schema['title']}" if "title" in error.schema else ""
    names = ", ".join(_with_guess(name, known) for name in unknown)
    return f"unknown option(s){owner}: {names} (allowed: {', '.join(known) or 'none'})"


def _with_guess(name: str, known: list[str]) -> str:
    """An unknown key, with the allowed key it most likely misspells (a typo is the usual cause)."""
    close = difflib.get_close_matches(str(name), known, n=1)
    return f"{name!r} (did you mean {close[0]!r}?)" if close else repr(name)


def validate_config(config: Mapping[str, Any], schema: Mapping | None = None) -> dict[str, Any]:
    """Return a validated deep copy of ``config`` with every default filled in."""
    schema = load_schema() if schema is None else schema
    instance = copy.deepcopy(dict(config))
    validator = DefaultFillingValidator(schema)
    # The first pass fills defaults; the second sees them, so conditions on a defaulted key
    # (mil_kwargs against the default mil) hold whatever the keyword order in the schema.
    errors = list(validator.iter_errors(instance)) or list(validator.iter_errors(instance))
    errors.sort(key=lambda e: e.path)
    if errors:
        lines = []
        for error in errors:
            lines.append(f"  config key '{_where(error)}': {_describe(error)}")
        raise ConfigError("invalid config:\n" + "\n".join(lines))
    return instance


def cached_schema() -> dict[str, Any]:
    """:func:`load_schema`, read once per process and set of registered model names (stage
    functions take their defaults from it): a model registered after the first read, such as a
    plug-in's encoder, is a valid name from then on."""
    registry = sys.modules.get("abmilx.models.registry")
    names = (
        None if registry is None else (tuple(registry.list_mils()), tuple(registry.list_encoders()))
    )
    return _schema_for_names(names)


@cache
def _schema_for_names(names: tuple[tuple[str, ...], tuple[str, ...]] | None) -> dict[str, Any]:
    return load_schema()


def top_level_default(key: str) -> Any:
    """The schema's default of a top-level config key (``seed``, ``device``, ...)."""
    return cached_schema()["properties"][key]["default"]


BINS_FROM_OF_PROTOCOL = {"clean": "train", "official": "all"}
"""Survival bins of a dataset whose split leaves `bins_from` null, by the config's protocol: the
official code's bins come from all cases (datasets/data_utils.py survival_label)."""


def split_bins_from(bins_from: str | None, protocol: str) -> str:
    """A split's `bins_from`: its own, else the one of the config's `protocol`."""
    return BINS_FROM_OF_PROTOCOL[protocol] if bins_from is None else bins_from


def validate_settings(definition: str, settings: Mapping[str, Any]) -> dict[str, Any]:
    """A copy of ``settings`` checked against ``$defs/<definition>``, every default filled."""
    schema = cached_schema()
    wrapper = {"$defs": schema["$defs"], "$ref": f"#/$defs/{definition}"}
    instance = copy.deepcopy(dict(settings))
    errors = sorted(DefaultFillingValidator(wrapper).iter_errors(instance), key=lambda e: e.path)
    if errors:
        lines = [
            f"  settings key '{'/'.join(map(str, e.absolute_path)) or '<top level>'}': {e.message}"
            for e in errors
        ]
        raise ConfigError(f"invalid {definition}:\n" + "\n".join(lines))
    return instance


def schema_defaults(definition: str) -> dict[str, Any]:
    """Every default of ``$defs/<definition>``, nested defaults filled (e.g. callbacks)."""
    return validate_settings(definition, {})


@contextmanager
def naming_config_files(files: Iterable[str | Path]) -> Iterator[None]:
    """ConfigErrors raised inside name the config files, so that the message says what to edit."""
    try:
        yield
    except ConfigError as error:
        names = ", ".join(str(file) for file in files)
        raise ConfigError(f"{names}: {error}" if names else str(error)) from None


def load_config(path: str | Path) -> dict[str, Any]:
    """Read a YAML config file and validate it (experiments as written, not yet resolved)."""
    raw = read_yaml(path) or {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: a config is a mapping of keys, not a {type(raw).__name__}")
    with naming_config_files([path]):
        return validate_config(raw)


def _one_of(names: Iterable[str]) -> str:
    return ", ".join(sorted(names)) or "none"


H5_IMPORT_KEYS = ("source", "h5_dir", "h5_pattern", "h5_coords_dir")
"""Feature-set keys of HDF5 imports (abmilx.features.h5), which encoding does not take."""


def encode_settings(feature_set: Mapping[str, Any]) -> dict[str, Any]:
    """A feature set's keys that abmilx.features.extract takes (all but the import keys)."""
    return {k: v for k, v in feature_set.items() if k not in H5_IMPORT_KEYS}


def pretrain_name(weights: Any) -> str | None:
    """The pretrain run a weights value names (``pretrain:<name>``), else None."""
    if isinstance(weights, str) and weights.startswith(PRETRAIN_PREFIX):
        return weights.removeprefix(PRETRAIN_PREFIX)
    return None


def evaluation_datasets(config: Mapping[str, Any]) -> list[str]:
    """Datasets that get splits, runs and table columns (all but the pretraining cohorts)."""
    return [n for n, d in config["datasets"].items() if d["task"] != PRETRAINING_TASK]


def _weights_problem(value: Any, encoder: str | None, config: Mapping) -> str | None:
    """Why a weights value is unusable: a path to a file that does not exist, or a pretrain run
    that is not in the config or pretrains another encoder."""
    if (name := pretrain_name(value)) is not None:
        runs = config.get("pretrain") or {}
        if name not in runs:
            return f"no pretrain run {name!r} (pretrain has: {_one_of(runs)})"
        if encoder is not None and runs[name]["encoder"] != encoder:
            return (
                f"pretrain run {name!r} pretrains {runs[name]['encoder']}, not the encoder "
                f"{encoder} that would load it"
            )
        return None
    if value == "imagenet" and str(encoder).startswith(ENCODER_FAMILIES):
        return (
            f"imagenet names torchvision's weights; the {encoder.split(':')[0]} encoder "
            f"{encoder} takes hub (its pretrained weights from the Hugging Face cache), random "
            "or the path of a checkpoint or downloaded repository folder"
        )
    if not isinstance(value, str) or value in WEIGHTS_KEYWORDS:
        return None
    if Path(value).exists() or config.get("missing_weights") == "unavailable":
        return None  # a checkpoint or hub repository folder; unavailable: runs left out
    return (
        f"weights file '{value}' does not exist (resolved to {Path(value).resolve()}); "
        f"give {', '.join(WEIGHTS_KEYWORDS)} or the path of a local checkpoint"
    )


WEIGHTS_LABELS = {
    "uni": "UNI",
    "chief": "CHIEF",
    "gigapath": "Prov-GigaPath",
    "chief_aggregator": "CHIEF slide aggregator",
    "gigapath_slide": "Prov-GigaPath slide encoder",
}


def _missing_file(value: Any) -> bool:
    return (
        isinstance(value, str)
        and value not in WEIGHTS_KEYWORDS
        and pretrain_name(value) is None
        and not Path(value).is_file()
    )


def _not_found(model: str, path: str) -> str:
    return (
        f"{WEIGHTS_LABELS.get(model, model)} weights not found at {path}; give a local path "
        "(or hub, for a model on the Hugging Face hub)"
    )


def unavailable_for_weights(
    config: Mapping[str, Any], experiments: Mapping[str, Mapping[str, Any]]
) -> tuple[dict[str, str], dict[str, str]]:
    """Feature sets and resolved experiments left out for weights files that do not exist, each
    with the reason (``missing_weights: unavailable``; with ``error`` none are, check_config
    reports them). An experiment is out when its feature set is, or its own weights are missing."""
    if config["missing_weights"] != "unavailable":
        return {}, {}
    feature_sets = {
        name: _not_found(feature_set["encoder"], feature_set["weights"])
        for name, feature_set in config["feature_sets"].items()
        if _missing_file(feature_set["weights"])
    }
    out = {}
    for name, experiment in experiments.items():
        settings = experiment["settings"]
        if experiment.get("features") in feature_sets:
            out[name] = feature_sets[experiment["features"]]
        elif _missing_file(settings.get("encoder_weights")):
            out[name] = _not_found(settings.get("encoder", ""), settings["encoder_weights"])
        else:
            for option, value in (settings.get("mil_kwargs") or {}).items():
                if option.endswith("weights") and _missing_file(value):
                    out[name] = _not_found(settings["mil"], value)
                    break
    return feature_sets, out


def _experiment_problems(name: str, experiment: Mapping, config: Mapping) -> Iterator[str]:
    key = f"experiments/{name}"
    settings = experiment["settings"]
    weights = {"encoder_weights": settings.get("encoder_weights")}
    weights.update(
        (f"mil_kwargs/{option}", value)
        for option, value in settings.get("mil_kwargs", {}).items()
        if option.endswith("weights")
    )
    for option, value in weights.items():
        encoder = settings.get("encoder") if option == "encoder_weights" else None
        if (problem := _weights_problem(value, encoder, config)) is not None:
            yield f"config key '{key}/settings/{option}': {problem}"
    if experiment["kind"] == "e2e":
        yield from _scale_problems(key, settings, config["tiling"]["scales"])
    yield from _warmup_problems(f"{key}/settings", settings)
    for dataset in experiment["datasets"] or []:
        if config["datasets"].get(dataset, {}).get("task") == PRETRAINING_TASK:
            yield (
                f"config key '{key}/datasets': {dataset} is a pretraining cohort (unlabelled); "
                f"experiments run on: {_one_of(evaluation_datasets(config))}"
            )


def _warmup_problems(key: str, settings: Mapping) -> Iterator[str]:
    """A warm-up longer than the training never reaches the peak learning rate."""
    warmup, epochs = settings.get("warmup_epochs"), settings.get("epochs")
    if warmup is not None and epochs is not None and warmup > epochs:
        yield (
            f"config key '{key}/warmup_epochs': {warmup} warm-up epochs exceed the {epochs} "
            "training epochs (the learning rate would never reach its peak)"
        )


def _scale_problems(key: str, settings: Mapping, tiled: Mapping) -> Iterator[str]:
    """E2E sampling needs its main scale, and its low scale, coarser than the main one, unless
    scale_ratio is null."""
    scales = settings["scales"]
    have = _one_of(tiled)
    if scales["main"] not in tiled:
        yield (
            f"config key '{key}/settings/scales/main': scale '{scales['main']}' is not tiled "
            f"(tiling/scales has: {have})"
        )
    if settings["scale_ratio"] is None:
        return
    if scales["low"] not in tiled:
        yield (
            f"config key '{key}/settings/scale_ratio': scale_ratio {settings['scale_ratio']} "
            f"samples the low scale '{scales['low']}', which is not tiled (tiling/scales has: "
            f"{have}); tile it, name a tiled scale in settings/scales/low, or set "
            "scale_ratio: null"
        )
    elif scales["main"] in tiled and tiled[scales["low"]] <= tiled[scales["main"]]:
        yield (
            f"config key '{key}/settings/scales/low': the low scale '{scales['low']}' "
            f"({tiled[scales['low']]:g} µm/px) must be coarser than the main scale "
            f"'{scales['main']}' ({tiled[scales['main']]:g} µm/px)"
        )


def _pretrain_problems(config: Mapping[str, Any]) -> Iterator[str]:
    """A pretrain run trains on a tiled pretraining cohort, never on an evaluation dataset."""
    for name, run in (config.get("pretrain") or {}).items():
        dataset = config["datasets"].get(run["dataset"])
        if dataset is None or dataset["task"] != PRETRAINING_TASK:
            cohorts = [n for n, d in config["datasets"].items() if d["task"] == PRETRAINING_TASK]
            yield (
                f"config key 'pretrain/{name}/dataset': {run['dataset']!r} is not a dataset with "
                f"task {PRETRAINING_TASK} (pretraining cohorts: {_one_of(cohorts)})"
            )
        yield from _warmup_problems(f"pretrain/{name}", run)
        if run["scale"] not in config["tiling"]["scales"]:
            yield (
                f"config key 'pretrain/{name}/scale': scale '{run['scale']}' is not tiled "
                f"(tiling/scales has: {_one_of(config['tiling']['scales'])})"
            )
    for name, table in (config.get("tables") or {}).items():
        for dataset in table.get("datasets") or []:
            if config["datasets"].get(dataset, {}).get("task") == PRETRAINING_TASK:
                yield (
                    f"config key 'tables/{name}/datasets': {dataset} is a pretraining cohort, "
                    "it has no results"
                )


def _oversample_problems(name: str, dataset: Mapping) -> Iterator[str]:
    """Oversampling names classes of a classification dataset (checked by the split job too,
    against the labels, when the config lists no classes)."""
    oversample = dataset["split"]["oversample"] or {}
    if oversample and dataset["task"] == "survival":
        yield (
            f"config key 'datasets/{name}/split/oversample': survival has no classes to oversample"
        )
    elif dataset.get("classes") is not None:
        for label in oversample:
            if label not in dataset["classes"]:
                yield (
                    f"config key 'datasets/{name}/split/oversample/{label}': {label!r} is not "
                    f"a class of {name} (classes: {', '.join(dataset['classes'])})"
                )


def _given_folds_problems(name: str, dataset: Mapping) -> Iterator[str]:
    """given_folds belongs to the given scheme, and matches the fold files an adapter lists."""
    split = dataset["split"]
    if split["scheme"] != "given":
        if split["given_folds"] != 1:
            yield (
                f"config key 'datasets/{name}/split/given_folds': applies to scheme given, "
                f"not {split['scheme']}"
            )
        return
    fold_files = ((dataset.get("adapter") or {}).get("options") or {}).get("fold_files")
    if isinstance(fold_files, list) and len(fold_files) != split["given_folds"]:
        yield (
            f"config key 'datasets/{name}/split/given_folds': {split['given_folds']} given "
            f"fold(s), but the adapter's fold_files lists {len(fold_files)}"
        )


def _tiling_problems(tiling: Mapping) -> Iterator[str]:
    scales = tiling["scales"]
    if "low" in scales and scales["low"] <= scales["main"]:
        yield (
            f"config key 'tiling/scales/low': low ({scales['low']:g} µm/px) must be coarser "
            f"than main ({scales['main']:g} µm/px): µm/px grows as magnification falls"
        )


def _problems(config: Mapping[str, Any]) -> Iterator[str]:
    yield from _tiling_problems(config["tiling"])
    yield from _pretrain_problems(config)
    for name in evaluation_datasets(config):
        yield from _oversample_problems(name, config["datasets"][name])
        split = config["datasets"][name]["split"]
        total = sum(split["ratios"])
        if split["scheme"] == "holdout" and not math.isclose(total, 1.0, abs_tol=1e-6):
            yield (
                f"config key 'datasets/{name}/split/ratios': train, validation and test "
                f"fractions {split['ratios']} sum to {total:g}, not 1"
            )
        yield from _given_folds_problems(name, config["datasets"][name])
    tiled = config["tiling"]["scales"]
    for name, feature_set in config["feature_sets"].items():
        if feature_set["scale"] not in tiled:
            yield (
                f"config key 'feature_sets/{name}/scale': scale '{feature_set['scale']}' is not "
                f"tiled (tiling/scales has: {_one_of(tiled)})"
            )
        if feature_set["source"] == "h5":
            for key in ("h5_dir", "h5_coords_dir"):
                folder = feature_set[key]
                if folder is not None and not Path(folder).is_dir():
                    yield (
                        f"config key 'feature_sets/{name}/{key}': folder '{folder}' does not "
                        f"exist (resolved to {Path(folder).resolve()})"
                    )
            continue
        problem = _weights_problem(feature_set["weights"], feature_set["encoder"], config)
        if problem is not None:
            yield f"config key 'feature_sets/{name}/weights': {problem}"
    for name, experiment in config["experiments"].items():
        yield from _experiment_problems(name, experiment, config)
    for name, dataset in config["datasets"].items():
        if dataset.get("annotations"):
            yield from _annotation_problems(name, dataset)


def _slides_present(dataset: Mapping) -> bool:
    """Whether a real cohort's slides are here (its sheet or its adapter's slide folder)."""
    if dataset.get("slides"):
        return Path(dataset["slides"]).exists()
    slide_dir = ((dataset.get("adapter") or {}).get("options") or {}).get("slide_dir")
    return slide_dir is not None and Path(slide_dir).exists()


def _annotation_problems(name: str, dataset: Mapping) -> Iterator[str]:
    """An annotation pattern without {slide_id}, PANDA masks without their providers, and
    (once the slides are here, so a config of absent data still parses) missing files."""
    where = f"config key 'datasets/{name}/annotations"
    spec = dataset["annotations"]
    if spec["pattern"] is not None and "{slide_id}" not in spec["pattern"]:
        yield f"{where}/pattern': {spec['pattern']!r} must contain {{slide_id}}"
    if spec["format"] == "panda_mask" and not spec["providers"]:
        yield (
            f"{where}/providers': panda_mask needs PANDA's train.csv (image_id, data_provider): "
            "the provider says which mask values are cancer"
        )
    if _slides_present(dataset):
        folders = [spec["dir"]] if isinstance(spec["dir"], str) else spec["dir"]
        for key, path in [("dir", folder) for folder in folders] + [
            ("providers", spec["providers"])
        ]:
            if path and not Path(path).exists():
                yield f"{where}/{key}': {path} not found"


def check_config(config: dict[str, Any]) -> dict[str, Any]:
    """Checks the schema cannot express: scales that must be tiled (low coarser than main),
    weights files and HDF5 feature folders that must exist, `pretrain:<name>` weights naming a
    run of the same encoder, pretrain runs on a pretraining cohort (which no experiment or table
    uses), split ratios that sum to 1, oversampled classes that exist, warm-ups no longer than
    the training, annotation folders that exist. (Experiments' datasets and feature sets are
    checked by abmilx.experiments while it resolves them, figures' references by
    abmilx.report.figures.plan.)

    ``config`` is validated, its ``experiments`` resolved into runs (kind, datasets, features and
    settings with defaults). Returns it; raises ConfigError listing every problem, each naming
    its key and the allowed values.
    """
    problems = list(_problems(config))
    if problems:
        raise ConfigError("invalid config:\n" + "\n".join(f"  {p}" for p in problems))
    return config


def device_problem(config: Mapping[str, Any]) -> str | None:
    """Why ``device: cuda`` cannot run here, else None. Asked only of a config that wants CUDA,
    in a child process: the answer is the jobs' own (``torch.cuda.is_available()``, which a
    driver file alone cannot tell for a CPU-only torch build), and parsing never imports torch."""
    if config["device"] != "cuda":
        return None
    probe = "import sys, torch; sys.exit(0 if torch.cuda.is_available() else 3)"
    result = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=False
    )
    if result.returncode == 0:
        return None
    reason = "no CUDA device is visible" if result.returncode == 3 else result.stderr.strip()
    return (
        f"config key 'device': cuda, but torch cannot use CUDA on this machine ({reason}); "
        "set device: auto (CUDA where a GPU is visible, else CPU) or cpu"
    )


# --- per-model options, generated from the registries into abmilx/schemas/models.schema.yaml


def _json_type(annotation: Any) -> list[str] | None:
    """JSON-schema types of a constructor annotation (None: anything)."""
    simple = {bool: "boolean", int: "integer", float: "number", str: "string", Path: "string"}
    simple[type(None)] = "null"
    if annotation in simple:
        return [simple[annotation]]
    origin = typing.get_origin(annotation)
    if origin in (tuple, list):
        return ["array"]
    if origin in (typing.Union, types.UnionType):
        parts = [_json_type(arg) for arg in typing.get_args(annotation)]
        if any(part is None for part in parts):
            return None
        return sorted({t for part in parts for t in part})
    return None


def _factory_keywords(factory: Callable) -> tuple[set[str], dict[str, Any]]:
    """What a registered factory passes itself: fixed keywords (`gated=True`, callers cannot
    set them) and overridable defaults (`**{"attn_type": "ca", **options}`)."""
    fixed: set[str] = set()
    defaults: dict[str, Any] = {}
    for node in ast.walk(ast.parse(textwrap.dedent(inspect.getsource(factory)))):
        if not isinstance(node, ast.Call):
            continue
        for keyword in node.keywords:
            if keyword.arg is not None:
                fixed.add(keyword.arg)
            elif isinstance(keyword.value, ast.Dict):
                for key, value in zip(keyword.value.keys, keyword.value.values, strict=True):
                    if isinstance(key, ast.Constant) and isinstance(value, ast.Constant):
                        defaults[key.value] = value.value
    return fixed, defaults


def _mil_options_schema(name: str, factory: Callable) -> dict:
    """Object schema of the keyword options a registered MIL model accepts (its constructor's
    keywords except the data-given in_dim and n_classes), typed and described."""
    signature = inspect.signature(factory, eval_str=True)
    parameters = dict(signature.parameters)
    if any(p.kind is p.VAR_KEYWORD for p in parameters.values()):
        target = signature.return_annotation
        parameters.update(inspect.signature(target, eval_str=True).parameters)
        source = f"{target.__name__}.__init__"
        fixed, defaults = _factory_keywords(factory)
    else:
        source, fixed, defaults = factory.__name__, set(), {}
    properties = {}
    for option, parameter in parameters.items():
        if (
            option in ("self", "in_dim", "n_classes")
            or option in fixed
            or parameter.kind in (parameter.VAR_KEYWORD, parameter.VAR_POSITIONAL)
        ):
            continue
        if option in defaults:
            default = f"default {defaults[option]!r} (factory {factory.__name__})"
        else:
            default = f"default {parameter.default!r} ({source})"
        described = {"description": default}
        json_type = _json_type(parameter.annotation)
        if json_type is not None:
            described = {"type": json_type[0] if len(json_type) == 1 else json_type, **described}
        properties[option] = described
    return {
        "title": f"MIL model '{name}'",
        "type": "object",
        "additionalProperties": False,
        "properties": properties,
    }


def models_schema() -> dict[str, Any]:
    """Schema definitions generated from abmilx.models: the registered MIL and encoder names,
    and per MIL model the options its constructor takes (`mil_kwargs`)."""
    from abmilx.models import registry

    mils = registry.list_mils()
    defs: dict[str, Any] = {
        "mil_name": {"type": "string", "enum": mils},
        "encoder_name": {"type": "string", "enum": registry.list_encoders()},
        "mil_options": {
            "description": "mil_kwargs checked against the chosen MIL model's options.",
            "allOf": [
                {
                    "if": {"properties": {"mil": {"const": name}}, "required": ["mil"]},
                    "then": {"properties": {"mil_kwargs": {"$ref": f"#/$defs/mil_{name}"}}},
                }
                for name in mils
            ],
        },
    }
    for name in mils:
        defs[f"mil_{name}"] = _mil_options_schema(name, registry.mil_factory(name))
    return {"$defs": defs}


def write_models_schema(path: str | Path = MODELS_SCHEMA_PATH) -> None:
    header = (
        "# Generated from the model registries by `python -m abmilx.config models-schema`; "
        "do not edit.\n# Merged into config.schema.yaml's $defs by abmilx.config.load_schema.\n"
    )
    text = yaml.safe_dump(models_schema(), sort_keys=False, width=100, default_flow_style=None)
    Path(path).write_text(header + text)


if __name__ == "__main__":
    if sys.argv[1:] != ["models-schema"]:
        sys.exit("usage: python -m abmilx.config models-schema")
    write_models_schema()
    print(f"wrote {MODELS_SCHEMA_PATH}")
