"""Every `snakemake ...` and `abmilx ...` command in the fenced code blocks of README.md and
docs/*.md runs: Snakemake commands as dry runs (`-n` added) on the demo config they are written
for, `abmilx validate` for real (it is a dry run), other abmilx subcommands as `--help` when they
need a finished run. Commands that cannot run without results are skipped by name, with why."""

import os
import re
import shlex
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from abmilx.config import REPO_ROOT

BIN = Path(sys.executable).parent
PAGES = [REPO_ROOT / "README.md", *sorted((REPO_ROOT / "docs").glob("*.md"))]
# Commands that need a finished run: (pattern on the command, why it is not run here).
NEEDS_RESULTS = [
    (r"^snakemake .*--report\b", "a report collects the results of a finished run"),
    (
        r"--configfile workflow/configs/paper/",
        "the paper configs read the public datasets' label files, not downloaded here",
    ),
]
# abmilx subcommands that only read what a finished run wrote: their arguments are checked by
# `--help` (the subcommand exists); validate is itself a dry run and runs for real.
RUN_FOR_REAL = {"validate"}


def commands() -> dict[str, str]:
    """Command line -> where it is written (page and line), from every fenced code block."""
    found = {}
    for page in PAGES:
        text = page.read_text()
        for block in re.finditer(r"(?ms)^```([^\n]*)\n(.*?)^```", text):
            if block[1].strip() == "text":  # printed output (the performance page), no commands
                continue
            first_line = text[: block.start(2)].count("\n") + 1
            joined = re.sub(r"\\\n\s*", " ", block[2])  # continuation lines
            for offset, line in enumerate(joined.splitlines()):
                line = line.strip().removeprefix("$ ")
                if line.split(" ", 1)[0] not in ("snakemake", "abmilx"):
                    continue
                command = shlex.join(shlex.split(line, comments=True))
                found.setdefault(command, f"{page.name}:{first_line + offset}")
    return found


COMMANDS = commands()


def skip_reason(command: str) -> str | None:
    return next((why for pattern, why in NEEDS_RESULTS if re.search(pattern, command)), None)


def runnable(command: str, workdir: Path) -> list[str]:
    """The command as it runs here: dry runs against the Snakefile of this checkout; a config
    file the command names is the checkout's, or the demo config where the checkout has none
    (the README's my.yaml)."""
    words = shlex.split(command)
    for word in words:
        if word.endswith((".yaml", ".yml")) and not (workdir / word).exists():
            source = REPO_ROOT / word if (REPO_ROOT / word).is_file() else REPO_ROOT / "config.yaml"
            (workdir / word).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(source, workdir / word)
    if words[0] == "snakemake":
        return [str(BIN / "snakemake"), "--snakefile", str(REPO_ROOT / "Snakefile"),
                *words[1:], "-n"]  # fmt: skip
    if words[1] in RUN_FOR_REAL:
        return [str(BIN / "abmilx"), *words[1:]]
    return [str(BIN / "abmilx"), words[1], "--help"]


def run(command: str, workdir: Path) -> subprocess.CompletedProcess:
    workdir.mkdir(parents=True)
    shutil.copy(REPO_ROOT / "config.yaml", workdir / "config.yaml")
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}"}
    return subprocess.run(
        runnable(command, workdir), cwd=workdir, env=env, capture_output=True, text=True,
        timeout=900,
    )  # fmt: skip


@pytest.fixture(scope="module")
def outcomes(tmp_path_factory) -> dict[str, subprocess.CompletedProcess]:
    """Every runnable command, four at a time (each is mostly Snakemake parsing the demo)."""
    root = tmp_path_factory.mktemp("readme")
    todo = [command for command in COMMANDS if skip_reason(command) is None]
    with ThreadPoolExecutor(4) as pool:
        results = pool.map(lambda item: run(item[1], root / str(item[0])), enumerate(todo))
    return dict(zip(todo, results, strict=True))


def test_the_pages_have_commands():
    assert any(command.startswith("snakemake ") for command in COMMANDS)
    assert any(command.startswith("abmilx ") for command in COMMANDS)


@pytest.mark.parametrize("command", list(COMMANDS), ids=list(COMMANDS.values()))
def test_command_runs(outcomes, command):
    if (why := skip_reason(command)) is not None:
        pytest.skip(f"{COMMANDS[command]} `{command}`: {why}")
    result = outcomes[command]
    assert result.returncode == 0, (
        f"{COMMANDS[command]} `{command}` failed:\n{result.stdout[-2000:]}{result.stderr[-3000:]}"
    )
