"""The whole DAG on a tiny generated cohort, run by the real Snakemake in a temporary folder
(tests/tiny_workflow.py): outputs, nothing to redo, and exactly the rules whose command imports
an edited module rerun."""

import json
import math
import shutil
import subprocess
import zipfile

import pandas as pd
import pytest
import yaml
from tiny_workflow import TARGETS, snakemake, snakemake_command

from abmilx.config import REPO_ROOT
from abmilx.patches.store import PatchStore
from abmilx.provenance import import_closure

pytestmark = pytest.mark.integration


@pytest.fixture(scope="session")
def finished_run(finished_tiny_run):
    return finished_tiny_run


def test_every_stage_leaves_its_outputs(finished_run):
    results = finished_run / "results"
    assert (results / "tables" / "main.csv").exists()
    assert (results / "tables" / "main.md").exists()
    assert "ok" in (results / "tables" / "cohort.md").read_text()
    table1 = (results / "tables" / "table1.md").read_text()
    assert "| ABMIL two-stage |" in table1 and "| 83.80 ± 6.55 |" in table1
    assert (results / "tables" / "table1.tex").exists()
    for figure in [
        "attention_heatmaps",
        "umap_features",
        "attention_dynamics",
        "performance_vs_cost",
    ]:
        assert (results / "figures" / f"{figure}.png").stat().st_size > 10_000, figure
        assert (results / "figures" / f"{figure}.pdf").exists(), figure
    assert (results / "runs" / "tiny" / "abmilx_e2e" / "fold0" / "snapshots").is_dir()
    index = results / "tiles" / "tiny" / "patches.lmdb"
    with PatchStore(index) as store:  # tiling.pack: index by default, no patch copied
        assert store.is_index and store.slide_ids
        assert index.stat().st_size < store.store_path(store.slide_ids[0]).stat().st_size
    assert len(list((results / "features" / "tiny" / "r18").glob("*.pt"))) >= 8
    for experiment in ["abmil_two_stage", "abmilx_e2e"]:
        run = results / "runs" / "tiny" / experiment
        assert (run / "fold0" / "model.pt").exists()
        assert (run / "fold0" / "attention.npz").exists()
        assert (run / "predictions.csv").exists()
    benchmarks = results / "benchmarks"
    benchmarked = {p.relative_to(benchmarks).parts[0] for p in benchmarks.rglob("*.tsv")}
    assert benchmarked >= {"tile_slide", "train_e2e", "extract_features", "evaluate_fold"}


def test_qc_table_has_a_row_per_slide(finished_run):
    qc = pd.read_csv(finished_run / "results" / "qc" / "slides.tsv", sep="\t")
    sheet = pd.read_csv(finished_run / "results" / "cohort" / "tiny" / "slides.csv")
    assert sorted(qc.slide_id) == sorted(sheet.slide_id)
    assert set(qc.status) <= {"ok", "failed", "no_tissue"}
    ok = qc[qc.status == "ok"]
    assert len(ok) >= 8
    assert (ok.patches_main > 0).all() and (ok.patches_low > 0).all()
    assert (ok.tissue_area_mm2 > 0).all()
    assert set(qc.vendor.dropna()) >= {"aperio", "generic-tiff"}


def test_metrics_are_finite_and_in_range(finished_run):
    splits = pd.read_csv(finished_run / "results" / "splits" / "tiny.csv")
    n_test = (splits.split == "test").sum()
    for experiment in ["abmil_two_stage", "abmilx_e2e"]:
        metrics = json.loads(
            (finished_run / "results" / "runs" / "tiny" / experiment / "metrics.json").read_text()
        )
        auc = metrics["metrics"]["auc"]
        for key in ["point", "mean", "ci_low", "ci_high"]:
            assert math.isfinite(auc[key]) and 0.0 <= auc[key] <= 1.0, (experiment, auc)
        assert auc["ci_low"] <= auc["mean"] <= auc["ci_high"]
        assert metrics["n"] == n_test
        weights = "pretrain:ssl" if experiment == "abmilx_e2e" else "random"
        assert metrics["provenance"]["encoder_weights"] == weights
        assert metrics["cost"]["train_seconds"] > 0
    table = pd.read_csv(finished_run / "results" / "tables" / "main.csv")
    assert set(table.experiment) == {"abmil_two_stage", "abmilx_e2e"}
    main = (finished_run / "results" / "tables" / "main.md").read_text()
    assert "Encoders initialised at random (no pretrained weights were available): ABMIL" in main
    assert "stand-in for ImageNet/foundation-model weights: ABMILX E2E." in main
    summary = (finished_run / "results" / "summary.md").read_text()
    e2e = table[(table.experiment == "abmilx_e2e") & (table.metric == "auc")].iloc[0]
    quoted = f"{100 * e2e['mean']:.2f} [{100 * e2e['ci_low']:.2f}, {100 * e2e['ci_high']:.2f}]"
    assert "## tiny (subtyping, AUC)" in summary and f"`abmilx_e2e` | {quoted} |" in summary


def test_second_run_has_nothing_to_do(finished_run):
    dry = snakemake(finished_run, "-n", *TARGETS)
    assert dry.returncode == 0, dry.stderr[-4000:]
    assert "Nothing to be done" in dry.stdout + dry.stderr, dry.stdout[-4000:]


# A module of each stage; editing it must rerun exactly the rules whose command imports it.
EDITED_MODULES = [
    "cohort/texture.py",
    "segmentation/tissue.py",
    "slides.py",
    "patches/store.py",
    "splits/core.py",
    "features/extract.py",
    "models/mil/abmilx.py",
    "training/losses.py",
    "two_stage/train.py",
    "e2e/sampling.py",
    "pretrain/simclr.py",
    "evaluation/metrics.py",
    "report/tables.py",
    "report/figures/attention_heatmaps.py",
]


def rule_status(summary: str) -> dict[str, set[str]]:
    """Rule -> statuses of its outputs, from `snakemake --summary`."""
    rows = [line.split("\t") for line in summary.splitlines()]
    assert rows[0][:6] == ["output_file", "date", "rule", "log-file(s)", "status", "plan"], rows[0]
    status: dict[str, set[str]] = {}
    for row in rows[1:]:
        status.setdefault(row[2], set()).add(row[4])
    return status


@pytest.fixture(scope="module")
def edited_summaries(finished_run, tmp_path_factory) -> dict[str, dict[str, set[str]]]:
    """Edited module -> rule statuses of the finished run with a package copy where only that
    module is edited (all summaries run at once; they only read the run's metadata)."""
    started = {}
    for module in EDITED_MODULES:
        copy = tmp_path_factory.mktemp("edited")
        shutil.copytree(finished_run / "src", copy / "src")
        src = copy / "src"
        source = src / "abmilx" / module
        source.write_bytes(source.read_bytes() + b"\n# edited\n")
        command, env = snakemake_command(finished_run, "--summary", "--nolock", *TARGETS, src=src)
        started[module] = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, text=True)
    summaries = {module: process.communicate(timeout=900)[0] for module, process in started.items()}
    for module, process in started.items():
        assert process.returncode == 0, module
    return {module: rule_status(summary) for module, summary in summaries.items()}


@pytest.mark.parametrize("module", EDITED_MODULES)
def test_editing_a_module_reruns_exactly_its_importers(edited_summaries, rule_commands, module):
    expected = {
        rule
        for rule, command in rule_commands.items()
        if REPO_ROOT / "src" / "abmilx" / module in import_closure(command)
    }
    status = edited_summaries[module]
    changed = {rule for rule, states in status.items() if "params changed" in states}
    assert changed == expected & set(status), (module, changed, expected)
    assert all(states == {"params changed"} for rule, states in status.items() if rule in changed)


def test_report_collects_tables_figures_and_qc(finished_run):
    result = snakemake(finished_run, "--report", "report.zip")
    assert result.returncode == 0, result.stderr[-4000:]
    with zipfile.ZipFile(finished_run / "report.zip") as archive:
        names = "\n".join(archive.namelist())
    for collected in ["table1.md", "main.md", "attention_heatmaps.png", "slides.tsv"]:
        assert collected in names, names
    runs = sorted(
        p.parent.name for p in (finished_run / "results" / "runs").glob("*/*/metrics.json")
    )
    for experiment in runs:  # one picture per run: training curves, ROC/confusion or KM
        assert f"{experiment}.png" in names, names
    datasets = sorted(p.name for p in (finished_run / "results" / "runs").iterdir())
    for dataset in datasets:  # the segmentation overview sheet of each dataset (hashed folder)
        assert f"/{dataset}.png" in names, names


def dry_run_after(finished_run, change) -> tuple[dict[str, str], str]:
    """Job counts and output of a dry run of the finished run with its config changed by
    ``change`` (restored afterwards)."""
    config_path = finished_run / "config.yaml"
    original = config_path.read_text()
    config = yaml.safe_load(original)
    change(config)
    try:
        config_path.write_text(yaml.safe_dump(config))
        dry = snakemake(finished_run, "-n", *TARGETS)
    finally:
        config_path.write_text(original)
    output = dry.stdout + dry.stderr
    assert dry.returncode == 0, output[-4000:]
    return _job_counts(output), output


def test_a_new_grid_point_reruns_only_its_run_and_its_tables(finished_run):
    """A grid around the E2E experiment, shown in a new table: the point equal to the E2E run is
    that run, the other one is new; only its run, the new table and the aggregate rerun (table1
    and the figures, which do not show it, stay)."""

    def add_grid(config):
        config["experiments"]["heads"] = {
            "base": "abmilx_e2e",
            "datasets": ["tiny"],
            "grid": {"settings.mil_kwargs.n_heads": [4, 2]},  # abmilx_e2e has 4 heads
        }
        config["tables"]["heads"] = {"grid": "heads", "metrics": ["auc", "sparsity"]}

    jobs, output = dry_run_after(finished_run, add_grid)
    assert jobs == {
        "train_e2e": "1",
        "evaluate_fold": "1",
        "aggregate_folds": "1",
        "table": "1",
        "tables": "1",
        "run_plots": "1",  # the dataset's per-run pictures gain the new run's
        "total": "6",
    }, output[-4000:]
    assert "results/runs/tiny/heads__n_heads-2/" in output
    assert "results/runs/tiny/heads__n_heads-4/" not in output
    assert "wildcards: table=heads" in output and "table=table1" not in output


def test_a_packed_copy_instead_of_the_index_reruns_pack_tiles_not_tiling(finished_run):
    """tiling.pack reaches pack_tiles' params only: no slide is segmented or tiled again."""

    def copy(config):
        config.setdefault("tiling", {})["pack"] = "copy"

    jobs, output = dry_run_after(finished_run, copy)
    assert jobs["pack_tiles"] == "2", output[-4000:]  # tiny and tiny_pretraining
    assert not {"tile_slide", "segment_tissue"} & set(jobs), output[-4000:]
    changed = output.split("params have changed since last execution:", 1)[1].split("\n")[1]
    assert changed.strip() == "pack_tiles", output[-4000:]


def test_one_table_is_a_target_and_a_second_run_has_nothing_to_do(finished_run):
    """results/tables/table1.csv publishes the cached table alone; the partly published folder
    then reads as outdated, so results/tables publishes everything again, and then is current."""
    table = finished_run / "results" / "tables" / "table1.csv"
    before = table.read_bytes()
    table.unlink()
    built = snakemake(finished_run, "--cores", "1", "results/tables/table1.csv")
    output = built.stdout + built.stderr
    assert built.returncode == 0, output[-4000:]
    assert table.read_bytes() == before
    assert "localrule table_file:" in output and "localrule table:" not in output  # cached
    dry = snakemake(finished_run, "-n", *TARGETS)
    assert _job_counts(dry.stdout + dry.stderr) == {"tables": "1", "total": "1"}
    rebuilt = snakemake(finished_run, "--cores", "1", *TARGETS)
    assert rebuilt.returncode == 0, rebuilt.stderr[-4000:]
    dry = snakemake(finished_run, "-n", *TARGETS)
    assert "Nothing to be done" in dry.stdout + dry.stderr, dry.stdout[-4000:]


def _job_counts(output: str) -> dict[str, str]:
    counts = [line.split() for line in output.rsplit("Job stats:", 1)[1].splitlines()]
    return dict(w for w in counts if len(w) == 2 and w[1].isdigit() and w[0].isidentifier())


def test_one_figure_target_and_the_figures_folder_stay_consistent(finished_run):
    """A figure's PNG is up to date after the full run; a folder that only one figure was
    published into is not taken for the whole one: `results/figures` copies again, renders none."""
    figures = finished_run / "results" / "figures"
    dry = snakemake(finished_run, "-n", "results/figures/umap_features.png")
    assert "Nothing to be done" in dry.stdout + dry.stderr, dry.stdout[-4000:]
    shutil.rmtree(figures)
    try:
        one = snakemake(finished_run, "--cores", "1", "results/figures/attention_dynamics.png")
        assert one.returncode == 0, one.stderr[-4000:]
        assert sorted(p.name for p in figures.iterdir()) == [
            "attention_dynamics.pdf",
            "attention_dynamics.png",
        ]
        dry = snakemake(finished_run, "-n", "results/figures")
        assert _job_counts(dry.stdout + dry.stderr) == {"figures": "1", "total": "1"}
    finally:
        assert snakemake(finished_run, "--cores", "1", "results/figures").returncode == 0
    dry = snakemake(finished_run, "-n", *TARGETS)
    assert "Nothing to be done" in dry.stdout + dry.stderr, dry.stdout[-4000:]
    assert len(list(figures.glob("*.png"))) == 4


def test_pretrain_record_and_its_rerun_on_new_settings(finished_run):
    """The stand-in checkpoint says what it was trained on; new pretrain settings rerun it and
    what loads it (the E2E run), not the two-stage run on random features."""
    record = json.loads((finished_run / "results" / "pretrain" / "ssl" / "record.json").read_text())
    assert record["dataset"] == "tiny_pretraining" and record["method"] == "simclr"
    assert record["slide_ids"] and all(s.startswith("PRE-") for s in record["slide_ids"])
    assert record["n_patches"] > 0 and record["epochs"] == 2 and record["code_digest"]
    jobs, output = dry_run_after(
        finished_run, lambda config: config["pretrain"]["ssl"].update(epochs=3)
    )
    assert {"pretrain_encoder", "train_e2e"} <= set(jobs), output[-4000:]
    assert "results/runs/tiny/abmil_two_stage/fold0/model.pt" not in output
