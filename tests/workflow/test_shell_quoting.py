"""Every value a rule's shell command substitutes that could carry a name (a wildcard, a
param, an input, output or log path) is shell-quoted with Snakemake's `:q`, so that no name
or path can run as shell code, whatever the naming rule lets through."""

import ast
import re

import pytest

# Substituted as they are, on purpose: several arguments each, built from fixed words or
# quoted piece by piece where they are made (workflow/rules/common.smk).
UNQUOTED = {
    "params.launch": "training_launcher: `python` or `torchrun ... --nproc-per-node <int>`",
    "params.source": "evaluation_source: shlex-quotes each value it returns",
}
# Numbers Snakemake computes, never a name.
NUMBERS = {"threads"}


def shell_command(rule_text: str) -> str | None:
    """The rule's shell command as Snakemake sees it (its string literals joined)."""
    match = re.search(r"(?m)^    shell:\n((?:        [\"'].*\n?)+)", rule_text)
    if match is None:
        return None
    return ast.literal_eval("(" + match[1] + ")")


def fields(command: str) -> list[tuple[str, str]]:
    """(field, format spec) of every `{...}` substitution (`{{` escapes skipped)."""
    found = re.findall(r"(?<!\{)\{([A-Za-z_][\w.]*)(?::([^}]*))?\}(?!\})", command)
    return [(name, spec or "") for name, spec in found]


def test_every_rule_has_a_shell_command(rule_sources):
    missing = [rule for rule, text in rule_sources.items() if shell_command(text) is None]
    assert not missing, f"rules without a shell command the quoting test can read: {missing}"


@pytest.mark.parametrize("kind", ["wildcards", "params", "input", "output", "log"])
def test_substitutions_that_could_carry_a_name_are_quoted(rule_sources, kind):
    unquoted = []
    for rule, text in rule_sources.items():
        for name, spec in fields(shell_command(text) or ""):
            if name.split(".")[0] != kind or name in UNQUOTED:
                continue
            if not spec.endswith("q"):
                unquoted.append(f"{rule}: {{{name}}}")
    assert not unquoted, "unquoted substitutions (write {name:q}): " + ", ".join(unquoted)


def test_no_other_substitutions(rule_sources):
    """A new kind of field (resources, a global) gets a decision here, not a silent pass."""
    known = {"wildcards", "params", "input", "output", "log"}
    other = [
        f"{rule}: {{{name}}}"
        for rule, text in rule_sources.items()
        for name, _ in fields(shell_command(text) or "")
        if name.split(".")[0] not in known and name not in NUMBERS
    ]
    assert not other, f"substitutions neither quoted nor known to be numbers: {other}"


def test_the_parser_sees_quoted_and_unquoted_fields():
    command = shell_command(
        '    shell:\n        "run {wildcards.dataset} --out {output:q}"\n        " {threads}"\n'
    )
    assert fields(command) == [("wildcards.dataset", ""), ("output", "q"), ("threads", "")]


def test_a_failed_command_removes_its_own_outputs(rule_sources):
    """profiles/slurm keeps the files of failed jobs (`keep-incomplete`, so that a failed group
    job keeps the slides it finished) and Snakemake then counts them as done: every command
    removes its own outputs when it fails, so that only finished jobs leave outputs."""
    suffix = " > {log:q} 2>&1 || {{ rm -rf {output:q}; exit 1; }}"
    wrong = [rule for rule, text in rule_sources.items()
             if not (shell_command(text) or "").endswith(suffix)]  # fmt: skip
    assert not wrong, f"shell commands that do not end with {suffix!r}: {wrong}"
