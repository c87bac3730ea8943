# ABMILX reproduction workflow. `snakemake --cores all results/tables results/figures`.
# The DAG: cohort -> segmentation -> tiling -> [pretrain ->] splits / features -> two_stage / e2e -> evaluation
# -> report. Each stage is one rule file below and one sub-package of src/abmilx/.

from pathlib import Path

from abmilx.config import read_yaml

# Config files through our loader first: a YAML mistake names file, line and column, and a key
# given twice fails instead of keeping its later value (Snakemake's loader does neither).
for _file in [*workflow.overwrite_configfiles, "config.yaml"]:
    if Path(_file).is_file():
        read_yaml(_file)


configfile: "config.yaml"


report: "workflow/report/workflow.rst"


include: "workflow/rules/common.smk"


wildcard_constraints:
    dataset=name_pattern(ALL_DATASETS),
    slide=r"[^/]+",
    file=r"[^/]+\.(svs|tif)",
    fold=r"\d+",
    experiment=name_pattern(list(config["experiments"])),
    table=name_pattern([*TABLE_PLANS, "coverage"]),


include: "workflow/rules/cohort.smk"
include: "workflow/rules/segmentation.smk"
include: "workflow/rules/tiling.smk"
include: "workflow/rules/pretrain.smk"
include: "workflow/rules/splits.smk"
include: "workflow/rules/features.smk"
include: "workflow/rules/two_stage.smk"
include: "workflow/rules/e2e.smk"
include: "workflow/rules/evaluation.smk"
include: "workflow/rules/report.smk"
include: "workflow/rules/figures.smk"


rule all:
    default_target: True
    input:
        "results/tables",
        "results/figures",
        "results/qc/slides.tsv",
        expand("results/qc/segmentation/{dataset}.png", dataset=DATASETS),
        expand("results/report/{dataset}", dataset=DATASETS),
        [f for d in DATASETS for f in run_model_files(d) + lost_feature_files(d)],
