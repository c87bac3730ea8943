# Config validation and shared helpers: slide tables, paths, settings, code digests.
import copy
import dataclasses
import json
import re
import shlex
import sys
from functools import cache
from pathlib import Path

import pandas as pd
from snakemake.settings.types import DeploymentMethod

from abmilx.config import (
    ConfigError,
    device_problem,
    encode_settings,
    evaluation_datasets,
    name_problem,
    naming_config_files,
    pretrain_name,
    split_bins_from,
)
from abmilx.experiments import (
    CLASSIFICATION_TASKS,
    evaluation_weights,
    pretrain_checkpoint,
    training_settings as run_training_settings,
    weights_path,
)
from abmilx.features.shards import listed_slides, shard_manifest_path
from abmilx.provenance import code_digest, config_hash, files_digest
from abmilx.report.coverage import encode as encode_coverage
from abmilx.shards import lost_files, plan_shards, shard_slides
from abmilx.sheets import given_split_columns, load_dataset_sheets
from abmilx.workflow_plan import append_to_pythonpath, plan_workflow

# Under --sdm conda the jobs run in envs/abmilx.yaml, which holds the third-party packages only:
# Snakemake copies that file alone under .snakemake/conda/, where a path in it to this checkout
# would no longer point here. The jobs import the package from the workflow's own src/ instead,
# after whatever PYTHONPATH already names (which wins, as it does for Snakemake itself).
if DeploymentMethod.CONDA in workflow.deployment_settings.deployment_method:
    append_to_pythonpath(Path(workflow.basedir) / "src")

# Schema and defaults, presets, bases and grids resolved into runs (config["experiments"] is
# replaced by them, so the rules only ever see runs), cross-key checks, declared tables and
# figures resolved to runs: mistakes fail here, naming the config file. Sheets are checked in
# slide_table.
with naming_config_files(workflow.configfiles):
    PLAN = plan_workflow(config)
    config.update(PLAN.config)
    # jobs started on other machines (a cluster's nodes) parse again: only the main one asks
    if workflow.is_main_process and (problem := device_problem(config)) is not None:
        raise ConfigError(problem)
EXPERIMENTS = PLAN.experiments
TABLE_PLANS = PLAN.tables
COVERAGE = PLAN.coverage

# Evaluation datasets get splits, runs and table columns; pretraining cohorts (task
# pretraining) only go through cohort, segmentation and tiling, for the pretrain stage.
DATASETS = evaluation_datasets(config)
ALL_DATASETS = list(config["datasets"])
SHELL_ENV = "../../envs/abmilx.yaml"
# Run kinds trained from the patch store by train_e2e (abmilx.e2e.train.PATCH_KINDS, not
# imported: that would load torch on every parse).
PATCH_KINDS = ("e2e", "c2c", "ft")


# Cheap jobs run where Snakemake runs, never as cluster jobs (profiles/slurm).


localrules:
    all,
    cohort_sheets,
    adapt_sheets,
    make_splits,
    aggregate_folds,
    combine_feature_shards,
    qc_table,
    coverage,
    tables,
    table,
    table_file,
    figure,
    figures,


for _name, _experiment in config["experiments"].items():
    if _experiment["kind"] == "two_stage" and _experiment["gpus"] > 1:
        raise ValueError(
            f"config key 'experiments/{_name}/gpus': two-stage training uses one GPU at most,"
            f" got {_experiment['gpus']}"
        )


def dataset_config(dataset):
    return config["datasets"][dataset]


def is_synthetic(dataset):
    return "synthetic" in dataset_config(dataset)


def is_adapted(dataset):
    return "adapter" in dataset_config(dataset)


@cache
def adapted(dataset):
    """What the dataset's adapter finds (slides matched to public label files), at parse time."""
    from abmilx.adapters import ADAPTERS

    adapter = dataset_config(dataset)["adapter"]
    return ADAPTERS[adapter["name"]](**adapter["options"])


def adapted_digest(wildcards):
    """Hash of what the adapter finds now: an edited label file, split file or slide folder
    changes it, so adapt_sheets reruns (its inputs are folders and tables the options name).
    """
    return config_hash(dataclasses.asdict(adapted(wildcards.dataset)))


def model_task(dataset):
    """Task kind the trainers know: classification or survival."""
    task = dataset_config(dataset)["task"]
    return "classification" if task in CLASSIFICATION_TASKS else "survival"


def synthetic_settings(dataset):
    ds = dataset_config(dataset)
    return {"task": ds["task"], "classes": ds.get("classes"), **ds["synthetic"]}


def slide_sheet_path(dataset):
    if is_synthetic(dataset) or is_adapted(dataset):
        return f"results/cohort/{dataset}/slides.csv"
    return dataset_config(dataset)["slides"]


def label_sheet_path(dataset):
    if is_synthetic(dataset) or is_adapted(dataset):
        return f"results/cohort/{dataset}/labels.csv"
    return dataset_config(dataset)["labels"]


@cache
def slide_table(dataset):
    """slide_id, case_id, path, mpp of every slide; validated before any job runs."""
    if is_synthetic(dataset):
        from abmilx.cohort import plan_from_settings

        plan = plan_from_settings(dataset, synthetic_settings(dataset))
        return pd.DataFrame(
            {
                "slide_id": plan["slide_id"],
                "case_id": plan["case_id"],
                "path": [f"results/cohort/{dataset}/slides/{f}" for f in plan["file"]],
                "mpp": plan["mpp_override"],
            }
        ).set_index("slide_id", drop=False)
    if is_adapted(dataset):
        slides = pd.DataFrame(
            adapted(dataset).slides, columns=["slide_id", "case_id", "path", "mpp"]
        )
        for slide in slides["slide_id"]:
            if (problem := name_problem(slide)) is not None:
                raise ConfigError(
                    f"config key 'datasets/{dataset}/adapter': slide id {problem}"
                )
        split = dataset_config(dataset)["split"]
        given = given_split_columns(adapted(dataset).label_columns)
        if split["scheme"] == "given" and len(given) != split["given_folds"]:
            raise ConfigError(
                f"config key 'datasets/{dataset}/split/given_folds': {split['given_folds']} "
                f"given fold(s), but the adapter gives {len(given)} "
                f"({', '.join(given) or 'no split column'})"
            )
        return slides.set_index("slide_id", drop=False)
    slides, warnings = load_dataset_sheets(dataset_config(dataset), config["strict"])
    for warning in warnings:
        print(f"[{dataset}] {warning}", file=sys.stderr)
    return slides.set_index("slide_id", drop=False)


def slide_ids(dataset):
    return list(slide_table(dataset)["slide_id"])


def mpp_text(mpp):
    """A sheet's mpp as the --mpp of a command: blank for none."""
    return "" if pd.isna(mpp) else f"{float(mpp):g}"


@cache
def slide_jobs(dataset):
    """slide_id -> what its per-slide jobs take, as ready strings: Snakemake calls every input
    and param function once per job (and inspects its signature each time), so a 10,000-slide
    cohort plans in seconds only with one cheap dictionary look-up per job and rule."""
    table = slide_table(dataset)
    blank = [""] * len(table)
    jobs = {}
    for slide, path, mpp, geojson, overrides in zip(
        table["slide_id"],
        table["path"],
        table["mpp"],
        table["geojson"] if "geojson" in table else blank,
        table["segmentation"] if "segmentation" in table else blank,
    ):
        jobs[slide] = {
            "slide_id": slide,
            "path": str(path),
            "geojson": geojson or "",
            "mpp": mpp_text(mpp),
            "overrides": overrides or "",
        }
    return jobs


# --- segmentation.smk, tiling.smk: one job per shard of a dataset's sorted slide ids ---
SHARD_FOLDERS = {
    "segmentation": "results/qc/segmentation/{dataset}",
    "tiling": "results/tiles/{dataset}/slides",
}
# Linux refuses a command argument over 128 KiB (MAX_ARG_STRLEN); the shell command is one.
SHARD_ARGUMENT_BYTES = 120_000
# What a shard job needs of each slide, by stage (the slide sheet's per-slide columns).
SHARD_JOB_KEYS = {
    "segmentation": ("slide_id", "path", "mpp", "geojson", "overrides"),
    "tiling": ("slide_id", "path", "mpp"),
}


@cache
def stage_shards(stage, dataset):
    """{shard name: its slide ids} of a per-slide stage (segmentation, tiling)."""
    return shard_slides(slide_jobs(dataset), config[stage]["slides_per_job"])


def shard_manifest(stage, dataset, shard):
    folder = SHARD_FOLDERS[stage].format(dataset=dataset)
    return f"{folder}.shards/{config[stage]['slides_per_job']}/{shard}.json"


def shard_manifests(stage, dataset):
    """The manifests of a stage's shards: what the jobs reading its per-slide files wait for."""
    return [shard_manifest(stage, dataset, s) for s in stage_shards(stage, dataset)]


def shard_members_of(wildcards, stage):
    shards = stage_shards(stage, wildcards.dataset)
    if wildcards.shard not in shards:
        raise ValueError(
            f"{wildcards.dataset} has no {stage} shard {wildcards.shard}: its"
            f" {len(slide_jobs(wildcards.dataset))} slides make shards {next(iter(shards))}"
            f" to {next(reversed(shards))} at {stage}/slides_per_job"
            f" {config[stage]['slides_per_job']}"
        )
    return shards[wildcards.shard]


def segment_shard_inputs(wildcards):
    """The shard's slide files and the tissue annotations its sheet rows name (`geojson`)."""
    jobs = slide_jobs(wildcards.dataset)
    members = shard_members_of(wildcards, "segmentation")
    return {
        "slides": [jobs[s]["path"] for s in members],
        "geojson": [jobs[s]["geojson"] for s in members if jobs[s]["geojson"]],
    }


@cache
def segmentation_shard_of(dataset):
    """slide_id -> the segmentation shard holding it (a tiling shard waits for those)."""
    return {
        slide: shard
        for shard, members in stage_shards("segmentation", dataset).items()
        for slide in members
    }


def tile_shard_inputs(wildcards):
    """The shard's slide files and the segmentation shards of its slides (their manifests)."""
    jobs = slide_jobs(wildcards.dataset)
    members = shard_members_of(wildcards, "tiling")
    of = segmentation_shard_of(wildcards.dataset)
    segmentation = dict.fromkeys(of[s] for s in members)
    return {
        "slides": [jobs[s]["path"] for s in members],
        "segmentation": [
            shard_manifest("segmentation", wildcards.dataset, shard)
            for shard in segmentation
        ],
    }


def shard_slide_jobs(stage):
    """Param: the shard's slides as the job's --slides JSON (a changed path, mpp, annotation or
    override reruns the shard, which redoes only that slide)."""
    keys = SHARD_JOB_KEYS[stage]

    def slides(wildcards):
        jobs = slide_jobs(wildcards.dataset)
        text = json.dumps(
            [
                {key: jobs[s][key] for key in keys}
                for s in shard_members_of(wildcards, stage)
            ],
            separators=(",", ":"),
        )
        if len(text.encode()) > SHARD_ARGUMENT_BYTES:
            raise ConfigError(
                f"config key '{stage}/slides_per_job': the slides of {wildcards.dataset}'s"
                f" shard {wildcards.shard} take {len(text.encode())} bytes on its command line,"
                f" over the {SHARD_ARGUMENT_BYTES} one argument may hold; lower slides_per_job"
            )
        return text

    return slides


def lost_shard_files(stage):
    """Param: the files the shard's manifest lists that are gone, so that the shard reruns and
    makes them again (Snakemake sees only the manifest). Under tiling.pack: move the stores are
    removed once packed, and not lost."""
    skip = (
        ("store",) if stage == "tiling" and config["tiling"]["pack"] == "move" else ()
    )

    def lost(wildcards):
        manifest = shard_manifest(stage, wildcards.dataset, wildcards.shard)
        return " ".join(lost_files(manifest, skip))

    return lost


def shard_resources(rule):
    """The rule's per-slide `resources` for a shard job: memory for the slides it runs at once
    (its threads), runtime for its rounds of them."""
    resources = job_resources(rule)
    stage = {"segment_tissue": "segmentation", "tile_slide": "tiling"}[rule]

    def rounds(wildcards, threads):
        slides = len(stage_shards(stage, wildcards.dataset)[wildcards.shard])
        at_once = max(1, min(threads, slides))
        return at_once, -(-slides // at_once)

    return {
        **resources,
        "mem_mb": lambda w, threads: resources["mem_mb"] * rounds(w, threads)[0],
        "runtime": lambda w, threads: resources["runtime"] * rounds(w, threads)[1],
    }


def experiments_for(dataset, kind=None):
    """Experiment names that run on ``dataset`` (optionally of one kind)."""
    names = []
    for name, experiment in config["experiments"].items():
        if kind is not None and experiment["kind"] != kind:
            continue
        if experiment["datasets"] is None or dataset in experiment["datasets"]:
            names.append(name)
    return names


def experiment_names(*kinds):
    return [n for n, e in config["experiments"].items() if e["kind"] in kinds]


def name_pattern(names):
    """Wildcard regex matching exactly the given names (never empty, never matching others)."""
    return "|".join(re.escape(n) for n in names) or "(?!x)x"


def folds(dataset):
    """Fold numbers of the split file: k per seed for kfold, one per seed for holdout,
    given_folds for given."""
    split = dataset_config(dataset)["split"]
    if split["scheme"] == "given":
        return list(range(split["given_folds"]))
    seeds = len(split["repeats"] or [None])
    return list(range(seeds * (split["k"] if split["scheme"] == "kfold" else 1)))


def training_settings(wildcards):
    """The experiment's settings plus what the dataset decides (task, classes, seed)."""
    experiment = config["experiments"][wildcards.experiment]
    return json.dumps(
        run_training_settings(config, experiment, wildcards.dataset), sort_keys=True
    )


def run_outputs(dataset):
    return expand(
        "results/runs/{dataset}/{experiment}/metrics.json",
        dataset=dataset,
        experiment=experiments_for(dataset),
    )


# --- pretrained stand-in weights (pretrain.smk): `pretrain:<name>` -> its checkpoint ---
def weights_inputs(weights):
    """The checkpoint a job waits for (the DAG edge to pretrain_encoder), or none."""
    name = pretrain_name(weights)
    return [] if name is None else [pretrain_checkpoint(name)]


def weights_digest(weights):
    """Content digest of a user's checkpoint file (a param of the rules): Snakemake reruns the job when
    the file is replaced in place. A `pretrain:<name>` checkpoint is a tracked input instead.
    """
    if weights is None or pretrain_name(weights) is not None:
        return ""
    return files_digest([weights])[str(weights)]


def e2e_weights_digest(wildcards):
    settings = config["experiments"][wildcards.experiment]["settings"]
    return weights_digest(settings.get("encoder_weights"))


def feature_set_weights_digest(wildcards):
    return weights_digest(config["feature_sets"][wildcards.feature_set]["weights"])


def pretrain_settings(name):
    """pretrain() keywords of a run: its config entry (less the dataset), seed and device."""
    run = {k: v for k, v in config["pretrain"][name].items() if k != "dataset"}
    if run["seed"] is None:
        run["seed"] = config["seed"]
    return {**run, "device": config["device"]}


def e2e_weights_inputs(wildcards):
    settings = config["experiments"][wildcards.experiment]["settings"]
    return weights_inputs(settings.get("encoder_weights"))


def feature_set_weights_inputs(wildcards):
    return weights_inputs(config["feature_sets"][wildcards.feature_set]["weights"])


# --- features.smk: one folder of <slide_id>.pt per feature set, listed by its manifest ---
def features_dir(dataset, feature_set):
    return f"results/features/{dataset}/{feature_set}"


def feature_settings(wildcards):
    """extract() keywords of a feature set: its config entry, the weights file, seed, device."""
    feature_set = config["feature_sets"][wildcards.feature_set]
    return json.dumps(
        {
            **encode_settings(feature_set),
            "weights": weights_path(feature_set["weights"]),
            "seed": config["seed"],
            "device": config["device"],
        },
        sort_keys=True,
    )


@cache
def feature_shards(dataset):
    """{name: (first slide id, last)} of the dataset's feature shards: its sorted slide ids in
    runs of features/slides_per_job (abmilx.features.shards)."""
    shards = plan_shards(slide_jobs(dataset), config["features"]["slides_per_job"])
    return {shard.name: (shard.first, shard.last) for shard in shards}


def feature_shard_manifests(wildcards):
    out_dir = features_dir(wildcards.dataset, wildcards.feature_set)
    size = config["features"]["slides_per_job"]
    return [
        str(shard_manifest_path(out_dir, size, name))
        for name in feature_shards(wildcards.dataset)
    ]


def feature_shard_first(wildcards):
    return feature_shards(wildcards.dataset)[wildcards.shard][0]


def feature_shard_last(wildcards):
    return feature_shards(wildcards.dataset)[wildcards.shard][1]


def feature_manifest(dataset, feature_set):
    """What the jobs that read a feature set wait for: an encoded set's manifest
    (extract_features), an imported set's folder (import_h5_features)."""
    folder = features_dir(dataset, feature_set)
    if config["feature_sets"][feature_set]["source"] == "h5":
        return folder
    return f"{folder}.manifest.json"


def lost_feature_files(dataset):
    """Slide files that a feature set's manifest lists and that are gone: requested by `all`,
    so rebuild_feature_file encodes them again (the same bytes: the jobs that read the
    set need not rerun). A deleted file inside a folder would otherwise go unnoticed."""
    lost = []
    for feature_set in feature_set_names("encode"):
        manifest = Path(feature_manifest(dataset, feature_set))
        if manifest.is_file():
            folder = features_dir(dataset, feature_set)
            lost += [f"{folder}/{slide}.pt" for slide in listed_slides(manifest)]
    return [path for path in lost if not Path(path).is_file()]


def run_model_files(dataset):
    """Every fold's model.pt: requested by `all`, so a deleted one is rebuilt, where as an
    intermediate behind up-to-date metrics Snakemake would leave it missing."""
    return expand(
        "results/runs/{dataset}/{experiment}/fold{fold}/model.pt",
        dataset=dataset,
        experiment=experiments_for(dataset),
        fold=folds(dataset),
    )


# --- used by splits.smk ---
def split_settings(dataset):
    ds = dataset_config(dataset)
    split = dict(ds["split"])
    if split["seed"] is None:
        split["seed"] = config["seed"]
    split["bins_from"] = split_bins_from(split["bins_from"], config["protocol"])
    return {**split, "classes": ds.get("classes"), "strict": config["strict"]}


# --- used by features.smk ---
def feature_set_names(source):
    """Feature sets the workflow encodes (source encode) or imports (source h5)."""
    return [n for n, fs in config["feature_sets"].items() if fs["source"] == source]


def feature_set_weights(name):
    """What a feature set's encoder ran with, as the run's metrics record it: its weights, or
    the folder of imported HDF5 features."""
    feature_set = config["feature_sets"].get(name or "", {})
    if feature_set.get("source") == "h5":
        return f"h5:{feature_set['h5_dir']}"
    return feature_set.get("weights")


def h5_feature_files(wildcards):
    """The HDF5 files of the dataset's slides that exist (a changed file reruns the import;
    the job names the missing ones of the slides that pass QC)."""
    feature_set = config["feature_sets"][wildcards.feature_set]
    folders = [feature_set["h5_dir"], feature_set["h5_coords_dir"]]
    names = [
        feature_set["h5_pattern"].format(slide_id=s)
        for s in slide_ids(wildcards.dataset)
    ]
    paths = [Path(folder) / name for folder in folders if folder for name in names]
    return [str(path) for path in paths if path.is_file()]


def h5_import_settings(wildcards):
    feature_set = config["feature_sets"][wildcards.feature_set]
    keys = ("h5_dir", "h5_pattern", "h5_coords_dir", "scale", "encoder")
    settings = {key: feature_set[key] for key in keys}
    settings.update(
        mpp=config["tiling"]["scales"][feature_set["scale"]],
        patch_size=config["tiling"]["patch_size"],
    )
    return json.dumps(settings, sort_keys=True)


# --- used by evaluation.smk ---
def evaluation_inputs(wildcards):
    experiment = config["experiments"][wildcards.experiment]
    inputs = {
        "model": "results/runs/{dataset}/{experiment}/fold{fold}/model.pt".format(
            **wildcards
        ),
        "splits": f"results/splits/{wildcards.dataset}.csv",
    }
    if experiment["kind"] in PATCH_KINDS:
        inputs["store"] = f"results/tiles/{wildcards.dataset}/patches.lmdb"
    else:
        inputs["features"] = feature_manifest(wildcards.dataset, experiment["features"])
    return inputs


def evaluation_source(wildcards, input):
    """Arguments naming what a fold is evaluated on, each quoted (the rule's shell command
    takes them as they are)."""
    kind = config["experiments"][wildcards.experiment]["kind"]
    if "store" in input.keys():
        return f"--kind {shlex.quote(kind)} --store {shlex.quote(input.store)}"
    features = features_dir(
        wildcards.dataset, config["experiments"][wildcards.experiment]["features"]
    )
    return f"--kind {shlex.quote(kind)} --features-dir {shlex.quote(features)}"


def evaluation_settings(wildcards):
    experiment = config["experiments"][wildcards.experiment]
    settings = {
        **config["evaluation"],
        "model_weights": evaluation_weights(config, experiment),
        "dataset": wildcards.dataset,
        "device": config["device"],
        "experiment": wildcards.experiment,
        "config_hash": config_hash(
            {"experiment": experiment, "dataset": dataset_config(wildcards.dataset)}
        ),
        "encoder_weights": experiment["settings"].get("encoder_weights")
        or feature_set_weights(experiment["features"]),
    }
    return json.dumps(settings, sort_keys=True)


# --- used by report.smk ---
def table_inputs(wildcards):
    """metrics.json of every (run, dataset) cell of a table, and the folds' attention.npz of the
    runs in its sparsity columns."""
    plan = TABLE_PLANS[wildcards.table]
    metrics, attention = [], []
    # a derived row ("Best of ...") reads the runs it picks from
    members = [m for row in plan["rows"] for m in row.get("best_of", [row])]
    for row in members:
        for column in plan["columns"]:
            dataset = column["dataset"]
            if row["run"] is None or dataset not in (row["datasets"] or DATASETS):
                continue
            run = f"results/runs/{dataset}/{row['run']}"
            metrics.append(f"{run}/metrics.json")
            if column["metric"] == "sparsity":
                attention += [f"{run}/fold{k}/attention.npz" for k in folds(dataset)]
    return {
        "metrics": list(dict.fromkeys(metrics)),
        "attention": list(dict.fromkeys(attention)),
    }


def declared_table_folders():
    """Every declared table's cache folder, and the coverage ledger's."""
    return expand("results/.tables/{table}", table=[*TABLE_PLANS, "coverage"])


def table_settings():
    return json.dumps(
        {
            "datasets": {d: dataset_config(d)["task"] for d in DATASETS},
            "experiments": {
                name: {"title": e["title"] or name, "kind": e["kind"]}
                for name, e in config["experiments"].items()
            },
        },
        sort_keys=True,
    )


# --- used by figures.smk ---
FIGURES = PLAN.figures
FIGURE_CACHE = "results/.figures"


def figures_of(kind):
    return [name for name, plan in FIGURES.items() if plan["kind"] == kind]


def figure_folders(names):
    return [f"{FIGURE_CACHE}/{name}" for name in names]


def run_dir(dataset, run):
    return f"results/runs/{dataset}/{run['run']}"


def slide_inputs(dataset):
    """Slide sheet, tiling QC records (slide mpp) and lesions: the dataset's annotation folder
    (and PANDA's providers CSV) when it has one, else a generated cohort's truth masks.
    """
    inputs = {
        "sheet": slide_sheet_path(dataset),
        "qc": shard_manifests("tiling", dataset),
    }
    annotations = dataset_config(dataset).get("annotations")
    if annotations:
        folders = annotations["dir"]
        inputs["annotations"] = [folders] if isinstance(folders, str) else list(folders)
        if annotations["providers"]:
            inputs["annotations"].append(annotations["providers"])
    elif is_synthetic(dataset):
        inputs["truth"] = [
            f"results/cohort/{dataset}/truth/{Path(path).name}.npz"
            for path in slide_table(dataset)["path"]
        ]
    return inputs


def umap_feature_sets(plan):
    """The feature sets of a umap_features figure (one name or a list); none for other kinds."""
    names = plan.get("features") or []
    return [names] if isinstance(names, str) else names


def figure_inputs(wildcards):
    plan = FIGURES[wildcards.name]
    kind = plan["kind"]
    if kind == "performance_vs_cost":
        return {
            "metrics": [
                f"{run_dir(panel['dataset'], run)}/metrics.json"
                for panel in plan["panels"]
                for run in panel["runs"]
            ]
        }
    dataset = plan["dataset"]
    runs = [run_dir(dataset, run) for run in plan["runs"]]
    if kind == "km_curves":
        return {"predictions": [f"{run}/predictions.csv" for run in runs]}
    if kind == "sparsity_vs_features":
        return {
            "metrics": [f"{run}/metrics.json" for run in runs],
            "attention": [
                f"{run}/fold{k}/attention.npz" for run in runs for k in folds(dataset)
            ],
        }
    inputs = slide_inputs(dataset)
    if kind == "attention_heatmaps":
        inputs["attention"] = [f"{run}/fold0/attention.npz" for run in runs]
        inputs["predictions"] = [f"{run}/fold0/predictions.csv" for run in runs]
    elif (
        kind == "attention_dynamics"
    ):  # snapshots are written beside model.pt by its job
        inputs["model"] = [f"{run}/fold0/model.pt" for run in runs]
    else:  # umap_features
        inputs["model"] = [f"{run}/fold0/model.pt" for run in runs]
        inputs["store"] = f"results/tiles/{dataset}/patches.lmdb"
        inputs["features"] = [
            feature_manifest(dataset, name) for name in umap_feature_sets(plan)
        ]
        inputs["splits"] = f"results/splits/{dataset}.csv"
    return inputs


def figure_settings(wildcards):
    """The figure's plan with the paths its command reads (see figure_inputs)."""
    plan = dict(copy.deepcopy(FIGURES[wildcards.name]), name=wildcards.name)
    if plan["kind"] == "performance_vs_cost":
        for panel in plan["panels"]:
            for run in panel["runs"]:
                run["dir"] = run_dir(panel["dataset"], run)
        return json.dumps(plan, sort_keys=True)
    dataset = plan["dataset"]
    for run in plan["runs"]:
        run["dir"] = run_dir(dataset, run)
    plan.update(
        slide_sheet=slide_sheet_path(dataset),
        qc_dir=f"results/tiles/{dataset}/slides",
        truth_dir=f"results/cohort/{dataset}/truth" if is_synthetic(dataset) else None,
        patch_size=config["tiling"]["patch_size"],
        main_mpp=config["tiling"]["scales"]["main"],
        store=f"results/tiles/{dataset}/patches.lmdb",
        splits=f"results/splits/{dataset}.csv",
        features_dirs=[
            f"results/features/{dataset}/{name}" for name in umap_feature_sets(plan)
        ],
        annotations=dataset_config(dataset).get("annotations"),
        seed=config["seed"],
        device=config["device"],
    )
    return json.dumps(plan, sort_keys=True)


# --- cluster resources (config key `resources`; profiles/slurm submits with them) ---
def job_resources(rule):
    """The rule's `resources` entry as Snakemake resources; null keys are left to the profile."""
    names = {"gpus": "gpu"}
    return {
        names.get(key, key): value
        for key, value in config["resources"][rule].items()
        if value is not None and key != "threads"
    }


def job_threads(rule):
    """The rule's `resources/<rule>/threads` (Snakemake scales it down to --cores)."""
    return config["resources"][rule]["threads"]


def training_gpus(wildcards):
    return config["experiments"][wildcards.experiment]["gpus"]


def training_launcher(wildcards):
    """`torchrun` with one process per GPU (DDP on one node) when the experiment has several."""
    gpus = training_gpus(wildcards)
    if gpus <= 1:
        return "python"
    return f"torchrun --standalone --nproc-per-node {gpus}"
