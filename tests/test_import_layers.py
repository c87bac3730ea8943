"""Imports run one way: the static import graph of the package (lazy imports included, as the
rerun triggers see it) has no cycle, the training engine imports no kind, and no stage imports
another stage; so the code digest of a stage holds no other stage's files."""

from __future__ import annotations

import ast

import pytest

from abmilx.provenance import PACKAGE, PACKAGE_ROOT, import_closure, imported_modules

# Shared layers, bottom up: a shared package may import its own layer and those below it.
SHARED_LAYERS = (
    ("abmilx", "provenance", "progress", "arguments", "geometry", "runtime", "integrity", "shards"),
    ("models", "config", "settings", "slides", "sheets", "experiments", "annotations"),
    ("patches",),  # the patch store, its decoding and augmentation
    ("training",),  # the engine: trainer, Task protocol, run files
    ("kinds",),  # run kinds by name, resolved at run time
)
# Stages use any shared layer and never each other.
STAGES = (
    "adapters",
    "cohort",
    "segmentation",
    "tiling",
    "splits",
    "features",
    "pretrain",
    "two_stage",
    "e2e",
    "evaluation",
    "report",
)
# The user command and the workflow's parse-time plan sit above the stages and may call them.
TOP = ("cli", "__main__", "workflow_plan")
KIND_STAGES = ("two_stage", "e2e")


def _modules() -> dict[str, object]:
    modules = {}
    for file in PACKAGE_ROOT.rglob("*.py"):
        parts = file.relative_to(PACKAGE_ROOT.parent).with_suffix("").parts
        modules[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = file
    return modules


def _graph() -> dict[str, set[str]]:
    """Module -> package modules it imports anywhere in its source."""
    return {
        name: imported_modules(name, file, PACKAGE_ROOT) - {name}
        for name, file in _modules().items()
    }


def _type_only(file) -> set[str]:
    """Modules imported under ``if TYPE_CHECKING:`` (annotations only; never run)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(file.read_bytes())):
        if isinstance(node, ast.If) and ast.unparse(node.test).endswith("TYPE_CHECKING"):
            for statement in node.body:
                if isinstance(statement, ast.ImportFrom) and statement.module:
                    found.add(statement.module)
                    found.update(f"{statement.module}.{alias.name}" for alias in statement.names)
    return found


def _runtime_graph() -> dict[str, set[str]]:
    """`_graph` less the annotation-only imports: what runs when a module is imported."""
    files = _modules()
    return {name: targets - _type_only(files[name]) for name, targets in _graph().items()}


def _unit(module: str) -> str:
    """The first level under the package: a stage, a shared package or a top-level module."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else parts[0]


def _layer(unit: str) -> int | None:
    for level, units in enumerate(SHARED_LAYERS):
        if unit in units:
            return level
    return None


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in graph.get(node, ()):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_every_package_unit_has_a_place_in_the_layering():
    placed = {unit for units in SHARED_LAYERS for unit in units} | set(STAGES) | set(TOP)
    assert {_unit(module) for module in _modules()} - placed == set()


def test_the_import_graph_has_no_cycle():
    assert _cycles(_runtime_graph()) == []


def test_the_training_engine_imports_no_kind():
    offending = [
        (module, target)
        for module, targets in _graph().items()
        if _unit(module) == "training"
        for target in targets
        if _unit(target) in KIND_STAGES
    ]
    assert offending == []


def _may_import(unit: str, other: str) -> bool:
    """A unit imports itself, the command line anything, everyone else only shared layers at or
    below its own (stages are above them all)."""
    if unit == other or unit in TOP:
        return True
    below, own = _layer(other), _layer(unit)
    return below is not None and (own is None or below <= own)


def test_imports_run_down_the_layers():
    offending = [
        f"{module} -> {target}"
        for module, targets in _graph().items()
        for target in targets
        if not _may_import(_unit(module), _unit(target))
    ]
    assert offending == []


def test_the_checks_see_a_cycle_and_a_sideways_import():
    """The walkers catch what they are for (a guard against a check that cannot fail)."""
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert not _may_import("pretrain", "e2e") and not _may_import("training", "kinds")
    assert _may_import("pretrain", "patches") and _may_import("cli", "tiling")


@pytest.mark.parametrize(
    ("command", "foreign"),
    [
        ("features", ("e2e", "two_stage", "tiling", "segmentation")),
        ("pretrain", ("e2e", "two_stage", "features", "tiling")),
        ("two_stage", ("e2e", "features")),
        ("e2e", ("two_stage", "features", "tiling")),
        ("evaluation", ("e2e", "two_stage")),
        ("tiling", ("segmentation", "models", "training", "e2e")),
        ("segmentation", ("tiling", "models", "training")),
    ],
)
def test_a_stage_code_digest_holds_no_other_stage_file(command, foreign):
    """Editing the C2C baseline must not rerun every feature extraction (and so on), yet must
    rerun the stage that trains it: the digest a rule reruns on is its command's import
    closure."""
    files = [
        path.relative_to(PACKAGE_ROOT).as_posix() for path in import_closure(f"{PACKAGE}.{command}")
    ]
    own = {
        path.relative_to(PACKAGE_ROOT).as_posix() for path in (PACKAGE_ROOT / command).glob("*.py")
    }
    assert own - set(files) == set()  # every kind of the stage (e2e: c2c, ft) is in its digest
    assert [file for file in files if file.split("/")[0] in foreign] == []
