"""PANDA adapter on a train.csv shaped like Kaggle's, with the official split file."""

from __future__ import annotations

import json

import pytest
from adapters_support import joined, reasons, touch, write

from abmilx.adapters import adapt
from abmilx.sheets import SheetError

TRAIN = """image_id,data_provider,isup_grade,gleason_score
0005f7aaab2800f6170c399693a96917,karolinska,0,0+0
000920ad0b612851f8e01bcc880d9b3d,karolinska,0,0+0
0018ae58b01bdadc8e347995b69f99aa,radboud,4,4+4
001c62abd11fa4b57bf7a6c603a11bb9,karolinska,4,4+4
001d865e65ef5d2579c190a0e0350d8f,radboud,5,4+5
"""
SPLIT = """case,slide,label,fold
0005f7aaab2800f6170c399693a96917,0005f7aaab2800f6170c399693a96917,0,train
0018ae58b01bdadc8e347995b69f99aa,0018ae58b01bdadc8e347995b69f99aa,4,val
001c62abd11fa4b57bf7a6c603a11bb9,001c62abd11fa4b57bf7a6c603a11bb9,4,test
001d865e65ef5d2579c190a0e0350d8f,001d865e65ef5d2579c190a0e0350d8f,5,train
"""


@pytest.fixture
def panda(tmp_path):
    ids = [line.split(",")[0] for line in TRAIN.splitlines()[1:]]
    # The second image has no file; an extra file has no label row.
    touch(tmp_path, *(f"train_images/{i}.tiff" for i in ids if not i.startswith("000920")))
    touch(
        tmp_path, "train_images/sub/ffffffffffffffffffffffffffffffff.tiff", "train_images/notes.txt"
    )
    return write(tmp_path / "train.csv", TRAIN), tmp_path / "train_images"


def test_labels_cases_and_unmatched(tmp_path, panda):
    labels, slide_dir = panda
    slides_csv, labels_csv, report = adapt(
        "panda", tmp_path / "out", labels=str(labels), slide_dir=str(slide_dir)
    )
    table = joined(slides_csv, labels_csv, "classification", list("012345"))
    grade = dict(zip(table["slide_id"], table["label"], strict=True))
    assert grade == {
        "0005f7aaab2800f6170c399693a96917": "0",
        "0018ae58b01bdadc8e347995b69f99aa": "4",
        "001c62abd11fa4b57bf7a6c603a11bb9": "4",
        "001d865e65ef5d2579c190a0e0350d8f": "5",
    }
    assert (table["case_id"] == table["slide_id"]).all()
    assert table["mpp"].isna().all()  # no override: the file's own resolution is used
    assert "split" not in table.columns
    assert reasons(report.unmatched_slides) == {
        "ffffffffffffffffffffffffffffffff": f"no label row for slide 'ffffffffffffffffffffffffffffffff' in {labels}"
    }
    assert [(i["id"], i["line"]) for i in report.unmatched_labels] == [
        ("000920ad0b612851f8e01bcc880d9b3d", 3)
    ]
    assert report.counts == {"0": 1, "4": 2, "5": 1}
    saved = json.loads((tmp_path / "out" / "report.json").read_text())
    assert saved["unmatched_labels"][0]["id"] == "000920ad0b612851f8e01bcc880d9b3d"


def test_split_file_and_mpp_per_provider(tmp_path, panda):
    labels, slide_dir = panda
    split = write(tmp_path / "panda.csv", SPLIT)
    slides_csv, labels_csv, report = adapt(
        "panda",
        tmp_path / "out",
        labels=str(labels),
        slide_dir=str(slide_dir),
        split_file=str(split),
        mpp={"radboud": 0.48},
    )
    table = joined(slides_csv, labels_csv, "classification", list("012345"))
    by_id = table.set_index("slide_id")
    assert by_id.loc["0018ae58b01bdadc8e347995b69f99aa", "split"] == "val"
    assert by_id.loc["001c62abd11fa4b57bf7a6c603a11bb9", "split"] == "test"
    assert by_id.loc["0018ae58b01bdadc8e347995b69f99aa", "mpp"] == pytest.approx(0.48)
    assert by_id["mpp"].isna().sum() == 2  # karolinska: read from the file
    assert report.unmatched_labels == []  # the fileless image is excluded by the split instead
    assert "not in the split file" in reasons(report.excluded)["000920ad0b612851f8e01bcc880d9b3d"]


def test_missing_column_names_file_and_column(tmp_path, panda):
    _, slide_dir = panda
    bad = write(tmp_path / "bad.csv", "image_id,data_provider,gleason_score\nabc,radboud,0+0\n")
    with pytest.raises(SheetError) as error:
        adapt("panda", tmp_path / "out", labels=str(bad), slide_dir=str(slide_dir))
    assert error.value.file == str(bad) and error.value.column == "isup_grade"
    assert error.value.row == 1


def test_bad_grade_and_bad_fold_name_the_line(tmp_path, panda):
    labels, slide_dir = panda
    bad = write(tmp_path / "bad.csv", TRAIN.replace("radboud,5,4+5", "radboud,6,4+5"))
    with pytest.raises(SheetError) as error:
        adapt("panda", tmp_path / "out", labels=str(bad), slide_dir=str(slide_dir))
    assert (error.value.row, error.value.column) == (6, "isup_grade")
    split = write(tmp_path / "split.csv", SPLIT.replace("4,val", "4,valid"))
    with pytest.raises(SheetError) as error:
        adapt(
            "panda", tmp_path / "o", labels=str(labels), slide_dir=str(slide_dir),
            split_file=str(split),
        )  # fmt: skip
    assert (error.value.file, error.value.row, error.value.column) == (str(split), 3, "fold")


def test_duplicate_slide_stems_are_an_error(tmp_path, panda):
    labels, slide_dir = panda
    touch(tmp_path, "train_images/copy/0005f7aaab2800f6170c399693a96917.tif")
    with pytest.raises(SheetError, match="0005f7aaab2800f6170c399693a96917"):
        adapt("panda", tmp_path / "out", labels=str(labels), slide_dir=str(slide_dir))
