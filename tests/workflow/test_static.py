"""Static checks of the workflow: lint, formatting, and a DAG that resolves."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from abmilx.config import REPO_ROOT
from abmilx.report.figures import KINDS

BIN = Path(sys.executable).parent
ENV = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}"}


def _run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(args, cwd=REPO_ROOT, env=ENV, capture_output=True, text=True, timeout=300)


def test_snakemake_lint_is_clean():
    result = _run(str(BIN / "snakemake"), "--lint")
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert "Lints for" not in output, output


def test_snakefmt_check_is_clean():
    result = _run(str(BIN / "snakefmt"), "--check", "Snakefile", "workflow/rules")
    assert result.returncode == 0, result.stdout + result.stderr


# Snakemake run in-process by a Python that then says whether the parse and plan imported torch.
SNAKEMAKE_REPORTING_TORCH = """
import sys
from snakemake.cli import main
try:
    main(sys.argv[1:])
finally:
    print("torch imported:", "torch" in sys.modules, file=sys.stderr)
"""


@pytest.fixture(scope="module")
def demo_dry_run(tmp_path_factory) -> str:
    """The demo's dry run in an empty folder, so that whatever results/ holds here does not
    matter: its output, ending with whether it imported torch."""
    folder = tmp_path_factory.mktemp("demo")
    (folder / "config.yaml").write_text((REPO_ROOT / "config.yaml").read_text())
    result = _run(
        sys.executable, "-c", SNAKEMAKE_REPORTING_TORCH,
        "-n", "results/tables", "results/figures", "--directory", str(folder),
    )  # fmt: skip
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    return output


def test_dry_run_of_the_demo_does_not_import_torch(demo_dry_run):
    """Parsing validates the config and resolves its experiments (grids over mil_kwargs
    included) from the schemas alone; the model zoo loads in the jobs, not in every dry run."""
    assert "torch imported: False" in demo_dry_run, demo_dry_run[-3000:]


def test_dry_run_of_the_demo_resolves_every_stage(demo_dry_run):
    output = demo_dry_run
    for rule in [
        "synthesize_slide",
        "segment_tissue",
        "tile_slide",
        "pack_tiles",
        "pretrain_encoder",
        "make_splits",
        "extract_features",
        "train_two_stage",
        "train_e2e",
        "evaluate_fold",
        "aggregate_folds",
        "tables",
        *(f"figure_{kind}" for kind in KINDS),
        "figures",
    ]:
        assert rule in output, f"{rule} missing from the dry run:\n{output}"


def _job_counts(output: str) -> dict[str, int]:
    lines = output.split("Job stats:", 1)[1].split("\n\n", 1)[0].splitlines()
    return {w[0]: int(w[1]) for w in map(str.split, lines) if len(w) == 2 and w[1].isdigit()}


def test_one_table_target_builds_that_table_and_only_its_runs(tmp_path):
    """results/tables/table7.csv: table7's grid runs (one per distinct run, the points equal to
    ablation_base being its run) and no other table, run or figure."""
    (tmp_path / "config.yaml").write_text((REPO_ROOT / "config.yaml").read_text())
    result = _run(
        str(BIN / "snakemake"), "-n", "results/tables/table7.csv", "--directory", str(tmp_path)
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    jobs = _job_counts(output)
    assert jobs["table"] == 1 and jobs["table_file"] == 1, jobs
    assert jobs["train_e2e"] == jobs["evaluate_fold"] == 8, jobs  # base + 7 other points
    for absent in ("train_two_stage", "extract_features", "tables", "figures"):
        assert absent not in jobs, jobs
    assert "results/runs/demo_subtyping/abl_heads__n_heads-1/" in output
    assert "runs/demo_subtyping/abl_heads__n_heads-8/" not in output  # = ablation_base
    assert "wildcards: table=table7" in output and "table=table5" not in output


def _adapted_cohort(tmp_path, slide_ids) -> subprocess.CompletedProcess:
    """Dry run of a cohort whose sheets the generic adapter builds from slides named by
    ``slide_ids``."""
    import numpy as np

    from abmilx.cohort.slidefile import write_slide

    image = np.full((200, 300, 3), 235, np.uint8)
    image[50:150, 50:250] = (200, 110, 180)
    labels = ["a", "b", "a", "b"]
    for slide in slide_ids:
        write_slide(tmp_path / "slides" / f"{slide}.svs", image, mpp=0.5, downsamples=(1,))
    (tmp_path / "labels.csv").write_text(
        "slide,patient,diagnosis\n"
        + "".join(
            f"{s},p{i},{label}\n"
            for i, (s, label) in enumerate(zip(slide_ids, labels, strict=True))
        )
    )
    config = tmp_path / "config.yaml"
    config.write_text(
        "datasets:\n"
        "  mine:\n"
        "    task: subtyping\n"
        "    classes: [a, b]\n"
        "    adapter:\n"
        "      name: generic\n"
        f"      options: {{labels: {tmp_path / 'labels.csv'}, slide_dir: {tmp_path / 'slides'},\n"
        "                columns: {slide_id: slide, case_id: patient, label: diagnosis}}\n"
        "experiments:\n"
        "  x: {kind: e2e, settings: {encoder_weights: random}}\n"
    )
    return _run(
        str(BIN / "snakemake"), "-n", "results/splits/mine.csv",
        "--directory", str(tmp_path), "--configfile", str(config),
    )  # fmt: skip


def test_adapted_cohort_resolves_through_the_adapter(tmp_path):
    """A dataset declared by an adapter gets its sheets from the adapt_sheets rule."""
    result = _adapted_cohort(tmp_path, ["s0", "s1", "s2", "s3"])
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert "adapt_sheets" in output and "tile_slide" in output
    assert "synthesize_slide" not in output


def test_adapt_sheets_reruns_when_a_label_file_changes(tmp_path):
    """The adapter's label file is no declared input (options name tables and folders), yet an
    edited label reaches the sheets: the rule's params carry a hash of what the adapter finds."""
    assert _adapted_cohort(tmp_path, ["s0", "s1", "s2", "s3"]).returncode == 0
    config = str(tmp_path / "config.yaml")
    sheets = ["results/cohort/mine/labels.csv"]
    run = [str(BIN / "snakemake"), "--directory", str(tmp_path), "--configfile", config]
    made = _run(*run, "--cores", "1", *sheets)
    assert made.returncode == 0, made.stdout + made.stderr
    unchanged = _run(*run, "-n", *sheets)
    assert "Nothing to be done" in unchanged.stdout + unchanged.stderr
    labels = tmp_path / "labels.csv"
    labels.write_text(labels.read_text().replace("s3,p3,b", "s3,p3,a"))
    edited = _run(*run, "-n", *sheets)
    output = edited.stdout + edited.stderr
    assert edited.returncode == 0 and "adapt_sheets" in output, output
    assert "Nothing to be done" not in output, output


def test_adapted_slide_ids_follow_the_naming_rule(tmp_path):
    """Slide ids an adapter reads from public label files become paths too."""
    result = _adapted_cohort(tmp_path, ["s0", "s1", "s2", "-s3"])
    output = result.stdout + result.stderr
    assert result.returncode != 0 and "Job stats" not in output, output
    assert "config key 'datasets/mine/adapter': slide id '-s3' is not allowed" in output
