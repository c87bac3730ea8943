# Tissue segmentation per slide: GeoJSON contours, mask, overlay and a QC record.
# Per-slide overrides come from optional slide-sheet columns (docs/architecture.md, Sheets):
# `segmentation` (JSON object of settings replacing the config's) and `geojson` (a tissue
# annotation replacing the computed mask); blank or absent (synthetic cohorts) means none.
# Job group `segmentation`: on a cluster, several slides per job (profiles/slurm, docs/scale.md).


rule segment_tissue:
    input:
        unpack(segment_inputs),
    output:
        multiext(
            "results/qc/segmentation/{dataset}/{slide}",
            ".json",
            ".geojson",
            ".mask.png",
            ".overlay.png",
        ),
    log:
        "results/logs/segment_tissue/{dataset}/{slide}.log",
    benchmark:
        "results/benchmarks/segment_tissue/{dataset}/{slide}.tsv"
    group:
        "segmentation"
    conda:
        SHELL_ENV
    threads: 1
    resources:
        **job_resources("segment_tissue"),
    params:
        prefix="results/qc/segmentation/{dataset}/{slide}",
        mpp=mpp_override,
        geojson=slide_geojson,
        overrides=slide_overrides,
        settings=json.dumps(
            {**config["segmentation"], "strict": config["strict"]}, sort_keys=True
        ),
        code=code_digest("abmilx.segmentation"),
    shell:
        "python -m abmilx.segmentation segment --slide {input.slide:q}"
        " --slide-id {wildcards.slide:q} --dataset {wildcards.dataset:q} --mpp={params.mpp:q}"
        " --geojson={params.geojson:q} --overrides={params.overrides:q}"
        " --out-prefix {params.prefix:q} --settings {params.settings:q} > {log:q} 2>&1"
        " || {{ rm -rf {output:q}; exit 1; }}"
