# Tissue segmentation, by shards of a dataset's slides (config segmentation/slides_per_job; one
# job per shard, resources/segment_tissue/threads slides at a time): each slide's GeoJSON
# contours, mask, overlay and QC record in results/qc/segmentation/<dataset>/, listed by the
# shard's manifest, the declared output. A rerun redoes only the slides whose inputs changed or
# whose files are gone (abmilx.shards; a lost file is found at parse time: lost_shard_files).
# Per-slide overrides come from optional slide-sheet columns (docs/architecture.md, Sheets):
# `segmentation` (JSON object of settings replacing the config's) and `geojson` (a tissue
# annotation replacing the computed mask); blank or absent (synthetic cohorts) means none.


rule segment_tissue:
    input:
        unpack(segment_shard_inputs),
    output:
        "results/qc/segmentation/{dataset}.shards/{slides_per_job}/{shard}.json",
    log:
        "results/logs/segment_tissue/{dataset}/{slides_per_job}/{shard}.log",
    benchmark:
        "results/benchmarks/segment_tissue/{dataset}/{slides_per_job}/{shard}.tsv"
    wildcard_constraints:
        slides_per_job=str(config["segmentation"]["slides_per_job"]),
        shard=r"\d+-of-\d+",
    conda:
        SHELL_ENV
    threads: job_threads("segment_tissue")
    resources:
        **shard_resources("segment_tissue"),
    params:
        slides=shard_slide_jobs("segmentation"),
        out_dir="results/qc/segmentation/{dataset}",
        settings=json.dumps(
            {**config["segmentation"], "strict": config["strict"]}, sort_keys=True
        ),
        code=code_digest("abmilx.segmentation"),
        lost=lost_shard_files("segmentation"),
    shell:
        "python -m abmilx.segmentation segment-shard --slides {params.slides:q}"
        " --dataset {wildcards.dataset:q} --out-dir {params.out_dir:q} --manifest {output:q}"
        " --settings {params.settings:q} --code {params.code:q} --threads {threads}"
        " > {log:q} 2>&1"
        " || {{ rm -rf {output:q}; exit 1; }}"
