"""The config's ``figures:`` block resolved at parse time: each figure's kind, dataset(s) and runs.

Experiments are named as in the config (grid points too) and mapped to the run that computes
them (:class:`abmilx.experiments.ExperimentSet`); a reference that cannot work (an unknown name,
a dataset the experiment does not run on, a survival figure on a classification dataset, attention
dynamics without snapshots) fails here, naming the config key. The rules add the file paths.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from abmilx.report.figures import KINDS
from abmilx.report.tables import HEADLINE_METRIC

# Kinds whose runs have a trained patch encoder in model.pt (abmilx.e2e.patch_kinds.PATCH_KINDS).
ENCODER_KINDS = ("e2e", "c2c", "ft")


def plan_figures(
    figures: Mapping[str, Mapping],
    experiments,
    datasets: Mapping[str, str],
    feature_sets,
    unavailable: Mapping[str, str] | None = None,
) -> dict[str, dict[str, Any]]:
    """{figure name: plan} for the validated ``figures`` block; ``datasets`` maps name to task.

    ``unavailable`` maps experiments and feature sets that cannot run here (a foundation model's
    weights not given) to the reason: a list of experiments or feature sets drops them, and the
    plan's ``left_out`` carries the reasons for the caption, so such a column or panel appears
    once its input is there.
    """
    unavailable = unavailable or {}
    plans = {}
    for name, spec in figures.items():
        where = f"config key 'figures/{name}"
        kind = spec["kind"]
        if kind not in KINDS:  # the schema lists the same kinds; this guards a stale schema
            raise ValueError(f"{where}/kind': unknown kind {kind!r}; kinds: {', '.join(KINDS)}")
        plan = {key: value for key, value in spec.items() if key not in ("experiment", "dataset")}
        names = spec.get("experiments") or ([spec["experiment"]] if "experiment" in spec else [])
        key = "experiments" if "experiments" in spec else "experiment"
        features = spec.get("features") or []
        features = [features] if isinstance(features, str) else list(features)
        plan["left_out"] = {n: unavailable[n] for n in [*names, *features] if n in unavailable}
        names = [n for n in names if n not in unavailable]
        if kind == "umap_features":
            plan["features"] = [n for n in features if n not in unavailable]
            if not plan["features"]:
                raise ValueError(
                    f"{where}/features': every feature set is unavailable: "
                    + "; ".join(f"{n}: {r}" for n, r in plan["left_out"].items())
                )
        if kind != "performance_vs_cost" and not names:
            raise ValueError(
                f"{where}/{key}': every experiment is unavailable: "
                + "; ".join(f"{n}: {r}" for n, r in plan["left_out"].items())
            )
        runs = [_run(where, key, experiment, experiments) for experiment in names]
        if kind == "performance_vs_cost":
            chosen = None if spec["experiments"] is None else names
            plan["panels"] = _cost_panels(
                where, {**spec, "experiments": chosen}, experiments, datasets
            )
        else:
            dataset = _dataset(where, spec.get("dataset"), runs, datasets)
            plan["dataset"] = dataset
            plan["task"] = datasets[dataset]
        plan["runs"] = runs
        if kind == "umap_features":
            if runs[0]["kind"] not in ENCODER_KINDS:
                raise ValueError(
                    f"{where}/experiment': {runs[0]['experiment']!r} is a {runs[0]['kind']} run; "
                    f"the figure needs a trained patch encoder ({', '.join(ENCODER_KINDS)})"
                )
            for feature_set in plan["features"]:
                if feature_set not in feature_sets:
                    raise ValueError(
                        f"{where}/features': no feature set {feature_set!r}; "
                        f"known: {', '.join(feature_sets) or 'none'}"
                    )
        if kind == "attention_dynamics":
            for run in runs:
                callbacks = experiments.experiments[run["experiment"]]["settings"].get("callbacks")
                if not (callbacks or {}).get("attention_every"):
                    raise ValueError(
                        f"{where}/{key}': {run['experiment']!r} writes no attention "
                        "snapshots; set its settings.callbacks.attention_every (e.g. 2)"
                    )
        if kind == "sparsity_vs_features":
            for run in runs:
                resolved = experiments.experiments[run["experiment"]]
                if run["kind"] != "two_stage":
                    raise ValueError(
                        f"{where}/experiments': {run['experiment']!r} is a {run['kind']} run; "
                        "the figure places two-stage runs by their feature set"
                    )
                run.update(features=resolved["features"], mil=resolved["settings"]["mil"])
            plan["metric"] = spec["metric"] or HEADLINE_METRIC[plan["task"]]
        if kind == "km_curves" and plan["task"] != "survival":
            raise ValueError(
                f"{where}/dataset': {plan['dataset']!r} is a {plan['task']} dataset; "
                "Kaplan-Meier curves need a survival one"
            )
        plans[name] = plan
    return plans


def _run(where: str, key: str, name: str, experiments) -> dict[str, Any]:
    if name not in experiments.experiments:
        raise ValueError(
            f"{where}/{key}': no experiment {name!r}; known: {', '.join(experiments.experiments)}"
        )
    resolved = experiments.experiments[name]
    return {
        "experiment": name,
        "run": experiments.run_of[name],
        "title": resolved["title"] or name,
        "kind": resolved["kind"],
        "datasets": resolved["datasets"],
    }


def _dataset(where: str, dataset: str | None, runs: list[dict], datasets: Mapping) -> str:
    """The given dataset, checked against every run's; by default the first they all run on."""
    shared = [d for d in datasets if all(r["datasets"] is None or d in r["datasets"] for r in runs)]
    if dataset is None:
        if not shared:
            raise ValueError(f"{where}': its experiments share no dataset; name one in 'dataset'")
        return shared[0]
    if dataset not in datasets:
        raise ValueError(f"{where}/dataset': no dataset {dataset!r}; known: {', '.join(datasets)}")
    if dataset not in shared:
        missing = [r["experiment"] for r in runs if dataset not in (r["datasets"] or datasets)]
        raise ValueError(f"{where}/dataset': {', '.join(missing)} do(es) not run on {dataset!r}")
    return dataset


def _cost_panels(where: str, spec: Mapping, experiments, datasets: Mapping) -> list[dict]:
    """One panel per dataset: the experiments that run on it, the metric it shows."""
    panels = []
    chosen = spec["datasets"] or list(datasets)
    for dataset in chosen:
        if dataset not in datasets:
            raise ValueError(
                f"{where}/datasets': no dataset {dataset!r}; known: {', '.join(datasets)}"
            )
        names = spec["experiments"]
        if names is None:  # every run once, under its own name
            names = [n for n in experiments.runs if n == experiments.run_of[n]]
        runs = [
            run
            for run in (_run(where, "experiments", n, experiments) for n in names)
            if run["datasets"] is None or dataset in run["datasets"]
        ]
        if runs:
            metric = spec["metric"] or HEADLINE_METRIC[datasets[dataset]]
            panels.append({"dataset": dataset, "metric": metric, "runs": runs})
    if not panels:
        raise ValueError(f"{where}': none of its experiments runs on {', '.join(chosen)}")
    return panels
