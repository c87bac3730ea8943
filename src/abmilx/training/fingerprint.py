"""Fingerprint of everything that determines a training run, kept with its resume state.

A resume state is only reused when every part matches: the settings, the split file's rows of
the fold, the identity of the data read (feature files or patch store), the content digest of
every other file the kind reads (`Task.read_files`: encoder weights, user checkpoints), the code
(the import closure of the kind's module) and the world size. Otherwise it is discarded, never reused.
"""

from __future__ import annotations

import hashlib
import importlib.util
from pathlib import Path

import pandas as pd

from abmilx.provenance import PACKAGE, PACKAGE_ROOT, code_digest, imported_modules


def split_rows_digest(splits: str | Path, fold: int) -> str:
    """Digest of the split file's rows of `fold` (all columns, in file order)."""
    table = pd.read_csv(splits, dtype=str, keep_default_na=False)
    rows = table[table["fold"].astype(int) == int(fold)] if "fold" in table else table
    return hashlib.sha256(rows.to_csv(index=False).encode()).hexdigest()[:16]


def code_closure_digest(module: str) -> str:
    """Digest of the code a kind's module runs: `provenance.code_digest` (its import closure) for
    a module of the package; for a kind defined elsewhere (a plugin, a test), its own source plus
    the closures of the package modules it imports."""
    if module.split(".")[0] == PACKAGE:
        return code_digest(module)
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.origin:
        raise ModuleNotFoundError(f"no source for the kind's module {module!r}")
    file = Path(spec.origin)
    digest = hashlib.sha256(file.read_bytes())
    for imported in sorted(imported_modules(module, file, PACKAGE_ROOT)):
        digest.update(code_digest(imported).encode())
    return digest.hexdigest()[:16]
