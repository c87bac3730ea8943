"""Files written whole or not at all (`written_whole`): what every job's last file relies on
where profiles/slurm keeps the files of failed jobs."""

import pytest

from abmilx.integrity import written_whole


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
