"""Files written whole or not at all (`written_whole`): what every job's last file relies on
where profiles/slurm keeps the files of failed jobs."""

import pytest

from abmilx.integrity import DamagedFileError, read_json_object, written_whole


def test_a_finished_block_renames_the_file_into_place(tmp_path):
    path = tmp_path / "sub" / "record.json"
    path.parent.mkdir()
    path.write_text("old")
    with written_whole(path) as partial:
        partial.write_text("new")
        assert path.read_text() == "old"  # readers see the old file until the block ends
    assert path.read_text() == "new" and sorted(p.name for p in path.parent.iterdir()) == [
        "record.json"
    ]


def test_a_failed_block_leaves_neither_file(tmp_path):
    path = tmp_path / "new" / "record.json"  # its folder is made too
    with pytest.raises(RuntimeError, match="cut off"), written_whole(path) as partial:
        partial.write_text("half")
        raise RuntimeError("cut off")
    assert list(path.parent.iterdir()) == []


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("", "not valid JSON (Expecting value: line 1 column 1 (char 0))"),
        ('{"status": "ok"', "not valid JSON (Expecting ',' delimiter"),
        ("[1, 2]", "holds a JSON list, not an object"),
    ],
)
def test_a_damaged_json_record_is_named_with_what_is_wrong(tmp_path, text, problem):
    path = tmp_path / "slide_3.json"
    path.write_text(text)
    with pytest.raises(DamagedFileError) as raised:
        read_json_object(path)
    assert str(raised.value).startswith(f"{path}: {problem}")
    path.write_text('{"status": "ok"}')
    assert read_json_object(path) == {"status": "ok"}
