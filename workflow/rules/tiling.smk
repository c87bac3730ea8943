# Multi-scale tiling by exact µm/px into one LMDB per slide, then one dataset index of them
# (or a packed copy: config tiling.pack).
# Job group `tiling`: on a cluster, several slides per job (profiles/slurm, docs/scale.md).


rule tile_slide:
    input:
        slide=slide_path,
        segmentation="results/qc/segmentation/{dataset}/{slide}.json",
    output:
        store=slide_store("results/tiles/{dataset}/slides/{slide}.lmdb"),
        qc="results/tiles/{dataset}/slides/{slide}.json",
    log:
        "results/logs/tile_slide/{dataset}/{slide}.log",
    benchmark:
        "results/benchmarks/tile_slide/{dataset}/{slide}.tsv"
    group:
        "tiling"
    conda:
        SHELL_ENV
    threads: 1
    resources:
        **job_resources("tile_slide"),
    params:
        # the segmentation's outputs share the prefix of its QC record (an input)
        prefix=lambda w, input: input.segmentation.removesuffix(".json"),
        mpp=mpp_override,
        # all of the block but `pack` (TilingSettings.DATASET_KEYS), which only pack_tiles reads
        settings=json.dumps(
            {
                **{k: v for k, v in config["tiling"].items() if k != "pack"},
                "strict": config["strict"],
            },
            sort_keys=True,
        ),
        code=code_digest("abmilx.tiling"),
    shell:
        "python -m abmilx.tiling tile --slide {input.slide:q} --slide-id {wildcards.slide:q}"
        " --dataset {wildcards.dataset:q} --mpp={params.mpp:q} --segmentation {params.prefix:q}"
        " --out-store {output.store:q} --out-qc {output.qc:q} --settings {params.settings:q}"
        " --threads {threads} > {log:q} 2>&1"
        " || {{ rm -rf {output:q}; exit 1; }}"


rule pack_tiles:
    input:
        stores=lambda w: expand(
            "results/tiles/{dataset}/slides/{slide}.lmdb",
            dataset=w.dataset,
            slide=slide_ids(w.dataset),
        ),
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
        # move packs as copy does (the same file): only the removal of the stores differs
        mode="index" if config["tiling"]["pack"] == "index" else "copy",
        code=code_digest("abmilx.tiling"),
    shell:
        "python -m abmilx.tiling pack --mode {params.mode:q} --stores {input.stores:q}"
        " --out {output:q} > {log:q} 2>&1"
        " || {{ rm -rf {output:q}; exit 1; }}"
