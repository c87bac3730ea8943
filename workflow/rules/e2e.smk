# End-to-end training: encoder + MIL jointly from the LMDB patch store, for every kind that
# reads it (e2e with multi-scale random instance sampling; the C2C and FT baselines).


rule train_e2e:
    input:
        store="results/tiles/{dataset}/patches.lmdb",
        splits="results/splits/{dataset}.csv",
        weights=e2e_weights_inputs,
    output:
        model="results/runs/{dataset}/{experiment}/fold{fold}/model.pt",
        history="results/runs/{dataset}/{experiment}/fold{fold}/train_log.csv",
    log:
        "results/logs/train_e2e/{dataset}/{experiment}/fold{fold}.log",
    benchmark:
        "results/benchmarks/train_e2e/{dataset}/{experiment}/fold{fold}.tsv"
    wildcard_constraints:
        experiment=name_pattern(experiment_names(*PATCH_KINDS)),
    conda:
        SHELL_ENV
    threads: job_threads("train_e2e")
    resources:
        **job_resources("train_e2e"),
        gpu=training_gpus,
    params:
        out_dir="results/runs/{dataset}/{experiment}/fold{fold}",
        launch=training_launcher,
        kind=lambda w: config["experiments"][w.experiment]["kind"],
        processes=lambda w: max(1, training_gpus(w)),
        settings=training_settings,
        weights_digest=e2e_weights_digest,
        code=code_digest("abmilx.e2e"),
    shell:
        "{params.launch} -m abmilx.e2e train --store {input.store:q} --splits {input.splits:q}"
        " --kind {params.kind:q} --fold {wildcards.fold:q} --out-dir {params.out_dir:q}"
        " --settings {params.settings:q}"
        " --threads $(( ({threads} + {params.processes:q} - 1) / {params.processes:q} ))"
        " > {log:q} 2>&1"
        " || {{ rm -rf {output:q}; exit 1; }}"
