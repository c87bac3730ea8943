# Offline patch features for the two-stage baselines, one file per slide, made by shards of the
# dataset's sorted slide ids (config features/slides_per_job; abmilx.features.shards): one job
# per shard, given its first and last slide id, which a cluster runs side by side on its GPUs.
# Resumable per slide: finished slides wait in "<folder>.partial/", which a failed job leaves for
# its rerun. Each shard lists its files in "<folder>.shards/<size>/<shard>.json";
# combine_feature_shards joins the lists into the folder's manifest, the declared output the
# trainers wait for. A slide file it lists that is gone is rebuilt alone by rebuild_feature_file
# (requested by `all`: common.smk, lost_feature_files).


rule extract_features:
    input:
        store="results/tiles/{dataset}/patches.lmdb",
        weights=feature_set_weights_inputs,
    output:
        "results/features/{dataset}/{feature_set}.shards/{slides_per_job}/{shard}.json",
    log:
        "results/logs/extract_features/{dataset}/{feature_set}/{slides_per_job}/{shard}.log",
    benchmark:
        "results/benchmarks/extract_features/{dataset}/{feature_set}/{slides_per_job}/{shard}.tsv"
    wildcard_constraints:
        feature_set=name_pattern(feature_set_names("encode")),
        slides_per_job=r"\d+",
        shard=r"\d+-of-\d+",
    conda:
        SHELL_ENV
    threads: job_threads("extract_features")
    resources:
        **job_resources("extract_features"),
    params:
        out_dir=lambda w: features_dir(w.dataset, w.feature_set),
        settings=feature_settings,
        weights_digest=feature_set_weights_digest,
        code=code_digest("abmilx.features"),
        first=feature_shard_first,
        last=feature_shard_last,
    shell:
        "python -m abmilx.features extract --store {input.store:q} --out-dir {params.out_dir:q}"
        " --shard {wildcards.shard:q} --slides-per-job {wildcards.slides_per_job:q}"
        " --first={params.first:q} --last={params.last:q} --settings {params.settings:q}"
        " --threads {threads} > {log:q} 2>&1"
        " || {{ rm -rf {output:q}; exit 1; }}"


rule combine_feature_shards:
    input:
        feature_shard_manifests,
    output:
        "results/features/{dataset}/{feature_set}.manifest.json",
    log:
        "results/logs/combine_feature_shards/{dataset}/{feature_set}.log",
    wildcard_constraints:
        feature_set=name_pattern(feature_set_names("encode")),
    conda:
        SHELL_ENV
    threads: 1
    params:
        out_dir=lambda w: features_dir(w.dataset, w.feature_set),
        slides_per_job=config["features"]["slides_per_job"],
        shards=lambda w: len(feature_shards(w.dataset)),
        code=code_digest("abmilx.features"),
    shell:
        "python -m abmilx.features combine --out-dir {params.out_dir:q}"
        " --slides-per-job {params.slides_per_job:q} --shards {params.shards:q}"
        " > {log:q} 2>&1"
        " || {{ rm -rf {output:q}; exit 1; }}"


# Features computed elsewhere (CLAM/TRIDENT HDF5), checked against the slides that pass tiling
# QC and the scale's µm/px and patch size, then written in the layout above.
rule import_h5_features:
    input:
        qc=lambda w: shard_manifests("tiling", w.dataset),
        h5=h5_feature_files,
    output:
        directory("results/features/{dataset}/{feature_set}"),
    log:
        "results/logs/import_h5_features/{dataset}/{feature_set}.log",
    benchmark:
        "results/benchmarks/import_h5_features/{dataset}/{feature_set}.tsv"
    wildcard_constraints:
        feature_set=name_pattern(feature_set_names("h5")),
    conda:
        SHELL_ENV
    threads: 1
    resources:
        **job_resources("import_h5_features"),
    params:
        settings=h5_import_settings,
        code=code_digest("abmilx.features"),
    shell:
        "python -m abmilx.features import-h5 --qc-dir results/tiles/{wildcards.dataset:q}/slides"
        " --out-dir {output:q} --settings {params.settings:q} > {log:q} 2>&1"
        " || {{ rm -rf {output:q}; exit 1; }}"


rule rebuild_feature_file:
    input:
        store="results/tiles/{dataset}/patches.lmdb",
        weights=feature_set_weights_inputs,
    output:
        "results/features/{dataset}/{feature_set}/{slide}.pt",
    log:
        "results/logs/rebuild_feature_file/{dataset}/{feature_set}/{slide}.log",
    benchmark:
        "results/benchmarks/rebuild_feature_file/{dataset}/{feature_set}/{slide}.tsv"
    wildcard_constraints:
        feature_set=name_pattern(feature_set_names("encode")),
    conda:
        SHELL_ENV
    threads: job_threads("extract_features")
    resources:
        **job_resources("extract_features"),
    params:
        out_dir=lambda w: features_dir(w.dataset, w.feature_set),
        settings=feature_settings,
        weights_digest=feature_set_weights_digest,
        code=code_digest("abmilx.features"),
    shell:
        "python -m abmilx.features extract --store {input.store:q} --out-dir {params.out_dir:q}"
        " --slides {wildcards.slide:q} --settings {params.settings:q} --threads {threads}"
        " > {log:q} 2>&1"
        " || {{ rm -rf {output:q}; exit 1; }}"
