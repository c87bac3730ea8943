# Multi-scale tiling by exact µm/px into one LMDB per slide, by shards of a dataset's slides as
# segmentation.smk (config tiling/slides_per_job): each slide's store and QC record in
# results/tiles/<dataset>/slides/, listed by the shard's manifest; then one dataset index of the
# stores (or a packed copy: config tiling.pack).


rule tile_slide:
    input:
        unpack(tile_shard_inputs),
    output:
        "results/tiles/{dataset}/slides.shards/{slides_per_job}/{shard}.json",
    log:
        "results/logs/tile_slide/{dataset}/{slides_per_job}/{shard}.log",
    benchmark:
        "results/benchmarks/tile_slide/{dataset}/{slides_per_job}/{shard}.tsv"
    wildcard_constraints:
        slides_per_job=str(config["tiling"]["slides_per_job"]),
        shard=r"\d+-of-\d+",
    conda:
        SHELL_ENV
    threads: job_threads("tile_slide")
    resources:
        **shard_resources("tile_slide"),
    params:
        slides=shard_slide_jobs("tiling"),
        out_dir="results/tiles/{dataset}/slides",
        segmentation_dir="results/qc/segmentation/{dataset}",
        # all of the block but `pack` (TilingSettings.DATASET_KEYS), which only pack_tiles reads
        settings=json.dumps(
            {
                **{k: v for k, v in config["tiling"].items() if k != "pack"},
                "strict": config["strict"],
            },
            sort_keys=True,
        ),
        code=code_digest("abmilx.tiling"),
        lost=lost_shard_files("tiling"),
    shell:
        "python -m abmilx.tiling tile-shard --slides {params.slides:q}"
        " --dataset {wildcards.dataset:q} --segmentation-dir {params.segmentation_dir:q}"
        " --out-dir {params.out_dir:q} --manifest {output:q} --settings {params.settings:q}"
        " --code {params.code:q} --threads {threads} > {log:q} 2>&1"
        " || {{ rm -rf {output:q}; exit 1; }}"


rule pack_tiles:
    input:
        shards=lambda w: shard_manifests("tiling", w.dataset),
    output:
        "results/tiles/{dataset}/patches.lmdb",
    log:
        "results/logs/pack_tiles/{dataset}.log",
    benchmark:
        "results/benchmarks/pack_tiles/{dataset}.tsv"
    conda:
        SHELL_ENV
    threads: 1
    resources:
        **job_resources("pack_tiles"),
    params:
        mode=config["tiling"]["pack"],
        code=code_digest("abmilx.tiling"),
    shell:
        "python -m abmilx.tiling pack --mode {params.mode:q} --shards {input.shards:q}"
        " --out {output:q} > {log:q} 2>&1"
        " || {{ rm -rf {output:q}; exit 1; }}"
