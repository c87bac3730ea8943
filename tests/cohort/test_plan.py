"""Cohort plan: ids, labels per case, class balance, formats, survival and task specifics."""

from __future__ import annotations

import inspect
import json

import numpy as np
import pandas as pd
import pytest
from lifelines.utils import concordance_index

from abmilx.cohort import PLAN_COLUMNS, class_names, plan_cohort, plan_record
from abmilx.cohort.plan import plan_columns
from abmilx.cohort.synthesize import render_slide, synthesize_slide
from abmilx.config import schema_defaults


def test_columns_ids_and_files(subtyping_plan):
    plan = subtyping_plan
    assert list(plan.columns) == PLAN_COLUMNS
    assert plan["slide_id"].tolist() == [f"SUB-{i:04d}" for i in range(1, 41)]
    assert plan["case_id"].str.fullmatch(r"SUB-C\d{3}").all()
    assert plan["case_id"].nunique() == 30
    suffix = plan["slide_format"].map({"aperio": ".svs", "generic": ".tif", "nompp": ".tif"})
    assert (plan["file"] == plan["slide_id"] + suffix).all()
    assert plan["seed"].is_unique


def test_cases_with_several_slides_share_one_label(subtyping_plan):
    per_case = subtyping_plan.groupby("case_id")
    assert (per_case.size() > 1).any()
    assert (per_case["label"].nunique() == 1).all()


def test_subtyping_imbalance_is_about_four_to_one():
    plan = plan_cohort("demo", "subtyping", 120, 90, seed=3)
    cases = plan.drop_duplicates("case_id")["label"].value_counts()
    assert cases["IDC"] == 72 and cases["ILC"] == 18  # exact 4:1 on cases
    slides = plan["label"].value_counts()
    assert 3.0 <= slides["IDC"] / slides["ILC"] <= 5.5
    custom = plan_cohort("demo", "subtyping", 60, 60, seed=3, class_weights=[0.5, 0.5])
    assert custom["label"].value_counts().to_dict() == {"IDC": 30, "ILC": 30}


def test_formats_and_mpp_overrides(subtyping_plan):
    plan = subtyping_plan
    counts = plan["slide_format"].value_counts()
    assert counts["aperio"] > counts["generic"] >= counts["nompp"] >= 1
    nompp = plan[plan["slide_format"] == "nompp"]
    assert (nompp["mpp_override"] == nompp["mpp"]).all()
    assert plan.loc[plan["slide_format"] != "nompp", "mpp_override"].isna().all()
    assert set(plan.loc[plan["slide_format"] == "aperio", "mpp"]) == {0.5}
    assert set(plan.loc[plan["slide_format"] == "generic", "mpp"]) <= {0.5, 0.25}
    # Even a 10-slide cohort whose fractions would round nompp away gets one.
    tiny = plan_cohort("demo", "subtyping", 10, 8, seed=0, format_fractions={"aperio": 1.0})
    assert (tiny["slide_format"] == "nompp").sum() == 1


def test_plan_is_deterministic_and_seed_dependent(subtyping_plan):
    pd.testing.assert_frame_equal(subtyping_plan, plan_cohort("demo", "subtyping", 40, 30, seed=7))
    other = plan_cohort("demo", "subtyping", 40, 30, seed=8)
    assert not other["seed"].equals(subtyping_plan["seed"])


def test_subtyping_lesion_fraction_is_about_an_eighth(subtyping_plan):
    fractions = subtyping_plan["lesion_fraction"]
    assert fractions.min() > 0.04 and fractions.max() < 0.3
    assert fractions.mean() == pytest.approx(0.12, rel=0.25)


def test_survival_censoring_and_hazard_follow_the_burden():
    plan = plan_cohort("demo", "survival", 500, 400, seed=11)
    cases = plan.drop_duplicates("case_id")
    assert plan["label"].isna().all()
    assert (cases["time"] > 0).all()
    assert set(cases["event"]) == {0, 1}
    assert 0.24 <= 1 - cases["event"].mean() <= 0.36  # ~30 % censored
    assert (plan.groupby("case_id")[["time", "event"]].nunique() == 1).all().all()
    # Higher hidden burden -> earlier events: burden ranks risk well above chance.
    burden = plan.groupby("case_id")["lesion_fraction"].mean().loc[cases["case_id"]]
    c_index = concordance_index(cases["time"], -burden.to_numpy(), cases["event"])
    assert c_index > 0.75


def test_grading_burden_grows_with_grade():
    plan = plan_cohort("demo", "grading", 300, 240, seed=5)
    assert set(plan["label"]) == set(class_names("grading")) == {"0", "1", "2", "3", "4", "5"}
    means = plan.groupby("label")["lesion_fraction"].mean()
    assert means["0"] == 0.0
    grades = means.loc[["1", "2", "3", "4", "5"]].to_numpy()
    assert np.all(np.diff(grades) > 0)
    # Ordinal in the burden: grade g covers about g times grade 1's share.
    np.testing.assert_allclose(grades / grades[0], [1, 2, 3, 4, 5], rtol=0.25)


def test_diagnosis_metastases_are_small_and_only_in_tumor_slides():
    plan = plan_cohort("demo", "diagnosis", 50, 40, seed=2)
    tumor = plan["label"] == "tumor"
    assert set(plan["label"]) == {"normal", "tumor"}
    assert (plan.loc[~tumor, "lesion_fraction"] == 0).all()
    assert plan.loc[tumor, "lesion_fraction"].between(0.01, 0.1, inclusive="neither").all()
    assert plan["slide_id"].str.startswith("DX-").all()


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"task": "staging"}, "unknown cohort task"),
        ({"n_cases": 50}, "n_cases <= n_slides"),
        ({"class_weights": [1.0, 2.0, 3.0]}, "class_weights for subtyping"),
        ({"format_fractions": {"svs": 1.0}}, "unknown formats"),
        ({"classes": ["a", "b", "c"]}, "classes of the synthetic subtyping task must be 2"),
        ({"pen_colour": "red"}, "unknown cohort settings \\['pen_colour'\\]"),
        ({"task": "diagnosis", "lesion_fraction": 0.12}, "lesion_fraction of diagnosis"),
    ],
)
def test_bad_settings_are_named(kwargs, message):
    settings = {"task": "subtyping", "n_slides": 20, "n_cases": 10, "seed": 0} | kwargs
    with pytest.raises(ValueError, match=message):
        plan_cohort("demo", **settings)


def test_plan_record_is_the_frame_row_and_names_a_missing_slide(subtyping_plan):
    columns = plan_columns("demo", "subtyping", 40, 30, seed=7)
    for slide_id in ("SUB-0001", "SUB-0003", "SUB-0040"):
        record = plan_record(columns, slide_id)
        row = subtyping_plan.set_index("slide_id", drop=False).loc[slide_id]
        assert list(record) == PLAN_COLUMNS
        expected = row
        assert all(
            record[key] == expected[key] or (pd.isna(record[key]) and pd.isna(expected[key]))
            for key in PLAN_COLUMNS
        )
    with pytest.raises(KeyError, match="SUB-9999"):
        plan_record(columns, "SUB-9999")


def test_config_block_with_renamed_classes_and_render_options():
    """The workflow passes the whole config block (plan keys, ``classes``, rendering options)."""
    plan = plan_cohort(
        "demo",
        "subtyping",
        20,
        15,
        seed=1,
        classes=["ductal", "lobular"],
        lesion_fraction=None,
        class_weights=None,
        width_um=800,
        pen_probability=0.2,
    )
    assert set(plan["label"]) == {"ductal", "lobular"}
    index = plan["label"].map({"ductal": 0, "lobular": 1})
    assert (plan["class_index"] == index).all()
    default = plan_cohort("demo", "subtyping", 20, 15, seed=1)
    assert (plan["class_index"] == default["class_index"]).all()
    assert (plan["seed"] == default["seed"]).all()
    survival = plan_cohort("demo", "survival", 20, 15, seed=1, classes=None)
    assert (survival["class_index"] == -1).all()


@pytest.mark.parametrize("function", [plan_columns, render_slide, synthesize_slide])
def test_generator_defaults_are_the_schemas(function):
    """The generator is also a library (tests and notebooks call it with few arguments), so its
    config keywords keep defaults; they must be the schema's, which the workflow passes."""
    schema = schema_defaults("synthetic")
    for name, parameter in inspect.signature(function).parameters.items():
        if name in schema and parameter.default not in (inspect.Parameter.empty, None):
            assert json.loads(json.dumps(parameter.default)) == schema[name], name
    if function is plan_columns:  # None: the schema's format mix, spelt out in the body
        pd.testing.assert_frame_equal(
            plan_cohort("d", "subtyping", 30, 30, 1, format_fractions=None),
            plan_cohort("d", "subtyping", 30, 30, 1, format_fractions=schema["format_fractions"]),
        )
