# Patient-level, stratified, seeded splits; slides that failed QC are left out.


rule make_splits:
    input:
        slides=lambda w: slide_sheet_path(w.dataset),
        labels=lambda w: label_sheet_path(w.dataset),
        qc=lambda w: shard_manifests("tiling", w.dataset),
    output:
        split="results/splits/{dataset}.csv",
        summary="results/splits/{dataset}.json",
    log:
        "results/logs/make_splits/{dataset}.log",
    conda:
        SHELL_ENV
    threads: 1
    params:
        task=lambda w: model_task(w.dataset),
        settings=lambda w: json.dumps(split_settings(w.dataset), sort_keys=True),
        code=code_digest("abmilx.splits"),
    shell:
        "python -m abmilx.splits make --slides {input.slides:q} --labels {input.labels:q}"
        " --task {params.task:q} --out {output.split:q} --settings {params.settings:q}"
        " --qc-dir results/tiles/{wildcards.dataset:q}/slides > {log:q} 2>&1"
        " || {{ rm -rf {output:q}; exit 1; }}"
