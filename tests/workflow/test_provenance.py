"""Rerun triggers: each rule's code digest covers exactly what its command imports."""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

from abmilx.provenance import PACKAGE_ROOT, code_digest, import_closure, package_data
from abmilx.report.figures import KINDS


def test_every_rule_digests_the_module_its_command_runs(rule_sources, rule_commands):
    for rule, text in rule_sources.items():
        digests = re.findall(r"code=code_digest\(([^)]*)\)", text)
        assert digests == [f'"{rule_commands[rule]}"'], f"rule {rule}: code={digests}"


def test_data_files_beside_the_code_are_digested_too():
    """The tables read the paper's values from a CSV in abmilx/report: editing it reruns them."""
    paper = PACKAGE_ROOT / "report" / "paper_values.csv"
    assert paper in package_data("abmilx.report")
    assert paper not in package_data("abmilx.segmentation")


def test_reruns_follow_real_imports(rule_commands):
    """A few facts about this code base the computed sets must respect (not circular)."""

    def importers(module: str) -> set[str]:
        path = PACKAGE_ROOT / module
        return {rule for rule, command in rule_commands.items() if path in import_closure(command)}

    assert importers("segmentation/tissue.py") == {"segment_tissue"}
    assert {"segment_tissue", "tile_slide"} <= importers("geometry.py")
    assert importers("report/tables.py") == {"qc_table", "table", "tables", "coverage"}
    assert importers("report/figures/km_curves.py") == {"figure_km_curves"}
    assert importers("report/figures/draw.py") == {f"figure_{kind}" for kind in KINDS} | {
        "run_plots",
        "segmentation_overview",
    }
    assert {"train_two_stage", "train_e2e"} <= importers("training/losses.py")
    # evaluation finds a run's kind by name; the run's model.pt changes with the kind's code
    assert "evaluate_fold" in importers("kinds.py")
    assert "evaluate_fold" not in importers("e2e/train.py") | importers("training/trainer.py")
    assert "segment_tissue" not in importers("training/losses.py")
    assert "extract_features" in importers("patches/store.py")
    assert importers("e2e/c2c.py") == {"train_e2e"}


def test_closure_follows_relative_lazy_and_submodule_imports(tmp_path: Path):
    package = tmp_path / "pkg"
    files = {
        "__init__.py": "",
        "__main__.py": "from .a import f\n\ndef main():\n    from pkg.sub import b\n",
        "a.py": "from . import c\nimport os\n",
        "c.py": "from .sub.d import x\n",
        "sub/__init__.py": "",
        "sub/b.py": "",
        "sub/d.py": "from ..a import f\n",
        "unused.py": "import pkg.a\n",
    }
    for name, text in files.items():
        (package / name).parent.mkdir(parents=True, exist_ok=True)
        (package / name).write_text(text)
    closure = import_closure("pkg", package)
    assert sorted(p.relative_to(package).as_posix() for p in closure) == sorted(
        set(files) - {"unused.py"}
    )


# Imports each command module in turn in one interpreter, forgetting the package's modules in
# between (third-party ones such as torch stay loaded, which keeps this fast), and prints what
# each import loaded from the package as JSON.
PROBE = """
import importlib, json, sys
loaded = {}
for command in sys.argv[1:]:
    importlib.import_module(command + ".__main__")
    ours = [n for n in sys.modules if n.split(".")[0] == "abmilx"]
    loaded[command] = [sys.modules[n].__file__ for n in ours if sys.modules[n].__file__]
    for name in ours:
        del sys.modules[name]
print(json.dumps(loaded))
"""


def test_static_closure_covers_every_module_the_command_loads():
    """What importing a command's module really loads lies inside its static closure."""
    commands = sorted(f"abmilx.{p.parent.name}" for p in PACKAGE_ROOT.glob("*/__main__.py"))
    env = {**os.environ, "PYTHONPATH": str(PACKAGE_ROOT.parent), "OMP_NUM_THREADS": "1"}
    result = subprocess.run(
        [sys.executable, "-c", PROBE, *commands],
        env=env, capture_output=True, text=True, timeout=300, check=True,
    )  # fmt: skip
    loaded = json.loads(result.stdout)
    assert sorted(loaded) == commands
    for command, files in loaded.items():
        real = {Path(file).resolve() for file in files}
        assert PACKAGE_ROOT / "__init__.py" in real, command
        assert real <= set(import_closure(command)), (command, real - set(import_closure(command)))


def test_digest_is_of_a_command_module():
    assert len(code_digest("abmilx.report")) == 16
    assert code_digest("abmilx.report") != code_digest("abmilx.tiling")


def _copy_package(package: Path) -> Path:
    """A copy of the package's __init__ and provenance modules at ``package``."""
    package.mkdir(parents=True)
    for name in ("__init__.py", "provenance.py"):
        (package / name).write_bytes((PACKAGE_ROOT / name).read_bytes())
    return package


def _git_commit_of(package: Path) -> str:
    probe = "from abmilx.provenance import git_commit; print(git_commit())"
    env = {**os.environ, "PYTHONPATH": str(package.parent)}
    result = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, env=env, check=True
    )
    return result.stdout.strip()


def test_git_commit_is_of_the_checkout_only_when_the_package_is_tracked(tmp_path):
    """A package installed into a virtual environment that lies inside some git checkout (an
    ignored .venv/) is not that checkout's code: its commit is unknown."""
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@t", "-C", str(tmp_path)]
    subprocess.run([*git, "init", "-q"], check=True)
    (tmp_path / ".gitignore").write_text(".venv/\n")
    checkout = _copy_package(tmp_path / "src" / "abmilx")
    subprocess.run([*git, "add", "."], check=True)
    subprocess.run([*git, "commit", "-q", "-m", "c"], check=True)
    head = subprocess.run([*git, "rev-parse", "HEAD"], capture_output=True, text=True).stdout
    installed = _copy_package(tmp_path / ".venv" / "lib" / "site-packages" / "abmilx")
    assert _git_commit_of(checkout) == head.strip()
    assert _git_commit_of(installed) == "unknown"
