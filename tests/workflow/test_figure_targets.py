"""The two figure targets on the demo config, by dry run in an empty folder: the folder builds
every declared figure, one figure's PNG builds that figure and only its inputs."""

import re

from test_static import BIN, _run

from abmilx.config import REPO_ROOT
from abmilx.report.figures import KINDS


def _jobs(tmp_path, target: str) -> tuple[dict[str, int], str]:
    (tmp_path / "config.yaml").write_text((REPO_ROOT / "config.yaml").read_text())
    result = _run(str(BIN / "snakemake"), "-n", target, "--directory", str(tmp_path))
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-4000:]
    stats = output.rsplit("Job stats:", 1)[1]
    jobs = {name: int(count) for name, count in re.findall(r"(?m)^(\w+)\s+(\d+)$", stats)}
    return jobs, output


def test_the_figures_folder_renders_every_declared_figure_and_publishes_them(tmp_path):
    jobs, _ = _jobs(tmp_path, "results/figures")
    assert {f"figure_{kind}" for kind in KINDS} <= set(jobs)
    assert jobs["figures"] == 1 and "figure" not in jobs


def test_one_figure_builds_only_its_own_inputs(tmp_path):
    jobs, output = _jobs(tmp_path, "results/figures/km_curves.png")
    figure_rules = {name for name in jobs if name.startswith("figure")}
    assert figure_rules == {"figure_km_curves", "figure"}, jobs
    # the survival runs it draws, nothing of the other datasets
    assert jobs["train_e2e"] == 1 and jobs["train_two_stage"] == 1, jobs
    assert "demo_subtyping" not in output and "demo_grading" not in output
