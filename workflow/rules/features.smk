# Offline patch features for the two-stage baselines, one file per slide. Resumable per slide:
# finished slides wait in "<output>.partial/", which a failed job leaves for its rerun.


rule extract_features:
    input:
        store="results/tiles/{dataset}/patches.lmdb",
        weights=feature_set_weights_inputs,
    output:
        directory("results/features/{dataset}/{feature_set}"),
    log:
        "results/logs/extract_features/{dataset}/{feature_set}.log",
    benchmark:
        "results/benchmarks/extract_features/{dataset}/{feature_set}.tsv"
    wildcard_constraints:
        feature_set=name_pattern(feature_set_names()),
    conda:
        SHELL_ENV
    threads: job_threads("extract_features")
    resources:
        **job_resources("extract_features"),
    params:
        settings=lambda w: json.dumps(
            {
                **config["feature_sets"][w.feature_set],
                "weights": weights_path(
                    config["feature_sets"][w.feature_set]["weights"]
                ),
                "seed": config["seed"],
                "device": config["device"],
            },
            sort_keys=True,
        ),
        code=code_digest("abmilx.features"),
    shell:
        "python -m abmilx.features extract --store {input.store:q} --out-dir {output:q}"
        " --settings {params.settings:q} --threads {threads} > {log:q} 2>&1"
