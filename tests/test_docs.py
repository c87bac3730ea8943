"""The docs stand alone: a short README linking every page, and nothing outside the repository."""

import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
# Spelled in two parts so that this file does not match itself.
OUTSIDE = ("abmilx" + "-reference", "shared" + "/")
SCANNED = ("src", "workflow", "tests", "bench", "docs", "README.md", "config.yaml")


def scanned_files():
    for name in SCANNED:
        path = REPO / name
        if path.is_file():
            yield path
            continue
        for file in sorted(path.rglob("*")):
            if file.is_file() and "__pycache__" not in file.parts:
                yield file


def test_nothing_points_outside_the_repository():
    hits = []
    for file in scanned_files():
        try:
            text = file.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            continue
        for number, line in enumerate(text.splitlines(), 1):
            if any(word in line for word in OUTSIDE):
                hits.append(f"{file.relative_to(REPO)}:{number}: {line.strip()}")
    assert not hits, "references to files the repository does not hold:\n" + "\n".join(hits)


def readme_links() -> set[str]:
    text = (REPO / "README.md").read_text(encoding="utf-8")
    return set(re.findall(r"\]\((docs/[^)#\s]+\.md)(?:#[^)]*)?\)", text))


def test_readme_is_short():
    lines = (REPO / "README.md").read_text(encoding="utf-8").splitlines()
    assert len(lines) < 200, f"README.md has {len(lines)} lines; move detail to docs/"


def test_every_docs_page_is_linked_from_the_readme():
    pages = {f"docs/{page.name}" for page in (REPO / "docs").glob("*.md")}
    unlinked = sorted(pages - readme_links())
    assert not unlinked, f"docs pages not linked from README.md: {unlinked}"


def test_every_linked_docs_page_exists():
    missing = sorted(link for link in readme_links() if not (REPO / link).is_file())
    assert not missing, f"README.md links pages that do not exist: {missing}"


def anchors(page: Path) -> set[str]:
    """GitHub's heading anchors: lower case, punctuation dropped, spaces to hyphens."""
    headings = re.findall(r"^#+ (.+)$", page.read_text(encoding="utf-8"), flags=re.M)
    return {re.sub(r"[^\w\- ]", "", h.strip().lower()).replace(" ", "-") for h in headings}


def test_links_between_pages_reach_existing_files_and_headings():
    broken = []
    for page in [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]:
        text = page.read_text(encoding="utf-8")
        for target, anchor in re.findall(r"\]\(([^)#\s]*)(?:#([^)\s]*))?\)", text):
            if "://" in target:
                continue
            linked = (page.parent / target).resolve() if target else page
            if not linked.exists():
                broken.append(f"{page.name} -> {target}")
            elif anchor and linked.suffix == ".md" and anchor not in anchors(linked):
                broken.append(f"{page.name} -> {target}#{anchor}")
    assert not broken, f"broken links: {broken}"
