"""Fingerprint of everything that determines a training run, kept with its resume state.

A resume state is only reused when every part matches: the settings, the split file's rows of
the fold, the identity of the data read (feature files or patch store), the code (the import
closure of the kind's module) and the world size. Otherwise it is discarded, never reused.
"""

from __future__ import annotations

import ast
import hashlib
import importlib.util
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pandas as pd

from abmilx.provenance import config_hash


def split_rows_digest(splits: str | Path, fold: int) -> str:
    """Digest of the split file's rows of `fold` (all columns, in file order)."""
    table = pd.read_csv(splits, dtype=str, keep_default_na=False)
    rows = table[table["fold"].astype(int) == int(fold)] if "fold" in table else table
    return hashlib.sha256(rows.to_csv(index=False).encode()).hexdigest()[:16]


def _module_file(name: str) -> Path | None:
    spec = importlib.util.find_spec(name)
    return Path(spec.origin) if spec is not None and spec.origin else None


def _imported_names(tree: ast.AST, package: str) -> set[str]:
    """`abmilx.*` modules an AST imports, anywhere (lazy imports in functions too)."""
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                base = f"{parent}.{base}" if base else parent
            names.add(base)
            names.update(f"{base}.{alias.name}" for alias in node.names)
    return {name for name in names if name.split(".")[0] == "abmilx"}


def code_closure(module: str) -> dict[str, Path]:
    """Source files of `module` and of what it imports from abmilx, transitively, by name."""
    seen: dict[str, Path] = {}
    todo = [module]
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        try:
            path = _module_file(name)
        except (ModuleNotFoundError, ValueError):  # not importable by that name
            path = None
        if path is None or path.suffix != ".py":
            continue
        seen[name] = path
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        parents = [".".join(name.split(".")[:k]) for k in range(1, name.count(".") + 1)]
        todo.extend(parents)
        todo.extend(_imported_names(ast.parse(path.read_bytes()), package))
    return seen


def code_closure_digest(module: str) -> str:
    """Digest of `code_closure(module)`: changes when any file the module depends on does."""
    seen = code_closure(module)
    digest = hashlib.sha256()
    for name in sorted(seen):
        digest.update(name.encode())
        digest.update(seen[name].read_bytes())
    return digest.hexdigest()[:16]


def fingerprint(parts: Mapping[str, Any]) -> dict[str, str]:
    """One short hash per named part."""
    return {name: config_hash(value) for name, value in parts.items()}


def changed_parts(stored: Mapping[str, str], current: Mapping[str, str]) -> list[str]:
    """Parts whose hash differs."""
    return [name for name in current if stored.get(name) != current[name]]
