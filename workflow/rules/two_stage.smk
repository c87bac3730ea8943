# Two-stage baselines: a MIL model trained on offline features (batch 1, full bag).


rule train_two_stage:
    input:
        features=lambda w: feature_manifest(
            w.dataset, config["experiments"][w.experiment]["features"]
        ),
        splits="results/splits/{dataset}.csv",
    output:
        model="results/runs/{dataset}/{experiment}/fold{fold}/model.pt",
        history="results/runs/{dataset}/{experiment}/fold{fold}/train_log.csv",
    log:
        "results/logs/train_two_stage/{dataset}/{experiment}/fold{fold}.log",
    benchmark:
        "results/benchmarks/train_two_stage/{dataset}/{experiment}/fold{fold}.tsv"
    wildcard_constraints:
        experiment=name_pattern(experiment_names("two_stage")),
    conda:
        SHELL_ENV
    threads: job_threads("train_two_stage")
    resources:
        **job_resources("train_two_stage"),
        gpu=training_gpus,
    params:
        out_dir="results/runs/{dataset}/{experiment}/fold{fold}",
        features_dir=lambda w: features_dir(
            w.dataset, config["experiments"][w.experiment]["features"]
        ),
        settings=training_settings,
        code=code_digest("abmilx.two_stage"),
    shell:
        "python -m abmilx.two_stage train --features-dir {params.features_dir:q}"
        " --splits {input.splits:q} --fold {wildcards.fold:q} --out-dir {params.out_dir:q}"
        " --settings {params.settings:q} --threads {threads} > {log:q} 2>&1"
        " || {{ rm -rf {output:q}; exit 1; }}"
