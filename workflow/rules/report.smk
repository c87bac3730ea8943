# The paper's tables and figures, and the cohort QC table.


def heatmap_experiment():
    chosen = config["report"]["heatmaps"]["experiment"]
    if chosen is not None:
        if chosen not in config["experiments"]:
            raise ValueError(
                f"config key 'report/heatmaps/experiment': no experiment {chosen!r}"
            )
        return chosen
    e2e = experiment_names("e2e")
    return e2e[0] if e2e else None


def heatmap_datasets():
    experiment = heatmap_experiment()
    if experiment is None:
        return []
    return [d for d in DATASETS if experiment in experiments_for(d)]


def heatmap_inputs(wildcards):
    experiment = heatmap_experiment()
    inputs = {}
    for dataset in heatmap_datasets():
        run = f"results/runs/{dataset}/{experiment}/fold0"
        inputs[f"{dataset}_attention"] = f"{run}/attention.npz"
        inputs[f"{dataset}_predictions"] = f"{run}/predictions.csv"
        inputs[f"{dataset}_slides"] = slide_sheet_path(dataset)
        inputs[f"{dataset}_qc"] = tile_qc_files(dataset)
        if is_synthetic(dataset):
            inputs[f"{dataset}_truth"] = [
                f"results/cohort/{dataset}/truth/{Path(path).name}.npz"
                for path in slide_table(dataset)["path"]
            ]
    return inputs


def heatmap_settings():
    experiment = heatmap_experiment()
    runs = {
        dataset: {
            "run_dir": f"results/runs/{dataset}/{experiment}/fold0",
            "slide_sheet": slide_sheet_path(dataset),
            "qc_dir": f"results/tiles/{dataset}/slides",
            "classes": dataset_config(dataset).get("classes"),
        }
        for dataset in heatmap_datasets()
    }
    return json.dumps(
        {
            "experiment": experiment,
            "title": config["experiments"][experiment]["title"] if experiment else "",
            "n_slides": config["report"]["heatmaps"]["n_slides"],
            "patch_size": config["tiling"]["patch_size"],
            "main_mpp": config["tiling"]["scales"]["main"],
            "runs": runs,
        },
        sort_keys=True,
    )


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


rule qc_table:
    input:
        qc=[f for d in DATASETS for f in tile_qc_files(d)],
    output:
        "results/qc/slides.tsv",
    log:
        "results/logs/qc_table.log",
    conda:
        SHELL_ENV
    threads: 1
    params:
        code=code_digest("report/qc.py", "report/__main__.py"),
    shell:
        "python -m abmilx.report qc --records {input.qc:q} --out {output:q} > {log:q} 2>&1"


rule tables:
    input:
        metrics=[f for d in DATASETS for f in run_outputs(d)],
    output:
        directory("results/tables"),
    log:
        "results/logs/tables.log",
    conda:
        SHELL_ENV
    threads: 1
    params:
        settings=table_settings(),
        code=code_digest("report/tables.py", "report/__main__.py"),
    shell:
        "python -m abmilx.report tables --metrics {input.metrics:q} --out-dir {output:q}"
        " --settings {params.settings:q} > {log:q} 2>&1"


rule figures:
    input:
        unpack(heatmap_inputs),
    output:
        directory("results/figures"),
    log:
        "results/logs/figures.log",
    benchmark:
        "results/benchmarks/figures.tsv"
    conda:
        SHELL_ENV
    threads: 1
    resources:
        mem_mb=4000,
    params:
        settings=heatmap_settings(),
        code=code_digest("report/figures.py", "report/__main__.py", "slides.py"),
    shell:
        "python -m abmilx.report figures --out-dir {output:q} --settings {params.settings:q}"
        " > {log:q} 2>&1"
