"""Provenance: code digests (Snakemake rerun triggers), config hashes and the git commit."""

from __future__ import annotations

import ast
import hashlib
import json
import subprocess
from collections.abc import Iterable, Mapping
from functools import cache
from pathlib import Path
from typing import Any

PACKAGE_ROOT = Path(__file__).resolve().parent
PACKAGE = PACKAGE_ROOT.name


DATA_SUFFIXES = (".csv", ".json", ".yaml", ".yml")


def module_file(name: str, root: Path = PACKAGE_ROOT) -> Path | None:
    """Source file of module ``name`` (``abmilx.x.y``) of the package at ``root``, or None."""
    parts = name.split(".")
    if parts[0] != root.name:
        return None
    base = root.joinpath(*parts[1:])
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def _is_package(file: Path) -> bool:
    return file.name == "__init__.py"


@cache
def imported_modules(name: str, file: Path, root: Path) -> frozenset[str]:
    """Package modules that ``file`` (module ``name``) imports anywhere, lazy imports included.

    Cached: every rule's digest walks the same shared modules, and parsing them once per
    Snakefile parse instead of once per rule saves seconds on every dry run."""
    package = name if _is_package(file) else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(file.read_bytes(), filename=str(file))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                anchor = package.split(".")
                anchor = anchor[: len(anchor) - node.level + 1]
                base = ".".join(anchor + ([node.module] if node.module else []))
            else:
                base = node.module or ""
            found.add(base)
            found.update(f"{base}.{alias.name}" for alias in node.names)  # submodules
    return frozenset(module for module in found if module_file(module, root) is not None)


def _with_parents(name: str) -> list[str]:
    """``a.b.c`` -> a, a.b, a.b.c: importing a module runs its parent packages first."""
    parts = name.split(".")
    return [".".join(parts[:i]) for i in range(1, len(parts) + 1)]


@cache
def import_closure(command_module: str, root: Path = PACKAGE_ROOT) -> tuple[Path, ...]:
    """Files of every module of the package at ``root`` that ``python -m command_module`` can
    import.

    Walks ``import``/``from ... import`` statements statically (relative and lazy ones too),
    starting from the package's ``__main__``; parent packages count as imported.
    """
    entry = command_module
    if module_file(f"{command_module}.__main__", root) is not None:
        entry = f"{command_module}.__main__"
    if module_file(entry, root) is None:
        raise ModuleNotFoundError(f"import_closure: no module {command_module!r} under {root}")
    seen: dict[str, Path] = {}
    pending = _with_parents(entry)
    while pending:
        name = pending.pop()
        if name in seen:
            continue
        file = module_file(name, root)
        if file is None:
            continue
        seen[name] = file
        for imported in imported_modules(name, file, root):
            pending.extend(_with_parents(imported))
    return tuple(sorted(set(seen.values())))


@cache
def code_digest(command_module: str) -> str:
    """Digest of the code that ``python -m command_module`` runs (its import closure).

    Snakemake does not track imported code; a rule passes this digest as a param so that editing
    any module its command imports reruns it, and editing anything else does not.
    """
    if command_module.split(".")[0] != PACKAGE:
        raise ValueError(
            f"code_digest takes the module a rule's command runs (python -m {PACKAGE}.<stage>), "
            f"got {command_module!r}"
        )
    digest = hashlib.sha256()
    for file in import_closure(command_module) + package_data(command_module):
        digest.update(file.relative_to(PACKAGE_ROOT).as_posix().encode())
        digest.update(file.read_bytes())
    return digest.hexdigest()[:16]


def package_data(command_module: str) -> tuple[Path, ...]:
    """Data files (e.g. report/paper_values.csv) beside the modules of the import closure: code
    reads them at run time, so editing one must rerun the rule like editing code."""
    folders = {file.parent for file in import_closure(command_module)}
    return tuple(
        sorted(
            file
            for folder in folders
            for file in folder.iterdir()
            if file.suffix in DATA_SUFFIXES and file.is_file()
        )
    )


def config_hash(settings: Any) -> str:
    """Stable hash of a JSON-serialisable settings object (key order does not matter)."""
    text = json.dumps(settings, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def file_sha256(path: str | Path) -> str:
    """SHA-256 of a file's bytes (what a checkpoint path stands for in a record)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


_DIGESTS: dict[tuple[str, int, int, int, int], str] = {}


def content_digest(path: str | Path) -> str:
    """SHA-256 of a file's bytes, cached within the process by path, size and times.

    Resume and rerun decisions key on what a file holds, not on its name: a checkpoint retrained
    or replaced in place at the same path is another input. The cache only saves re-reading a
    file nothing touched since: the key holds the inode and the change time, which every write
    or replacement moves even when the modification time is set back."""
    path = Path(path).resolve()
    stat = path.stat()
    key = (str(path), stat.st_size, stat.st_mtime_ns, stat.st_ctime_ns, stat.st_ino)
    if key not in _DIGESTS:
        _DIGESTS[key] = file_sha256(path)
    return _DIGESTS[key]


def files_digest(paths: Iterable[str | Path]) -> dict[str, str]:
    """{path: content digest} of the paths that are files; any other value (a weights name such
    as "imagenet" or "random") stands for itself and maps to ""."""
    return {str(path): content_digest(path) if Path(path).is_file() else "" for path in paths}


def fingerprint(parts: Mapping[str, Any]) -> dict[str, str]:
    """One short hash per named part of what saved state depends on (resume, partial outputs)."""
    return {name: config_hash(value) for name, value in parts.items()}


def changed_parts(stored: Mapping[str, str], current: Mapping[str, str]) -> list[str]:
    """Parts whose hash differs: the reason saved state is discarded."""
    return [name for name in current if stored.get(name) != current[name]]


@cache
def git_commit() -> str:
    """Commit of the checkout the package runs from, with ``-dirty`` when it has uncommitted
    changes; ``unknown`` for an installed package (its files are tracked by no repository, even
    in a virtual environment inside one) or without git."""

    def git(*args: str) -> str:
        return subprocess.run(
            ["git", *args], cwd=PACKAGE_ROOT, capture_output=True, text=True, check=True
        ).stdout.strip()

    try:
        git("ls-files", "--error-unmatch", "__init__.py")
        commit = git("rev-parse", "HEAD")
        dirty = git("status", "--porcelain", "--untracked-files=no")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return f"{commit}-dirty" if dirty else commit
