# Tissue segmentation per slide: GeoJSON contours, mask, overlay and a QC record.


rule segment_tissue:
    input:
        slide=slide_path,
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
    conda:
        SHELL_ENV
    threads: 1
    resources:
        mem_mb=2000,
    params:
        prefix="results/qc/segmentation/{dataset}/{slide}",
        mpp=mpp_override,
        settings=json.dumps(
            {**config["segmentation"], "strict": config["strict"]}, sort_keys=True
        ),
        code=code_digest("segmentation", "slides.py"),
    shell:
        "python -m abmilx.segmentation segment --slide {input.slide:q}"
        " --slide-id {wildcards.slide:q} --dataset {wildcards.dataset} --mpp '{params.mpp}'"
        " --out-prefix {params.prefix:q} --settings {params.settings:q} > {log:q} 2>&1"
