"""Helpers for adapter tests: empty placeholder slides (adapters match names, never open files)
and reading the written sheets back through the real validator. A uniquely named module rather
than conftest.py, so `import` cannot pick up another test folder's conftest."""

from __future__ import annotations

from pathlib import Path

from abmilx.sheets import join_labels, load_label_sheet, load_slide_sheet


def touch(root: Path, *names: str) -> Path:
    for name in names:
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"")
    return root


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def joined(slides_csv: Path, labels_csv: Path, task: str, classes=None):
    """The sheets as the workflow will read them; strict, so any mismatch fails the test."""
    slides = load_slide_sheet(slides_csv)
    labels = load_label_sheet(labels_csv, task, classes)
    table, warnings = join_labels(slides, labels, task, strict=True)
    assert warnings == []
    return table


def reasons(issues: list[dict]) -> dict[str, str]:
    return {issue["id"]: issue["reason"] for issue in issues}
