# Cohorts: the embedded synthetic one (real pyramidal slide files generated from a seed,
# abmilx.cohort), and sheets adapted from the public label files of the paper's datasets.
# Job group `synthesis`: on a cluster, several slides per job (profiles/slurm, docs/scale.md).


rule synthesize_slide:
    output:
        slide="results/cohort/{dataset}/slides/{file}",
        truth="results/cohort/{dataset}/truth/{file}.npz",
    log:
        "results/logs/synthesize_slide/{dataset}/{file}.log",
    benchmark:
        "results/benchmarks/synthesize_slide/{dataset}/{file}.tsv"
    group:
        "synthesis"
    conda:
        SHELL_ENV
    threads: 1
    resources:
        **job_resources("synthesize_slide"),
    params:
        slide_id=lambda w: w.file.rsplit(".", 1)[0],
        settings=lambda w: json.dumps(synthetic_settings(w.dataset), sort_keys=True),
        code=code_digest("abmilx.cohort"),
    shell:
        "python -m abmilx.cohort slide --dataset {wildcards.dataset:q} --slide-id {params.slide_id:q}"
        " --out {output.slide:q} --truth {output.truth:q} --settings {params.settings:q}"
        " > {log:q} 2>&1"
        " || {{ rm -rf {output:q}; exit 1; }}"


rule cohort_sheets:
    output:
        slides="results/cohort/{dataset}/slides.csv",
        labels="results/cohort/{dataset}/labels.csv",
    log:
        "results/logs/cohort_sheets/{dataset}.log",
    wildcard_constraints:
        dataset=name_pattern([d for d in ALL_DATASETS if is_synthetic(d)]),
    conda:
        SHELL_ENV
    threads: 1
    params:
        settings=lambda w: json.dumps(synthetic_settings(w.dataset), sort_keys=True),
        code=code_digest("abmilx.cohort"),
    shell:
        "python -m abmilx.cohort sheets --dataset {wildcards.dataset:q}"
        " --out-dir results/cohort/{wildcards.dataset:q} --settings {params.settings:q}"
        " > {log:q} 2>&1"
        " || {{ rm -rf {output:q}; exit 1; }}"


rule adapt_sheets:
    output:
        slides="results/cohort/{dataset}/slides.csv",
        labels="results/cohort/{dataset}/labels.csv",
        report="results/cohort/{dataset}/report.json",
    log:
        "results/logs/adapt_sheets/{dataset}.log",
    wildcard_constraints:
        dataset=name_pattern([d for d in DATASETS if is_adapted(d)]),
    conda:
        SHELL_ENV
    threads: 1
    params:
        name=lambda w: dataset_config(w.dataset)["adapter"]["name"],
        settings=lambda w: json.dumps(
            dataset_config(w.dataset)["adapter"]["options"], sort_keys=True
        ),
        found=adapted_digest,
        code=code_digest("abmilx.adapters"),
    shell:
        "python -m abmilx.adapters {params.name:q} --out-dir results/cohort/{wildcards.dataset:q}"
        " --settings {params.settings:q} > {log:q} 2>&1"
        " || {{ rm -rf {output:q}; exit 1; }}"
