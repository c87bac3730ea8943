"""The official BRCA survival fold files (labels/survival_tcga_brca_3fold/fold_{0,1,2}.csv of
DearCaat/E2E-WSI-ABMILX) through the tcga_survival adapter and the split stage: each fold's test
set is the file's, the time bins from all cases are the files' `Label` column, and every
malformed file fails naming its file, line and column."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from adapters_support import joined, reasons, touch, write

from abmilx.adapters import adapt
from abmilx.config import schema_defaults
from abmilx.sheets import SheetError
from abmilx.splits.files import make_split_file

UUID = "0b1f2d3c-4a5b-6c7d-8e9f-000000000000"
N_CASES = 36
HEADER = "Study,ID,Event,Status,WSI,RNA,Label,Split"
GIVEN_ALL = schema_defaults("split") | {"scheme": "given", "given_folds": 3, "bins_from": "all"}


def slide(case: str, kind: str = "DX1") -> str:
    return f"{case}-01Z-00-{kind}.{UUID}"


def official_labels(frame: pd.DataFrame) -> np.ndarray:
    """The official datasets/data_utils.py survival_label, written out with pandas."""
    uncensored = frame.loc[frame["Status"] == 1, "Event"]
    _, edges = pd.qcut(uncensored, q=4, retbins=True, labels=False)
    edges[0], edges[-1] = frame["Event"].min() - 1e-6, frame["Event"].max() + 1e-6
    bins = pd.cut(frame["Event"], bins=edges, labels=False, right=False, include_lowest=True)
    return bins.to_numpy().astype(int), edges


@pytest.fixture
def official(tmp_path):
    """Three fold files in the official format (rows in a different order in each file), the
    GDC slide folder of their cases, and what the files say."""
    rng = np.random.default_rng(3)
    cases = [f"TCGA-B{k % 10}-A{k:03d}" for k in range(N_CASES)]
    frame = pd.DataFrame(
        {
            "ID": cases,
            "Event": np.round(rng.uniform(1.0, 150.0, N_CASES), 8),
            "Status": (rng.random(N_CASES) < 0.5).astype(int),
            "test_fold": rng.permutation(np.arange(N_CASES) % 3),
        }
    )
    frame["Label"], edges = official_labels(frame)
    # cases 0-4 have a second diagnostic slide the files list; case 5's DX2 is not listed
    frame["WSI"] = [
        ";".join(f"{slide(c, kind)}.pt" for kind in (("DX1", "DX2") if k < 5 else ("DX1",)))
        for k, c in enumerate(cases)
    ]
    files = []
    for j in range(3):
        rows = frame.sample(frac=1.0, random_state=j)
        lines = [HEADER] + [
            f"TCGA-BRCA,{r.ID},{float(r.Event)!r},{r.Status},{r.WSI},{r.ID}.csv,{r.Label},"
            f"{'test' if r.test_fold == j else 'train'}"
            for r in rows.itertuples()
        ]
        files.append(write(tmp_path / "labels" / f"fold_{j}.csv", "\n".join(lines) + "\n"))
    names = [f"{slide(c)}.svs" for c in cases] + [f"{slide(c, 'DX2')}.svs" for c in cases[:6]]
    names += [f"{slide('TCGA-ZZ-0001')}.svs"]  # a case the fold files do not have
    slide_dir = touch(tmp_path / "slides", *(f"{k:03d}/{n}" for k, n in enumerate(names)))
    return {"files": files, "frame": frame.set_index("ID"), "edges": edges, "slides": slide_dir}


def test_official_folds_round_trip_through_adapter_and_splits(tmp_path, official):
    slides_csv, labels_csv, report = adapt(
        "tcga_survival", tmp_path / "out", slide_dir=str(official["slides"]),
        fold_files=[str(f) for f in official["files"]],
    )  # fmt: skip
    frame = official["frame"]
    table = joined(slides_csv, labels_csv, "survival")
    cases = table.drop_duplicates("case_id").set_index("case_id")
    assert set(cases.index) == set(frame.index)  # outcomes from the files themselves
    assert cases["time"].to_dict() == frame["Event"].to_dict()
    assert cases["event"].to_dict() == frame["Status"].to_dict()
    first = frame.index[0]
    assert (table["case_id"] == first).sum() == 2  # both listed slides
    assert reasons(report.excluded) == {
        slide(frame.index[5], "DX2"): "not among the slides the fold files list for case "
        f"{frame.index[5]}"
    }
    assert [i["id"] for i in report.unmatched_slides] == [slide("TCGA-ZZ-0001")]

    out = tmp_path / "splits" / "brca.csv"
    splits = make_split_file(slides_csv, labels_csv, "survival", out, **GIVEN_ALL)
    all_cases = set(frame.index)
    tested = []
    for j in range(3):
        fold = splits[splits["fold"] == j]
        test = set(fold.loc[fold["split"] == "test", "case_id"])
        assert test == set(frame.index[frame["test_fold"] == j])
        assert set(fold.loc[fold["split"] == "train", "case_id"]) == all_cases - test
        tested.append(test)
        # bins from all cases: the official Label of the files, in every fold
        per_case = fold.drop_duplicates("case_id").set_index("case_id")["label"]
        assert per_case.to_dict() == frame["Label"].to_dict()
    assert set.union(*tested) == all_cases and sum(map(len, tested)) == N_CASES
    sidecar = json.loads(out.with_suffix(".json").read_text())
    assert sidecar["given_columns"] == ["split_0", "split_1", "split_2"]
    assert sidecar["settings"]["given_folds"] == 3
    assert [b["bins_from"] for b in sidecar["survival_bins"]] == ["all"] * 3
    for bins in sidecar["survival_bins"]:
        np.testing.assert_allclose(bins["edges"], official["edges"], rtol=0, atol=1e-9)

    # bins_from train: each fold's edges from its own training cases
    make_split_file(slides_csv, labels_csv, "survival", out, **GIVEN_ALL | {"bins_from": "train"})
    info = json.loads(out.with_suffix(".json").read_text())
    for j, bins in enumerate(info["survival_bins"]):
        train = frame[frame["test_fold"] != j]
        uncensored = train.loc[train["Status"] == 1, "Event"]
        expected = np.quantile(uncensored, [0.25, 0.5, 0.75])
        np.testing.assert_allclose(bins["edges"][1:-1], expected, rtol=1e-12)


def test_a_folder_of_fold_files_reads_them_by_number(tmp_path, official):
    folder = official["files"][0].parent
    by_list = adapt("tcga_survival", tmp_path / "a", slide_dir=str(official["slides"]),
                    fold_files=[str(f) for f in official["files"]])  # fmt: skip
    by_folder = adapt("tcga_survival", tmp_path / "b", slide_dir=str(official["slides"]),
                      fold_files=str(folder))  # fmt: skip
    assert by_list[1].read_text() == by_folder[1].read_text()
    official["files"][1].rename(folder / "fold_7.csv")
    with pytest.raises(SheetError, match=r"fold_0.csv ... fold_<k-1>.csv \(found: fold_0.csv, "):
        adapt("tcga_survival", tmp_path / "c", slide_dir=str(official["slides"]),
              fold_files=str(folder))  # fmt: skip


def test_clinical_outcomes_with_fold_splits(tmp_path, official):
    """With a clinical table the outcomes are its own; its cases the folds lack are left out,
    and fold cases it lacks are reported."""
    frame = official["frame"]
    a, b = frame.index[0], frame.index[1]
    clinical = write(
        tmp_path / "clinical.tsv",
        "case_submitter_id\tvital_status\tdays_to_death\tdays_to_last_follow_up\n"
        f"{a}\tDead\t913.2\t'--\n{b}\tAlive\t'--\t608.8\nTCGA-ZZ-0001\tAlive\t'--\t100\n",
    )
    slides_csv, labels_csv, report = adapt(
        "tcga_survival", tmp_path / "out", clinical=str(clinical),
        slide_dir=str(official["slides"]), fold_files=[str(f) for f in official["files"]],
    )  # fmt: skip
    cases = joined(slides_csv, labels_csv, "survival").drop_duplicates("case_id")
    cases = cases.set_index("case_id")
    assert set(cases.index) == {a, b}
    assert cases.loc[a, "time"] == pytest.approx(913.2 / 30.44) and cases.loc[a, "event"] == 1
    assert cases.loc[a, "split_0"] == ("test" if frame.loc[a, "test_fold"] == 0 else "train")
    excluded = reasons(report.excluded)
    assert excluded["TCGA-ZZ-0001"].startswith("not in the fold files")
    assert excluded[frame.index[2]] == f"no row in the clinical table {clinical}"


def edit(path, case: str, column: str, value: str) -> int:
    """Set `column` of `case`'s row in a fold file; returns the row's editor line."""
    lines = path.read_text().splitlines()
    header = lines[0].split(",")
    for number, line in enumerate(lines[1:], start=2):
        fields = line.split(",")
        if fields[1] == case:
            fields[header.index(column)] = value
            lines[number - 1] = ",".join(fields)
            path.write_text("\n".join(lines) + "\n")
            return number
    raise AssertionError(case)


def line_of(path, case: str) -> int:
    return next(n for n, line in enumerate(path.read_text().splitlines(), 1) if f",{case}," in line)


def test_malformed_fold_files_name_file_line_and_column(tmp_path, official):
    files, frame = official["files"], official["frame"]
    originals = [f.read_text() for f in files]

    def fails(expected_file, expected_line, expected_column, message):
        with pytest.raises(SheetError, match=message) as error:
            adapt("tcga_survival", tmp_path / "out", slide_dir=str(official["slides"]),
                  fold_files=[str(f) for f in files])  # fmt: skip
        assert (error.value.file, error.value.row, error.value.column) == (
            str(expected_file), expected_line, expected_column,
        )  # fmt: skip
        assert f"{expected_file}, line {expected_line}" in str(error.value)
        for file, text in zip(files, originals, strict=True):
            file.write_text(text)

    case = frame.index[3]
    line = edit(files[1], case, "Split", "tset")
    fails(files[1], line, "Split", "split must be one of")

    # missing from fold 2: named where fold 0 lists it
    kept = [row for row in originals[2].splitlines(True) if f",{case}," not in row]
    files[2].write_text("".join(kept))
    fails(files[0], line_of(files[0], case), "ID", f"case {case} is missing from fold 2")

    # test in two folds
    fold = int(frame.loc[case, "test_fold"])
    other = (fold + 1) % 3
    edit(files[other], case, "Split", "test")
    first, later = sorted((fold, other))  # named on the later fold, pointing at the first
    fails(files[later], line_of(files[later], case), "Split",
          f"test here and in fold {first} \\({files[first]} line {line_of(files[first], case)}\\)")  # fmt: skip

    line = edit(files[2], case, "Event", "99.5")
    fails(files[2], line, "Event", f"case {case} has '99.5' here but")
    status = str(1 - frame.loc[case, "Status"])
    line = edit(files[1], case, "Status", status)
    fails(files[1], line, "Status", f"case {case} has '{status}' here but")
    line = edit(files[0], case, "Status", "dead")
    fails(files[0], line, "Status", "status must be 1 \\(death\\) or 0")

    with open(files[0], "a") as handle:  # a case twice in one file
        handle.write(originals[0].splitlines()[1] + "\n")
    fails(files[0], len(originals[0].splitlines()) + 1, "ID", "listed twice \\(first on line 2\\)")
