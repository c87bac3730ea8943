# Test-set predictions, attention and bootstrap metrics per fold, then aggregated per experiment.


rule evaluate_fold:
    input:
        unpack(evaluation_inputs),
    output:
        predictions="results/runs/{dataset}/{experiment}/fold{fold}/predictions.csv",
        attention="results/runs/{dataset}/{experiment}/fold{fold}/attention.npz",
        metrics="results/runs/{dataset}/{experiment}/fold{fold}/metrics.json",
    log:
        "results/logs/evaluate_fold/{dataset}/{experiment}/fold{fold}.log",
    benchmark:
        "results/benchmarks/evaluate_fold/{dataset}/{experiment}/fold{fold}.tsv"
    conda:
        SHELL_ENV
    threads: job_threads("evaluate_fold")
    resources:
        **job_resources("evaluate_fold"),
    params:
        run_dir="results/runs/{dataset}/{experiment}/fold{fold}",
        source=evaluation_source,
        settings=evaluation_settings,
        code=code_digest("abmilx.evaluation"),
    shell:
        "python -m abmilx.evaluation evaluate --run-dir {params.run_dir:q}"
        " --splits {input.splits:q} --fold {wildcards.fold:q} {params.source}"
        " --out-dir {params.run_dir:q} --settings {params.settings:q}"
        " --threads {threads} > {log:q} 2>&1"
        " || {{ rm -rf {output:q}; exit 1; }}"


rule aggregate_folds:
    input:
        metrics=lambda w: expand(
            "results/runs/{dataset}/{experiment}/fold{fold}/metrics.json",
            fold=folds(w.dataset),
            **w,
        ),
        predictions=lambda w: expand(
            "results/runs/{dataset}/{experiment}/fold{fold}/predictions.csv",
            fold=folds(w.dataset),
            **w,
        ),
    output:
        metrics="results/runs/{dataset}/{experiment}/metrics.json",
        predictions="results/runs/{dataset}/{experiment}/predictions.csv",
    log:
        "results/logs/aggregate_folds/{dataset}/{experiment}.log",
    conda:
        SHELL_ENV
    threads: 1
    params:
        code=code_digest("abmilx.evaluation"),
    shell:
        "python -m abmilx.evaluation aggregate --metrics {input.metrics:q}"
        " --predictions {input.predictions:q} --out-metrics {output.metrics:q}"
        " --out-predictions {output.predictions:q} > {log:q} 2>&1"
        " || {{ rm -rf {output:q}; exit 1; }}"
