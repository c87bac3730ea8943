"""Provenance: code digests (Snakemake rerun triggers), config hashes and the git commit."""

from __future__ import annotations

import hashlib
import json
import subprocess
from functools import cache
from pathlib import Path
from typing import Any

PACKAGE_ROOT = Path(__file__).resolve().parent


def code_digest(*modules: str) -> str:
    """Digest of the named package paths (files or directories relative to ``src/abmilx``).

    Snakemake does not track imported code; a rule passes this digest as a param so that editing
    the code of its stage reruns that stage and nothing else.
    """
    digest = hashlib.sha256()
    for module in sorted(modules):
        path = PACKAGE_ROOT / module
        if not path.exists():
            raise FileNotFoundError(f"code_digest: no module {module!r} under {PACKAGE_ROOT}")
        files = sorted(path.rglob("*.py")) if path.is_dir() else [path]
        for file in files:
            digest.update(str(file.relative_to(PACKAGE_ROOT)).encode())
            digest.update(file.read_bytes())
    return digest.hexdigest()[:16]


def config_hash(settings: Any) -> str:
    """Stable hash of a JSON-serialisable settings object (key order does not matter)."""
    text = json.dumps(settings, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


@cache
def git_commit() -> str:
    """Commit of the working tree, with ``-dirty`` when it has uncommitted changes."""
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=PACKAGE_ROOT,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=PACKAGE_ROOT,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return f"{commit}-dirty" if dirty else commit
