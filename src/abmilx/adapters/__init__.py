"""Adapters from the public label files of the paper's datasets to our slide and label sheets.

`adapt(name, out_dir, **options)` runs one adapter and writes `<out_dir>/slides.csv`,
`<out_dir>/labels.csv` (both checked with `abmilx.sheets`) and `<out_dir>/report.json` (the
slides and label rows left out, each with its reason).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from pathlib import Path

from abmilx.adapters import camelyon, generic, panda, tcga_brca, tcga_nsclc, tcga_survival
from abmilx.adapters.common import Adapted, Issue, Report, write_sheets

ADAPTERS: dict[str, Callable[..., Adapted]] = {
    "panda": panda.build,
    "tcga_brca": tcga_brca.build,
    "tcga_nsclc": tcga_nsclc.build,
    "tcga_survival": tcga_survival.build,
    "camelyon": camelyon.build,
    "generic": generic.build,
}

__all__ = ["ADAPTERS", "Adapted", "Issue", "Report", "adapt", "options_of"]


def options_of(name: str) -> list[str]:
    """Keyword options an adapter accepts (for error messages and the CLI)."""
    return list(inspect.signature(ADAPTERS[name]).parameters)


def adapt(name: str, out_dir: str | Path, **options) -> tuple[Path, Path, Report]:
    """Run adapter `name` with `options`; returns (slides_csv, labels_csv, report)."""
    if name not in ADAPTERS:
        raise ValueError(f"unknown adapter {name!r}; known: {', '.join(ADAPTERS)}")
    unknown = sorted(set(options) - set(options_of(name)))
    if unknown:
        raise ValueError(f"{name}: unknown option(s) {unknown}; known: {options_of(name)}")
    return write_sheets(name, ADAPTERS[name](**options), out_dir)
