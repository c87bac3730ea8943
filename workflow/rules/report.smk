# The paper's tables and figures, and the cohort QC table.
from abmilx.report.tables import plan_tables


rule qc_table:
    input:
        qc=[f for d in DATASETS for f in tile_qc_files(d)],
    output:
        report(
            "results/qc/slides.tsv",
            caption="../report/qc.rst",
            category="Quality control",
        ),
    log:
        "results/logs/qc_table.log",
    conda:
        SHELL_ENV
    threads: 1
    params:
        code=code_digest("abmilx.report"),
    shell:
        "python -m abmilx.report qc --records {input.qc:q} --out {output:q} > {log:q} 2>&1"


rule tables:
    input:
        metrics=[f for d in DATASETS for f in run_outputs(d)],
        qc="results/qc/slides.tsv",
    output:
        report(
            directory("results/tables"),
            patterns=["{name}.md"],
            caption="../report/tables.rst",
            category="Tables",
        ),
    log:
        "results/logs/tables.log",
    conda:
        SHELL_ENV
    threads: 1
    params:
        settings=table_settings(),
        # the config's tables resolved to runs and columns (unknown names fail at parse time)
        tables=json.dumps(
            plan_tables(
                config["tables"],
                EXPERIMENTS,
                {d: dataset_config(d)["task"] for d in DATASETS},
            ),
            sort_keys=True,
        ),
        code=code_digest("abmilx.report"),
    shell:
        "python -m abmilx.report tables --metrics {input.metrics:q} --qc {input.qc:q}"
        " --out-dir {output:q} --tables {params.tables:q}"
        " --settings {params.settings:q} > {log:q} 2>&1"
