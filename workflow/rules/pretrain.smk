# Self-supervised pretraining (SimCLR) of an encoder on a pretraining cohort's patches: the
# demo's stand-in for ImageNet/foundation-model weights. Feature sets and E2E runs that name
# `pretrain:<name>` wait for results/pretrain/<name>/encoder.pt (common.smk, weights_inputs).


rule pretrain_encoder:
    input:
        store=lambda w: f"results/tiles/{config['pretrain'][w.name]['dataset']}/patches.lmdb",
    output:
        checkpoint="results/pretrain/{name}/encoder.pt",
        record="results/pretrain/{name}/record.json",
        history="results/pretrain/{name}/train_log.csv",
    log:
        "results/logs/pretrain_encoder/{name}.log",
    benchmark:
        "results/benchmarks/pretrain_encoder/{name}.tsv"
    wildcard_constraints:
        name=name_pattern(list(config["pretrain"])),
    conda:
        SHELL_ENV
    threads: job_threads("pretrain_encoder")
    resources:
        **job_resources("pretrain_encoder"),
    params:
        dataset=lambda w: config["pretrain"][w.name]["dataset"],
        settings=lambda w: json.dumps(pretrain_settings(w.name), sort_keys=True),
        code=code_digest("abmilx.pretrain"),
    shell:
        "python -m abmilx.pretrain --store {input.store:q} --dataset {params.dataset:q}"
        " --out-dir results/pretrain/{wildcards.name:q} --settings {params.settings:q}"
        " --threads {threads} > {log:q} 2>&1"
        " || {{ rm -rf {output:q}; exit 1; }}"
