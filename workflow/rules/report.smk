# The paper's tables and figures, and the cohort QC table. Each declared table is rendered alone
# into its cache folder results/.tables/<name>/ (rule table), so that a changed run reruns only the
# tables showing it; results/tables/<name>.{csv,md,tex} publishes one (rule table_file: that table
# and only its runs), the directory target results/tables all of them beside main and cohort (rule
# tables), as results/figures does (abmilx.report.publish says why the cache entries are folders).
# The two targets are never built in one call (Snakemake forbids a file inside a directory output).
# The coverage ledger (abmilx.report.coverage) is published the same way, as coverage.{csv,md}.
# results/summary.md (rule tables): the headline metric of every run per dataset, with intervals.


rule qc_table:
    input:
        shards=[f for d in DATASETS for f in shard_manifests("tiling", d)],
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
        "python -m abmilx.report qc --shards {input.shards:q} --out {output:q} > {log:q} 2>&1"
        " || {{ rm -rf {output:q}; exit 1; }}"


rule segmentation_overview:
    input:
        shards=lambda w: shard_manifests("segmentation", w.dataset),
    output:
        report(
            "results/qc/segmentation/{dataset}.png",
            caption="../report/segmentation_overview.rst",
            category="Quality control",
            subcategory="Segmentation",
            labels={"dataset": "{dataset}"},
        ),
    log:
        "results/logs/segmentation_overview/{dataset}.log",
    benchmark:
        "results/benchmarks/segmentation_overview/{dataset}.tsv"
    conda:
        SHELL_ENV
    threads: 1
    resources:
        **job_resources("figures"),
    params:
        max_slides=config["qc_overview_slides"],
        code=code_digest("abmilx.report.segmentation_sheet"),
    shell:
        "python -m abmilx.report.segmentation_sheet --shards {input.shards:q}"
        " --max-slides {params.max_slides:q} --out {output:q} > {log:q} 2>&1"
        " || {{ rm -rf {output:q}; exit 1; }}"


rule run_plots:
    input:
        metrics=lambda w: run_outputs(w.dataset),
    output:
        report(
            directory("results/report/{dataset}"),
            patterns=["{experiment}.png"],
            caption="../report/run_plots.rst",
            category="Runs",
            subcategory="{dataset}",
            labels={"experiment": "{experiment}"},
        ),
    log:
        "results/logs/run_plots/{dataset}.log",
    benchmark:
        "results/benchmarks/run_plots/{dataset}.tsv"
    conda:
        SHELL_ENV
    threads: 1
    resources:
        **job_resources("figures"),
    params:
        runs=lambda w: json.dumps(
            {
                name: [
                    f"results/runs/{w.dataset}/{name}",
                    f"{w.dataset}: {name} ({config['experiments'][name]['kind']})",
                ]
                for name in experiments_for(w.dataset)
            },
            sort_keys=True,
        ),
        code=code_digest("abmilx.report.runs"),
    shell:
        "python -m abmilx.report.runs --runs {params.runs:q} --out-dir {output:q} > {log:q} 2>&1"
        " || {{ rm -rf {output:q}; exit 1; }}"


rule table:
    input:
        unpack(table_inputs),
    output:
        directory("results/.tables/{table}"),
    log:
        "results/logs/table/{table}.log",
    wildcard_constraints:
        # results/.tables/coverage is the ledger's cache folder (rule coverage), not a table's
        table=name_pattern(list(TABLE_PLANS)),
    conda:
        SHELL_ENV
    threads: 1
    params:
        # the table resolved to runs and columns (unknown names fail at parse time)
        plan=lambda w: json.dumps(TABLE_PLANS[w.table], sort_keys=True),
        n_boot=config["evaluation"]["n_boot"],
        seed=config["evaluation"]["seed"],
        code=code_digest("abmilx.report"),
    shell:
        "python -m abmilx.report table --name {wildcards.table:q} --plan {params.plan:q}"
        " --metrics {input.metrics:q} --attention {input.attention:q}"
        " --n-boot {params.n_boot:q} --seed {params.seed:q} --out-dir {output:q}"
        " > {log:q} 2>&1"
        " || {{ rm -rf {output:q}; exit 1; }}"


rule coverage:
    output:
        directory("results/.tables/coverage"),
    log:
        "results/logs/coverage.log",
    benchmark:
        "results/benchmarks/coverage.tsv"
    conda:
        SHELL_ENV
    threads: 1
    params:
        # the ledger of every printed paper cell, computed at parse time (common.smk)
        ledger=json.dumps(encode_coverage(COVERAGE), sort_keys=True),
        code=code_digest("abmilx.report"),
    shell:
        "python -m abmilx.report coverage --ledger {params.ledger:q} --out-dir {output:q}"
        " > {log:q} 2>&1"
        " || {{ rm -rf {output:q}; exit 1; }}"


rule table_file:
    input:
        "results/.tables/{table}",
    output:
        csv="results/tables/{table}.csv",
        md="results/tables/{table}.md",
        tex="results/tables/{table}.tex",
    log:
        "results/logs/table_file/{table}.log",
    conda:
        SHELL_ENV
    threads: 1
    params:
        code=code_digest("abmilx.report.publish"),
    shell:
        "python -m abmilx.report.publish {input:q} --out-dir results/tables --part > {log:q} 2>&1"
        " || {{ rm -rf {output:q}; exit 1; }}"


rule tables:
    input:
        metrics=[f for d in DATASETS for f in run_outputs(d)],
        qc="results/qc/slides.tsv",
        declared=declared_table_folders(),
    output:
        tables=report(
            directory("results/tables"),
            patterns=["{name}.md"],
            caption="../report/tables.rst",
            category="Tables",
        ),
        summary="results/summary.md",
    log:
        "results/logs/tables.log",
    conda:
        SHELL_ENV
    threads: 1
    params:
        settings=table_settings(),
        code=code_digest("abmilx.report"),
    shell:
        "python -m abmilx.report tables --metrics {input.metrics:q} --qc {input.qc:q}"
        " --out-dir {output.tables:q} --declared {input.declared:q}"
        " --settings {params.settings:q} --summary {output.summary:q} > {log:q} 2>&1"
        " || {{ rm -rf {output:q}; exit 1; }}"
