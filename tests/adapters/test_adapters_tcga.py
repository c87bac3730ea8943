"""TCGA adapters: BRCA subtyping, NSCLC by project, survival from GDC and cBioPortal tables."""

from __future__ import annotations

import pytest
from adapters_support import joined, reasons, touch, write

from abmilx.adapters import adapt
from abmilx.sheets import SheetError

UUID = "0b1f2d3c-4a5b-6c7d-8e9f-000000000000"
A, B, C, D = "TCGA-A1-A0SB", "TCGA-A2-A04P", "TCGA-AR-A1AQ", "TCGA-E2-A15K"

# GDC clinical.tsv: one row per treatment, '--' for missing values.
GDC_BRCA = f"""case_id\tcase_submitter_id\tproject_id\tprimary_diagnosis\ttreatment_type
u1\t{A}\tTCGA-BRCA\tInfiltrating duct carcinoma, NOS\tRadiation Therapy, NOS
u1\t{A}\tTCGA-BRCA\tInfiltrating duct carcinoma, NOS\tPharmaceutical Therapy, NOS
u2\t{B}\tTCGA-BRCA\tLobular carcinoma, NOS\tRadiation Therapy, NOS
u3\t{C}\tTCGA-BRCA\tMucinous adenocarcinoma\tRadiation Therapy, NOS
u4\t{D}\tTCGA-BRCA\t'--\t'--
u5\tTCGA-OL-A5RW\tTCGA-BRCA\tInfiltrating duct carcinoma, NOS\t'--
"""
CBIO_BRCA = f"""#Patient Identifier\tHistological Type
#Patient identifier\tText
#STRING\tSTRING
#1\t1
PATIENT_ID\tHISTOLOGICAL_TYPE
{A}\tInfiltrating Ductal Carcinoma
{B}\tInfiltrating Lobular Carcinoma
{C}\tMixed Histology (please specify)
"""


def slide(case: str, kind: str = "DX1", sample: str = "01") -> str:
    return f"{case}-{sample}Z-00-{kind}.{UUID}.svs"


@pytest.fixture
def brca_slides(tmp_path):
    names = [slide(A), slide(A, "DX2"), slide(A, "TS1"), slide(B), slide(C), slide(D)]
    names += [slide("TCGA-XX-0001"), "readme_scan.svs"]
    return touch(tmp_path, *(f"{UUID[:8]}-{i}/{n}" for i, n in enumerate(names)))


def test_brca_gdc_table(tmp_path, brca_slides):
    clinical = write(tmp_path / "clinical.tsv", GDC_BRCA)
    slides_csv, labels_csv, report = adapt(
        "tcga_brca", tmp_path / "out", clinical=str(clinical), slide_dir=str(brca_slides)
    )
    table = joined(slides_csv, labels_csv, "classification", ["IDC", "ILC"])
    assert sorted(table["slide_id"]) == sorted(
        s.removesuffix(".svs") for s in (slide(A), slide(A, "DX2"), slide(B))
    )
    assert dict(zip(table["case_id"], table["label"], strict=False)) == {A: "IDC", B: "ILC"}
    excluded = reasons(report.excluded)
    assert "not one of ('IDC', 'ILC')" in excluded[C]
    assert excluded[D] == "histological type is missing"
    assert "include_tissue_slides is off" in excluded[slide(A, "TS1").removesuffix(".svs")]
    assert excluded[slide(C).removesuffix(".svs")].startswith(f"case {C}:")
    unmatched = reasons(report.unmatched_slides)
    assert unmatched["readme_scan"] == "file name is not a TCGA slide barcode"
    assert "TCGA-XX-0001" in unmatched[slide("TCGA-XX-0001").removesuffix(".svs")]
    assert [(i["id"], i["line"]) for i in report.unmatched_labels] == [("TCGA-OL-A5RW", 7)]


def test_brca_cbioportal_table_with_tissue_slides(tmp_path, brca_slides):
    clinical = write(tmp_path / "data_clinical_patient.txt", CBIO_BRCA)
    slides_csv, labels_csv, report = adapt(
        "tcga_brca", tmp_path / "out", clinical=str(clinical), slide_dir=str(brca_slides),
        include_tissue_slides=True,
    )  # fmt: skip
    table = joined(slides_csv, labels_csv, "classification", ["IDC", "ILC"])
    assert (table["case_id"] == A).sum() == 3  # DX1, DX2 and the frozen TS1
    assert report.counts == {"IDC": 3, "ILC": 1}
    # Lines count the four '#' lines: the row of C is line 8 of the file.
    assert [(i["id"], i["line"]) for i in report.excluded if i["id"] == C] == [(C, 8)]


def test_brca_conflicting_rows_exclude_the_case(tmp_path, brca_slides):
    clinical = write(
        tmp_path / "clinical.tsv",
        GDC_BRCA.replace(
            "Infiltrating duct carcinoma, NOS\tPharm", "Lobular carcinoma, NOS\tPharm"
        ),
    )
    _, _, report = adapt(
        "tcga_brca", tmp_path / "out", clinical=str(clinical), slide_dir=str(brca_slides)
    )
    assert "disagree" in reasons(report.excluded)[A]


def test_brca_missing_histology_column(tmp_path, brca_slides):
    clinical = write(tmp_path / "clinical.tsv", f"case_submitter_id\tgender\n{A}\tfemale\n")
    with pytest.raises(SheetError) as error:
        adapt("tcga_brca", tmp_path / "out", clinical=str(clinical), slide_dir=str(brca_slides))
    assert error.value.file == str(clinical) and error.value.column == "histological_type"
    assert "primary_diagnosis" in str(error.value)


def test_nsclc_from_project_folders(tmp_path):
    touch(tmp_path, f"luad/{slide('TCGA-05-4244')}", f"luad/{slide('TCGA-05-4249', 'DX2')}")
    touch(tmp_path, f"lusc/{slide('TCGA-18-3406')}", f"lusc/{slide('TCGA-18-3406', 'BS1')}")
    slides_csv, labels_csv, report = adapt(
        "tcga_nsclc", tmp_path / "out",
        slide_dirs={"TCGA-LUAD": str(tmp_path / "luad"), "TCGA-LUSC": str(tmp_path / "lusc")},
    )  # fmt: skip
    table = joined(slides_csv, labels_csv, "classification", ["LUAD", "LUSC"])
    assert dict(zip(table["case_id"], table["label"], strict=True)) == {
        "TCGA-05-4244": "LUAD", "TCGA-05-4249": "LUAD", "TCGA-18-3406": "LUSC",
    }  # fmt: skip
    assert list(reasons(report.excluded)) == [slide("TCGA-18-3406", "BS1").removesuffix(".svs")]


def test_nsclc_from_gdc_sample_sheet(tmp_path):
    names = [slide("TCGA-05-4244"), slide("TCGA-18-3406"), slide("TCGA-22-0944")]
    touch(tmp_path, *(f"gdc/{i}/{n}" for i, n in enumerate(names)))
    sheet = "File ID\tFile Name\tData Category\tProject ID\tCase ID\n" + "".join(
        f"f{i}\t{n}\tBiospecimen\t{p}\t{n[:12]}\n"
        for i, (n, p) in enumerate(
            [(names[0], "TCGA-LUAD"), (names[1], "TCGA-LUSC"), (slide("TCGA-44-2655"), "TCGA-LUAD"),
             (slide("TCGA-A1-A0SB"), "TCGA-BRCA")]
        )
    )  # fmt: skip
    manifest = write(tmp_path / "gdc_sample_sheet.tsv", sheet)
    slides_csv, labels_csv, report = adapt(
        "tcga_nsclc", tmp_path / "out", manifest=str(manifest), slide_dir=str(tmp_path / "gdc")
    )
    table = joined(slides_csv, labels_csv, "classification", ["LUAD", "LUSC"])
    assert sorted(table["label"]) == ["LUAD", "LUSC"]
    assert list(reasons(report.unmatched_slides)) == [names[2].removesuffix(".svs")]
    assert [(i["id"], i["line"]) for i in report.unmatched_labels] == [
        (slide("TCGA-44-2655").removesuffix(".svs"), 4)
    ]
    assert "TCGA-BRCA" in reasons(report.excluded)[slide("TCGA-A1-A0SB").removesuffix(".svs")]


GDC_SURVIVAL = f"""case_submitter_id\tvital_status\tdays_to_death\tdays_to_last_follow_up
{A}\tDead\t913.2\t'--
{B}\tAlive\t'--\t300
{B}\tAlive\t'--\t608.8
{C}\tAlive\t'--\t0
{D}\tDead\t'--\t'--
TCGA-OL-A5RW\tAlive\t'--\t100
"""


def test_survival_gdc(tmp_path, brca_slides):
    clinical = write(tmp_path / "clinical.tsv", GDC_SURVIVAL)
    slides_csv, labels_csv, report = adapt(
        "tcga_survival", tmp_path / "out", clinical=str(clinical), slide_dir=str(brca_slides)
    )
    table = joined(slides_csv, labels_csv, "survival")
    cases = table.drop_duplicates("case_id").set_index("case_id")
    assert cases.loc[A, "time"] == pytest.approx(913.2 / 30.44) and cases.loc[A, "event"] == 1
    assert cases.loc[B, "time"] == pytest.approx(608.8 / 30.44) and cases.loc[B, "event"] == 0
    assert (table["case_id"] == A).sum() == 2  # both DX slides of the case
    excluded = reasons(report.excluded)
    assert excluded[C] == "survival time 0 months is not positive"
    assert excluded[D] == "dead but days_to_death is missing"
    assert report.counts == {"events": 1, "censored": 1}
    assert [i["id"] for i in report.unmatched_labels] == ["TCGA-OL-A5RW"]


def test_survival_cbioportal(tmp_path, brca_slides):
    clinical = write(
        tmp_path / "data_clinical_patient.txt",
        f"#header\nPATIENT_ID\tOS_STATUS\tOS_MONTHS\n{A}\t1:DECEASED\t30.0\n"
        f"{B}\t0:LIVING\t20.5\n{C}\t0:LIVING\t-2\n{D}\t0:LIVING\t[Not Available]\n",
    )
    slides_csv, labels_csv, report = adapt(
        "tcga_survival", tmp_path / "out", clinical=str(clinical), slide_dir=str(brca_slides)
    )
    cases = joined(slides_csv, labels_csv, "survival").drop_duplicates("case_id")
    assert dict(zip(cases["case_id"], zip(cases["time"], cases["event"], strict=True),
                    strict=True)) == {A: (30.0, 1), B: (20.5, 0)}  # fmt: skip
    excluded = reasons(report.excluded)
    assert "not positive" in excluded[C] and excluded[D] == "OS_MONTHS is missing"


def test_survival_missing_column_and_bad_barcode(tmp_path, brca_slides):
    clinical = write(tmp_path / "c.tsv", f"case_submitter_id\tvital_status\n{A}\tDead\n")
    with pytest.raises(SheetError) as error:
        adapt("tcga_survival", tmp_path / "o", clinical=str(clinical), slide_dir=str(brca_slides))
    assert (error.value.file, error.value.column) == (str(clinical), "days_to_death")
    clinical = write(tmp_path / "c.tsv", GDC_SURVIVAL.replace(B, "B-17", 1))
    with pytest.raises(SheetError) as error:
        adapt("tcga_survival", tmp_path / "o", clinical=str(clinical), slide_dir=str(brca_slides))
    assert (error.value.row, error.value.column) == (3, "case_submitter_id")


# The official split file's shape (labels/subtyping_tcga_brca_resample.csv, case, slide, label,
# fold): a row repeated (its oversampling) counts once; C is excluded by the clinical table
# anyway, TCGA-OL-A5RW (labelled, no slide) is missing from the file.
OFFICIAL_SPLIT = f"""case,slide,label,fold
{A},{slide(A).removesuffix(".svs")},IDC,train
{B},{slide(B).removesuffix(".svs")},ILC,test
{B},{slide(B).removesuffix(".svs")},ILC,test
{C},{slide(C).removesuffix(".svs")},IDC,val
"""


def test_brca_official_split_file_round_trips_as_a_given_split(tmp_path, brca_slides):
    from abmilx.config import schema_defaults
    from abmilx.splits import make_splits

    clinical = write(tmp_path / "clinical.tsv", GDC_BRCA)
    split_file = write(tmp_path / "subtyping_tcga_brca_resample.csv", OFFICIAL_SPLIT)
    slides_csv, labels_csv, report = adapt(
        "tcga_brca", tmp_path / "out", clinical=str(clinical), slide_dir=str(brca_slides),
        split_file=str(split_file),
    )  # fmt: skip
    table = joined(slides_csv, labels_csv, "classification", ["IDC", "ILC"])
    assert dict(zip(table["case_id"], table["split"], strict=False)) == {A: "train", B: "test"}
    splits, _ = make_splits(
        table, "classification", **schema_defaults("split") | {"scheme": "given"}
    )
    assert dict(zip(splits["case_id"], splits["split"], strict=False)) == {A: "train", B: "test"}
    assert "not in the split file" in reasons(report.excluded)["TCGA-OL-A5RW"]


def test_brca_split_file_problems_name_the_line(tmp_path, brca_slides):
    clinical = write(tmp_path / "clinical.tsv", GDC_BRCA)
    bad = write(tmp_path / "split.csv", OFFICIAL_SPLIT + f"{A},{slide(A, 'DX2')},IDC,test\n")
    with pytest.raises(SheetError, match=r"line 6.*case TCGA-A1-A0SB is test here but train"):
        adapt("tcga_brca", tmp_path / "out", clinical=str(clinical), slide_dir=str(brca_slides),
              split_file=str(bad))  # fmt: skip
    unknown = write(tmp_path / "split2.csv", OFFICIAL_SPLIT.replace("test\n", "tset\n", 1))
    with pytest.raises(SheetError, match="fold must be one of"):
        adapt("tcga_brca", tmp_path / "out", clinical=str(clinical), slide_dir=str(brca_slides),
              split_file=str(unknown))  # fmt: skip
