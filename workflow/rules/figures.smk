# The figures declared under `figures:` in the config. Each is rendered by the rule of its kind
# into its own folder results/.figures/<name>/ (so a change reruns only the figures it touches;
# folders, because Snakemake dates folders but compares small files by checksum, which would hide
# a partly published results/figures, see abmilx.report.publish) and published from there:
# `results/figures` copies all (a directory output), `results/figures/<name>.png` one.
rule figure_umap_features:
    input:
        unpack(figure_inputs),
    output:
        report(
            directory("results/.figures/{name}"),
            patterns=["{file}.png"],
            caption="../report/figures/umap_features.rst",
            category="Figures",
        ),
    log:
        "results/logs/figures/render/{name}.log",
    benchmark:
        "results/benchmarks/figures/{name}.tsv"
    wildcard_constraints:
        name=name_pattern(figures_of("umap_features")),
    conda:
        SHELL_ENV
    threads: 2
    resources:
        **job_resources("figures"),
    params:
        settings=figure_settings,
        code=code_digest("abmilx.report.figures.umap_features"),
    shell:
        "python -m abmilx.report.figures.umap_features --settings {params.settings:q}"
        " --out {output:q}/{wildcards.name:q}.png > {log:q} 2>&1"
        " || {{ rm -rf {output:q}; exit 1; }}"


rule figure_attention_heatmaps:
    input:
        unpack(figure_inputs),
    output:
        report(
            directory("results/.figures/{name}"),
            patterns=["{file}.png"],
            caption="../report/figures/attention_heatmaps.rst",
            category="Figures",
        ),
    log:
        "results/logs/figures/render/{name}.log",
    benchmark:
        "results/benchmarks/figures/{name}.tsv"
    wildcard_constraints:
        name=name_pattern(figures_of("attention_heatmaps")),
    conda:
        SHELL_ENV
    threads: 1
    resources:
        **job_resources("figures"),
    params:
        settings=figure_settings,
        code=code_digest("abmilx.report.figures.attention_heatmaps"),
    shell:
        "python -m abmilx.report.figures.attention_heatmaps --settings {params.settings:q}"
        " --out {output:q}/{wildcards.name:q}.png > {log:q} 2>&1"
        " || {{ rm -rf {output:q}; exit 1; }}"


rule figure_attention_dynamics:
    input:
        unpack(figure_inputs),
    output:
        report(
            directory("results/.figures/{name}"),
            patterns=["{file}.png"],
            caption="../report/figures/attention_dynamics.rst",
            category="Figures",
        ),
    log:
        "results/logs/figures/render/{name}.log",
    benchmark:
        "results/benchmarks/figures/{name}.tsv"
    wildcard_constraints:
        name=name_pattern(figures_of("attention_dynamics")),
    conda:
        SHELL_ENV
    threads: 1
    resources:
        **job_resources("figures"),
    params:
        settings=figure_settings,
        code=code_digest("abmilx.report.figures.attention_dynamics"),
    shell:
        "python -m abmilx.report.figures.attention_dynamics --settings {params.settings:q}"
        " --out {output:q}/{wildcards.name:q}.png > {log:q} 2>&1"
        " || {{ rm -rf {output:q}; exit 1; }}"


rule figure_performance_vs_cost:
    input:
        unpack(figure_inputs),
    output:
        report(
            directory("results/.figures/{name}"),
            patterns=["{file}.png"],
            caption="../report/figures/performance_vs_cost.rst",
            category="Figures",
        ),
    log:
        "results/logs/figures/render/{name}.log",
    benchmark:
        "results/benchmarks/figures/{name}.tsv"
    wildcard_constraints:
        name=name_pattern(figures_of("performance_vs_cost")),
    conda:
        SHELL_ENV
    threads: 1
    resources:
        **job_resources("figures"),
    params:
        settings=figure_settings,
        code=code_digest("abmilx.report.figures.performance_vs_cost"),
    shell:
        "python -m abmilx.report.figures.performance_vs_cost --settings {params.settings:q}"
        " --out {output:q}/{wildcards.name:q}.png > {log:q} 2>&1"
        " || {{ rm -rf {output:q}; exit 1; }}"


rule figure_km_curves:
    input:
        unpack(figure_inputs),
    output:
        report(
            directory("results/.figures/{name}"),
            patterns=["{file}.png"],
            caption="../report/figures/km_curves.rst",
            category="Figures",
        ),
    log:
        "results/logs/figures/render/{name}.log",
    benchmark:
        "results/benchmarks/figures/{name}.tsv"
    wildcard_constraints:
        name=name_pattern(figures_of("km_curves")),
    conda:
        SHELL_ENV
    threads: 1
    resources:
        **job_resources("figures"),
    params:
        settings=figure_settings,
        code=code_digest("abmilx.report.figures.km_curves"),
    shell:
        "python -m abmilx.report.figures.km_curves --settings {params.settings:q}"
        " --out {output:q}/{wildcards.name:q}.png > {log:q} 2>&1"
        " || {{ rm -rf {output:q}; exit 1; }}"


rule figure_sparsity_vs_features:
    input:
        unpack(figure_inputs),
    output:
        report(
            directory("results/.figures/{name}"),
            patterns=["{file}.png"],
            caption="../report/figures/sparsity_vs_features.rst",
            category="Figures",
        ),
    log:
        "results/logs/figures/render/{name}.log",
    benchmark:
        "results/benchmarks/figures/{name}.tsv"
    wildcard_constraints:
        name=name_pattern(figures_of("sparsity_vs_features")),
    conda:
        SHELL_ENV
    threads: 1
    resources:
        **job_resources("figures"),
    params:
        settings=figure_settings,
        code=code_digest("abmilx.report.figures.sparsity_vs_features"),
    shell:
        "python -m abmilx.report.figures.sparsity_vs_features --settings {params.settings:q}"
        " --out {output:q}/{wildcards.name:q}.png > {log:q} 2>&1"
        " || {{ rm -rf {output:q}; exit 1; }}"


rule figure:
    input:
        "results/.figures/{name}",
    output:
        png="results/figures/{name}.png",
        pdf="results/figures/{name}.pdf",
    log:
        "results/logs/figures/publish/{name}.log",
    wildcard_constraints:
        name=name_pattern(list(FIGURES)),
    conda:
        SHELL_ENV
    threads: 1
    params:
        code=code_digest("abmilx.report.publish"),
    shell:
        "python -m abmilx.report.publish {input:q} --out-dir results/figures --part > {log:q} 2>&1"
        " || {{ rm -rf {output:q}; exit 1; }}"


rule figures:
    input:
        figure_folders(FIGURES),
    output:
        directory("results/figures"),
    log:
        "results/logs/figures/publish_all.log",
    conda:
        SHELL_ENV
    threads: 1
    params:
        code=code_digest("abmilx.report.publish"),
    shell:
        "python -m abmilx.report.publish {input:q} --out-dir {output:q} > {log:q} 2>&1"
        " || {{ rm -rf {output:q}; exit 1; }}"
