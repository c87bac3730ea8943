"""Every hostile case of tests/hostile_files.py ends as recorded there: damaged and lost files
are named, saved state from changed inputs is discarded, nothing dies on a signal."""

import pytest
from hostile_files import CASES, make_base, run_case


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    return make_base(tmp_path_factory.mktemp("hostile_base"))


@pytest.mark.parametrize("name", sorted(CASES))
def test_hostile_case(name, base, tmp_path):
    got, last_line = run_case(name, base, tmp_path)
    assert got == CASES[name].expected, last_line
