"""Slide and label sheets: every fault is reported with its file, editor line and column."""

import math
from pathlib import Path

import pytest

from abmilx.sheets import SheetError, join_labels, load_label_sheet, load_slide_sheet


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


@pytest.fixture
def slide_dir(tmp_path: Path) -> Path:
    (tmp_path / "slides").mkdir()
    for name in ("a.svs", "b.svs", "c.tif"):
        (tmp_path / "slides" / name).write_bytes(b"x")
    return tmp_path


def assert_fault(error: pytest.ExceptionInfo, path: Path, row: int, column: str | None) -> None:
    assert error.value.file == str(path)
    assert error.value.row == row
    assert error.value.column == column
    assert str(path) in str(error.value)
    assert f"line {row}" in str(error.value)


def test_valid_slide_sheet_resolves_paths_and_mpp(slide_dir: Path) -> None:
    sheet = write(
        slide_dir / "slides.csv",
        "slide_id,case_id,path,mpp\ns1,c1,slides/a.svs,0.25\ns2,c1,slides/b.svs,\n",
    )
    slides = load_slide_sheet(sheet)
    assert slides["slide_id"].tolist() == ["s1", "s2"]
    assert slides["path"][0] == str((slide_dir / "slides" / "a.svs").resolve())
    assert slides["mpp"][0] == 0.25
    assert math.isnan(slides["mpp"][1])


def test_missing_required_column(slide_dir: Path) -> None:
    sheet = write(slide_dir / "slides.csv", "slide_id,path\ns1,slides/a.svs\n")
    with pytest.raises(SheetError) as error:
        load_slide_sheet(sheet)
    assert_fault(error, sheet, 1, "case_id")


def test_duplicate_slide_id(slide_dir: Path) -> None:
    sheet = write(
        slide_dir / "slides.csv",
        "slide_id,case_id,path\ns1,c1,slides/a.svs\n\ns1,c2,slides/b.svs\n",
    )
    with pytest.raises(SheetError) as error:
        load_slide_sheet(sheet)
    assert_fault(error, sheet, 4, "slide_id")  # the blank line 3 still counts
    assert "first on line 2" in str(error.value)


def test_missing_value(slide_dir: Path) -> None:
    sheet = write(slide_dir / "slides.csv", "slide_id,case_id,path\ns1,,slides/a.svs\n")
    with pytest.raises(SheetError) as error:
        load_slide_sheet(sheet)
    assert_fault(error, sheet, 2, "case_id")


def test_missing_slide_file_only_when_checked(slide_dir: Path) -> None:
    sheet = write(
        slide_dir / "slides.csv",
        "slide_id,case_id,path\ns1,c1,slides/a.svs\ns2,c2,slides/gone.svs\n",
    )
    with pytest.raises(SheetError) as error:
        load_slide_sheet(sheet)
    assert_fault(error, sheet, 3, "path")
    assert len(load_slide_sheet(sheet, check_files=False)) == 2


@pytest.mark.parametrize("mpp", ["abc", "-0.5", "0", "nan"])
def test_bad_mpp(slide_dir: Path, mpp: str) -> None:
    sheet = write(
        slide_dir / "slides.csv",
        f"slide_id,case_id,path,mpp\ns1,c1,slides/a.svs,0.5\ns2,c2,slides/b.svs,{mpp}\n",
    )
    with pytest.raises(SheetError) as error:
        load_slide_sheet(sheet)
    assert_fault(error, sheet, 3, "mpp")


def test_all_problems_are_listed(slide_dir: Path) -> None:
    sheet = write(
        slide_dir / "slides.csv",
        "slide_id,case_id,path,mpp\ns1,,slides/a.svs,0.5\ns2,c2,slides/b.svs,-1\n",
    )
    with pytest.raises(SheetError) as error:
        load_slide_sheet(sheet)
    assert [(p.row, p.column) for p in error.value.problems] == [(2, "case_id"), (3, "mpp")]


def test_unknown_label(tmp_path: Path) -> None:
    sheet = write(tmp_path / "labels.csv", "slide_id,label\ns1,IDC\ns2,LCIS\n")
    with pytest.raises(SheetError) as error:
        load_label_sheet(sheet, "classification", classes=["IDC", "ILC"])
    assert_fault(error, sheet, 3, "label")


def test_duplicate_label_key(tmp_path: Path) -> None:
    sheet = write(tmp_path / "labels.csv", "case_id,label\nc1,IDC\nc1,ILC\n")
    with pytest.raises(SheetError) as error:
        load_label_sheet(sheet, "classification")
    assert_fault(error, sheet, 3, "case_id")


def test_missing_label_value(tmp_path: Path) -> None:
    sheet = write(tmp_path / "labels.csv", "slide_id,label\ns1,\n")
    with pytest.raises(SheetError) as error:
        load_label_sheet(sheet, "classification")
    assert_fault(error, sheet, 2, "label")


def test_label_sheet_without_key(tmp_path: Path) -> None:
    sheet = write(tmp_path / "labels.csv", "patient,label\np1,IDC\n")
    with pytest.raises(SheetError) as error:
        load_label_sheet(sheet, "classification")
    assert_fault(error, sheet, 1, "slide_id")


@pytest.mark.parametrize("time", ["0", "-3.5", "soon", ""])
def test_bad_survival_time(tmp_path: Path, time: str) -> None:
    sheet = write(tmp_path / "labels.csv", f"case_id,time,event\nc1,12.0,1\nc2,{time},0\n")
    with pytest.raises(SheetError) as error:
        load_label_sheet(sheet, "survival")
    assert_fault(error, sheet, 3, "time")


@pytest.mark.parametrize("event", ["2", "-1", "yes", "0.5"])
def test_bad_survival_event(tmp_path: Path, event: str) -> None:
    sheet = write(tmp_path / "labels.csv", f"case_id,time,event\nc1,12.0,{event}\n")
    with pytest.raises(SheetError) as error:
        load_label_sheet(sheet, "survival")
    assert_fault(error, sheet, 2, "event")


def test_survival_sheet_types(tmp_path: Path) -> None:
    sheet = write(tmp_path / "labels.csv", "case_id,time,event\nc1,12.5,1\nc2,30,0.0\n")
    labels = load_label_sheet(sheet, "survival")
    assert labels["time"].tolist() == [12.5, 30.0]
    assert labels["event"].tolist() == [1, 0]


def test_too_many_fields(tmp_path: Path) -> None:
    sheet = write(tmp_path / "labels.csv", "slide_id,label\ns1,IDC\ns2,ILC,extra\n")
    with pytest.raises(SheetError) as error:
        load_label_sheet(sheet, "classification")
    assert_fault(error, sheet, 3, None)


def test_bad_split_value(tmp_path: Path) -> None:
    sheet = write(tmp_path / "labels.csv", "slide_id,label,split\ns1,IDC,train\ns2,ILC,valid\n")
    with pytest.raises(SheetError) as error:
        load_label_sheet(sheet, "classification")
    assert_fault(error, sheet, 3, "split")


def three_slides(slide_dir: Path):
    """Slides s1, s2 of case c1 and s3 of case c2."""
    return load_slide_sheet(
        write(
            slide_dir / "slides.csv",
            "slide_id,case_id,path\ns1,c1,slides/a.svs\ns2,c1,slides/b.svs\ns3,c2,slides/c.tif\n",
        )
    )


def test_join_reports_unmatched_rows(slide_dir: Path) -> None:
    slides = three_slides(slide_dir)
    label_path = write(slide_dir / "labels.csv", "case_id,label\nc1,IDC\nc9,ILC\n")
    labels = load_label_sheet(label_path, "classification")
    joined, warnings = join_labels(slides, labels, "classification")
    assert joined["slide_id"].tolist() == ["s1", "s2"]
    assert joined["label"].tolist() == ["IDC", "IDC"]
    assert len(warnings) == 2
    assert "s3" in warnings[0] and "line 4" in warnings[0]
    assert "c9" in warnings[1] and str(label_path) in warnings[1] and "line 3" in warnings[1]
    with pytest.raises(SheetError) as error:
        join_labels(slides, labels, "classification", strict=True)
    assert error.value.row == 4 and error.value.column == "case_id"


def test_join_rejects_conflicting_case_ids(slide_dir: Path) -> None:
    slides = load_slide_sheet(
        write(slide_dir / "slides.csv", "slide_id,case_id,path\ns1,c1,slides/a.svs\n")
    )
    label_path = write(slide_dir / "labels.csv", "slide_id,case_id,label\ns1,c7,IDC\n")
    labels = load_label_sheet(label_path, "classification")
    with pytest.raises(SheetError) as error:
        join_labels(slides, labels, "classification")
    assert_fault(error, label_path, 2, "case_id")


def test_join_survival_gives_every_slide_its_case_outcome(slide_dir: Path) -> None:
    slides = three_slides(slide_dir)
    labels = load_label_sheet(
        write(slide_dir / "labels.csv", "case_id,time,event\nc1,10,1\nc2,20,0\n"), "survival"
    )
    joined, warnings = join_labels(slides, labels, "survival")
    assert warnings == []
    assert joined["time"].tolist() == [10.0, 10.0, 20.0]
    assert joined["event"].tolist() == [1, 1, 0]


def test_optional_segmentation_and_geojson_columns(slide_dir: Path) -> None:
    (slide_dir / "ann").mkdir()
    (slide_dir / "ann" / "a.geojson").write_text("{}")
    sheet = write(
        slide_dir / "slides.csv",
        "slide_id,case_id,path,segmentation,geojson\n"
        's1,c1,slides/a.svs,"{""saturation_threshold"": 20, ""closing_um"": 8}",ann/a.geojson\n'
        "s2,c1,slides/b.svs,,\n",
    )
    slides = load_slide_sheet(sheet)
    assert slides["segmentation"].tolist() == ['{"closing_um": 8, "saturation_threshold": 20}', ""]
    assert slides["geojson"].tolist() == [str((slide_dir / "ann" / "a.geojson").resolve()), ""]
    plain = write(slide_dir / "plain.csv", "slide_id,case_id,path\ns1,c1,slides/a.svs\n")
    assert "segmentation" not in load_slide_sheet(plain).columns


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ('"{""saturation_threshold"": 20"', "not valid JSON"),
        ('"[20]"', "must be a JSON object"),
        ('"{""saturation_treshold"": 20}"', "unknown segmentation setting(s) saturation_treshold"),
        ('"{""strict"": true}"', "unknown segmentation setting(s) strict"),
        ('"{""slides_per_job"": 5}"', "unknown segmentation setting(s) slides_per_job"),
        ('"{""working_mpp"": -1}"', "setting 'working_mpp'"),
        ('"{""median_kernel"": ""7""}"', "setting 'median_kernel': '7' is not of type 'integer'"),
    ],
)
def test_bad_segmentation_overrides(slide_dir: Path, value: str, message: str) -> None:
    sheet = write(
        slide_dir / "slides.csv",
        f"slide_id,case_id,path,segmentation\ns1,c1,slides/a.svs,\ns2,c1,slides/b.svs,{value}\n",
    )
    with pytest.raises(SheetError) as error:
        load_slide_sheet(sheet)
    assert_fault(error, sheet, 3, "segmentation")
    assert message in str(error.value)


def test_missing_geojson_file(slide_dir: Path) -> None:
    sheet = write(
        slide_dir / "slides.csv", "slide_id,case_id,path,geojson\ns1,c1,slides/a.svs,nope.geojson\n"
    )
    with pytest.raises(SheetError) as error:
        load_slide_sheet(sheet)
    assert_fault(error, sheet, 2, "geojson")
    assert "GeoJSON file 'nope.geojson' does not exist" in str(error.value)
    assert load_slide_sheet(sheet, check_files=False)["geojson"][0].endswith("nope.geojson")


@pytest.mark.parametrize(
    ("loader", "header", "what"),
    [
        (load_slide_sheet, "slide_id,case_id,path\n", "slides"),
        (lambda path: load_label_sheet(path, "classification"), "slide_id,label\n", "labels"),
        (lambda path: load_label_sheet(path, "survival"), "case_id,time,event\n\n", "labels"),
    ],
)
def test_header_only_sheet_has_no_rows(tmp_path: Path, loader, header, what) -> None:
    sheet = write(tmp_path / "sheet.csv", header)
    with pytest.raises(SheetError, match=f"sheet.csv: no rows: the sheet lists no {what}"):
        loader(sheet)


@pytest.mark.parametrize(
    ("name", "text", "found", "expected"),
    [
        ("s.csv", "slide_id;label\ns1;a\n", "semicolon", "comma"),
        ("s.csv", "slide_id\tlabel\ns1\ta\n", "tab", "comma"),
        ("s.tsv", "slide_id,label\ns1,a\n", "comma", "tab"),
    ],
)
def test_other_delimiter_is_named(tmp_path: Path, name, text, found, expected) -> None:
    sheet = write(tmp_path / name, text)
    with pytest.raises(SheetError) as error:
        load_label_sheet(sheet, "classification")
    assert_fault(error, sheet, 1, None)
    assert f"the sheet is {found}-separated" in str(error.value)
    assert f"write it {expected}-separated" in str(error.value)


def test_case_with_two_labels_names_both_rows(slide_dir: Path) -> None:
    slides = three_slides(slide_dir)
    labels_csv = write(slide_dir / "labels.csv", "slide_id,label\ns1,a\ns3,b\ns2,b\n")
    labels = load_label_sheet(labels_csv, "classification")
    with pytest.raises(SheetError) as error:
        join_labels(slides, labels, "classification", one_label_per_case=True)
    assert_fault(error, labels_csv, 4, "label")
    assert "case 'c1' has two labels: 'b' for slide 's2' here and 'a' for slide 's1' on line 2" in (
        str(error.value)
    )
    # Per-slide labels (a patient's lymph nodes) are allowed when the task says so.
    joined, _ = join_labels(slides, labels, "classification")
    assert joined["label"].tolist() == ["a", "b", "b"]


def test_given_fold_columns(tmp_path: Path) -> None:
    """One split column per given fold, split_0 ... split_<k-1>, each value checked."""
    sheet = write(
        tmp_path / "labels.csv",
        "case_id,time,event,split_0,split_1\nc1,10,1,train,test\nc2,5,0,test,train\n",
    )
    labels = load_label_sheet(sheet, "survival")
    assert labels[["split_0", "split_1"]].values.tolist() == [["train", "test"], ["test", "train"]]
    bad = write(
        tmp_path / "bad.csv",
        "case_id,time,event,split_0,split_1\nc1,10,1,train,test\nc2,5,0,test,tests\n",
    )
    with pytest.raises(SheetError) as error:
        load_label_sheet(bad, "survival")
    assert_fault(error, bad, 3, "split_1")
    gap = write(tmp_path / "gap.csv", "case_id,time,event,split_0,split_2\nc1,10,1,train,test\n")
    with pytest.raises(SheetError, match=r"split_0 \.\.\. split_<k-1>") as error:
        load_label_sheet(gap, "survival")
    assert_fault(error, gap, 1, "split_0")
    both = write(tmp_path / "both.csv", "case_id,time,event,split,split_0\nc1,10,1,train,test\n")
    with pytest.raises(SheetError, match="not both") as error:
        load_label_sheet(both, "survival")
    assert_fault(error, both, 1, "split_0")
