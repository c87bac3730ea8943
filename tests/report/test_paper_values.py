"""The transcription of the paper's tables: complete, well-formed, and right where spot-checked."""

import pytest

from abmilx.report.paper import load_paper_values, paper_cell

# Cells per table: rows x columns as printed (Table 1: 20 rows x #Parameter, FLOPs, BRCA, NSCLC).
CELLS = {
    "table1": 20 * 4,
    "table2": 20 * 4,
    "sparsity": 5 * 3,
    "sec4_3_mil_sampling": 7 * 4,
    "table3": 4 * 7,
    "table4": 8 * 4,
    "table5": 8 * 3,
    "table6": 21 * 7,
    "table7_ffn": 2 * 3,
    "table7_inner_dim": 4 * 3,
    "table7_heads": 5 * 3,
    "table7_scale_ratio": 5 * 3,
    "table7_sample_number": 6 * 3,
    "table7_sampling": 4 * 3,
}


@pytest.fixture(scope="module")
def values():
    return load_paper_values()


def test_every_table_is_complete(values):
    assert values.groupby("table").size().to_dict() == CELLS
    for table, cells in values.groupby("table"):
        rows, columns = cells["row"].nunique(), cells["column"].nunique()
        assert rows * columns == len(cells), table  # a full grid: no cell missing


@pytest.mark.parametrize(
    ("table", "row", "column", "expected"),
    [
        ("table1", "ResNet-18 / ABMILX (E2E)", "TCGA-BRCA", 93.97),
        ("table1", "GIGAP / GIGAP", "TCGA-NSCLC", 97.53),
        ("table2", "ResNet-50 / ABMILX (E2E)", "PANDA", 78.83),
        ("table2", "UNI / ABMIL", "TCGA-BRCA", 67.05),
        ("table3", "GIGAP / GIGAP", "Grad.", 65.86),
        ("table4", "FM* / RRT", "Surv.", 67.30),
        ("table5", "VITMIL", "Sub.", 92.61),
        ("table6", "UNI / ABMILX", "PANDA", 78.54),
        ("table6", "ResNet-50 / DTFD", "CAMELYON", 91.88),
        ("table7_heads", "4", "Grad.", 78.34),
        ("table7_sample_number", "64", "Surv.", 63.52),
        ("table7_sampling", "Regional 2", "Sub.", 93.26),
        ("sparsity", "TransMIL", "Sparsity", 13),
        ("sec4_3_mil_sampling", "Attention Sampling", "Grad.", 77.43),
    ],
)
def test_spot_values(values, table, row, column, expected):
    cell = values[(values.table == table) & (values.row == row) & (values.column == column)]
    assert cell["number"].tolist() == [expected]


def test_text_cells_and_intervals(values):
    assert paper_cell(values, "table1", "ResNet-50 / ABMIL", "TCGA-BRCA") == "83.80 ± 6.55"
    assert paper_cell(values, "table2", "ResNet-50 / WIKG", "TCGA-LUAD") == "OOM"
    assert paper_cell(values, "table3", "UNI / TransMIL", "IT") == "25s"
    assert paper_cell(values, "table1", "ResNet-18 / ABMILX (E2E)", "CAMELYON") is None
    gain = values[(values.table == "table2") & (values.row == "ResNet-18 / ABMILX (E2E)")]
    assert gain["note"].str.contains(r"\+15.6 over the best two-stage").any()


def test_metric_values_are_percentages(values):
    metrics = values[~values.column.isin(["#Parameter", "FLOPs", "TTime", "Memory", "IT"])]
    numbers = metrics["number"].dropna()
    assert ((numbers >= 0) & (numbers <= 100)).all()
    text = metrics.loc[metrics["number"].isna(), "value"]
    assert set(text) <= {"OOM", "-", "80GB - h", "32GB - h", "80GB3,072h"}
    assert (metrics.loc[metrics["value"] == "-", "note"].str.contains("not reported")).all()


def test_a_duplicate_cell_fails(tmp_path):
    path = tmp_path / "values.csv"
    path.write_text("table,row,column,value,pm,note\nt,r,c,1,,\nt,r,c,2,,\n")
    with pytest.raises(ValueError, match=r"values.csv: cell \(t, r, c\) is given twice"):
        load_paper_values(path)
