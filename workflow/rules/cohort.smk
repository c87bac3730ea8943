# Embedded synthetic cohort: real pyramidal slide files generated from a seed (design.md §4).


rule synthesize_slide:
    output:
        slide="results/cohort/{dataset}/slides/{file}",
        truth="results/cohort/{dataset}/truth/{file}.npz",
    log:
        "results/logs/synthesize_slide/{dataset}/{file}.log",
    benchmark:
        "results/benchmarks/synthesize_slide/{dataset}/{file}.tsv"
    conda:
        SHELL_ENV
    threads: 1
    resources:
        mem_mb=1500,
    params:
        slide_id=lambda w: w.file.rsplit(".", 1)[0],
        settings=lambda w: json.dumps(synthetic_settings(w.dataset), sort_keys=True),
        code=code_digest("cohort"),
    shell:
        "python -m abmilx.cohort slide --dataset {wildcards.dataset} --slide-id {params.slide_id}"
        " --out {output.slide:q} --truth {output.truth:q} --settings {params.settings:q}"
        " > {log:q} 2>&1"


rule cohort_sheets:
    output:
        slides="results/cohort/{dataset}/slides.csv",
        labels="results/cohort/{dataset}/labels.csv",
    log:
        "results/logs/cohort_sheets/{dataset}.log",
    conda:
        SHELL_ENV
    threads: 1
    params:
        settings=lambda w: json.dumps(synthetic_settings(w.dataset), sort_keys=True),
        code=code_digest("cohort"),
    shell:
        "python -m abmilx.cohort sheets --dataset {wildcards.dataset}"
        " --out-dir results/cohort/{wildcards.dataset} --settings {params.settings:q}"
        " > {log:q} 2>&1"
