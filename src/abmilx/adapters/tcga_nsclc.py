"""TCGA-NSCLC subtyping: no label file exists, the label is the slide's GDC project.

Either one slide folder per project (`slide_dirs: {"TCGA-LUAD": ..., "TCGA-LUSC": ...}`) or a
manifest with a file-name and a project column (the GDC sample sheet has `File Name` and
`Project ID`) plus `slide_dir` where those files lie.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

from abmilx.adapters.common import (
    Adapted,
    Issue,
    Table,
    column_candidates,
    find_slides,
    match_by_key,
    strip_slide_suffix,
)
from abmilx.adapters.tcga import select_slides
from abmilx.sheets import Problem, SheetError

CLASSES = ("LUAD", "LUSC")
FILE_COLUMNS = ("file_name", "filename", "file", "slide_id", "slide")
PROJECT_COLUMNS = ("project_id", "project", "cases.project.project_id")


def _project_label(project: str) -> str | None:
    """'TCGA-LUAD' or 'LUAD' -> 'LUAD'; anything else -> None."""
    name = project.strip().upper().removeprefix("TCGA-")
    return name if name in CLASSES else None


def build(
    *,
    slide_dirs: Mapping[str, str | Path] | None = None,
    manifest: str | Path | None = None,
    slide_dir: str | Path | Sequence[str | Path] | None = None,
    columns: Mapping[str, str] | None = None,
    include_tissue_slides: bool = False,
    sample_types: Sequence[str] | None = None,
) -> Adapted:
    """Slide-level LUAD/LUSC labels from the project folders or the manifest's project column.

    `columns` may name the manifest's `file` and `project` columns.
    """
    if (slide_dirs is None) == (manifest is None):
        raise ValueError("give either slide_dirs (one folder per project) or manifest + slide_dir")
    adapted = Adapted("classification", CLASSES, ("slide_id", "case_id", "label"))
    if slide_dirs is not None:
        found: dict[str, Path] = {}
        label_of: dict[str, str] = {}
        for project, folder in slide_dirs.items():
            label = _project_label(project)
            if label is None:
                raise ValueError(f"slide_dirs: unknown project {project!r} (use TCGA-LUAD/LUSC)")
            for slide_id, path in find_slides(folder).items():
                if slide_id in found:
                    raise SheetError(
                        [Problem(str(path), None, None, f"slide also is {found[slide_id]}")]
                    )
                found[slide_id], label_of[slide_id] = path, label
        cases = select_slides(adapted, found, include_tissue_slides, sample_types)
        for slide_id in sorted(cases):
            adapted.slides.append(
                {
                    "slide_id": slide_id,
                    "case_id": cases[slide_id],
                    "path": str(found[slide_id]),
                    "mpp": None,
                }
            )
            adapted.labels.append(
                {"slide_id": slide_id, "case_id": cases[slide_id], "label": label_of[slide_id]}
            )
        return adapted

    if slide_dir is None:
        raise ValueError("manifest needs slide_dir, the folder holding the manifest's files")
    table = Table(manifest)
    file_column = table.find(column_candidates(columns, "file", FILE_COLUMNS), "file name")
    project_column = table.find(column_candidates(columns, "project", PROJECT_COLUMNS), "project")
    labels: dict[str, tuple[int, str]] = {}
    problems = []
    for line, row in table:
        slide_id = strip_slide_suffix(Path(row[file_column]).name)
        if slide_id in labels:
            problems.append(Problem(table.name, line, file_column, f"duplicate file {slide_id!r}"))
            continue
        label = _project_label(row[project_column])
        if label is None:
            adapted.excluded.append(
                Issue(
                    slide_id,
                    f"project {row[project_column]!r} is not TCGA-LUAD/LUSC",
                    table.name,
                    line,
                )
            )
            continue
        labels[slide_id] = (line, label)
    if problems:
        raise SheetError(problems)

    found = find_slides(slide_dir)
    cases = select_slides(adapted, found, include_tissue_slides, sample_types)
    records = {
        slide_id: {"line": line, "case_id": cases.get(slide_id, ""), "label": label}
        for slide_id, (line, label) in labels.items()
    }
    selected = {s: p for s, p in found.items() if s in cases}
    # Manifest rows of slides dropped by the DX/sample filter are not "missing files".
    dropped = {s: "slide filtered out (see excluded)" for s in found if s not in cases}
    match_by_key(adapted, selected, records, lambda s: s, table.name, "slide", dropped)
    return adapted
