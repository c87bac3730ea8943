"""Patient-level splits: determinism, stratification, no leakage, survival bins, oversampling."""

import numpy as np
import pandas as pd
import pytest

from abmilx.config import schema_defaults
from abmilx.splits import (
    LeakageError,
    check_no_leakage,
    survival_bin_edges,
    survival_labels,
)
from abmilx.splits import make_splits as split_slides

# The tests' baseline: the config's split settings, with a validation share and a fixed seed.
BASE = schema_defaults("split") | {"seed": 2021, "ratios": [0.7, 0.1, 0.2], "bins_from": "train"}


def make_splits(table: pd.DataFrame, task: str, **changes):
    return split_slides(table, task, **BASE | changes)


def classification_table(n_cases: int = 50, seed: int = 0) -> pd.DataFrame:
    """Cases with 1-3 slides; about one case in five is ILC."""
    rng = np.random.default_rng(seed)
    rows = []
    for case in range(n_cases):
        label = "ILC" if rng.random() < 0.2 else "IDC"
        for slide in range(rng.integers(1, 4)):
            rows.append(
                {"slide_id": f"S{case:03d}_{slide}", "case_id": f"C{case:03d}", "label": label}
            )
    return pd.DataFrame(rows)


def one_slide_per_case(n_cases: int = 47) -> pd.DataFrame:
    labels = ["0", "1", "2"] * (n_cases // 3) + ["0"] * (n_cases % 3)
    return pd.DataFrame(
        {
            "slide_id": [f"S{i:03d}" for i in range(n_cases)],
            "case_id": [f"C{i:03d}" for i in range(n_cases)],
            "label": labels,
        }
    )


def survival_table(n_cases: int = 60, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    rows = []
    for case in range(n_cases):
        time, event = float(rng.uniform(1, 120)), int(rng.random() < 0.6)
        for slide in range(rng.integers(1, 3)):
            rows.append(
                {
                    "slide_id": f"S{case:03d}_{slide}",
                    "case_id": f"C{case:03d}",
                    "time": time,
                    "event": event,
                }
            )
    return pd.DataFrame(rows)


def test_holdout_is_deterministic_per_seed() -> None:
    table = classification_table()
    first, _ = make_splits(table, "classification", seed=7)
    again, _ = make_splits(table, "classification", seed=7)
    other, _ = make_splits(table, "classification", seed=8)
    pd.testing.assert_frame_equal(first, again)
    test_cases = set(first.loc[first.split == "test", "case_id"])
    other_test_cases = set(other.loc[other.split == "test", "case_id"])
    assert len(test_cases ^ other_test_cases) >= 6  # a reshuffle, not a tie-break


def test_every_case_can_reach_every_split() -> None:
    """Dealing order must not decide the split: over seeds, each case visits test and train."""
    table = classification_table()
    visits = {"train": set(), "test": set()}
    for seed in range(20):
        splits, _ = make_splits(table, "classification", seed=seed)
        for split, cases in visits.items():
            cases.update(splits.loc[splits.split == split, "case_id"])
    assert visits["test"] == visits["train"] == set(table["case_id"])


@pytest.mark.parametrize("ratios", [[0.7, 0.0, 0.3], [0.7, 0.1, 0.2]])
def test_holdout_stratified_within_one_slide_per_class(ratios: list[float]) -> None:
    table = one_slide_per_case()
    splits, _ = make_splits(table, "classification", ratios=ratios, seed=3)
    for label, group in splits.groupby("label"):
        counts = group["split"].value_counts()
        for split, ratio in zip(("train", "val", "test"), ratios, strict=True):
            assert abs(counts.get(split, 0) - ratio * len(group)) <= 1, (label, split)
    if ratios[1] == 0:
        assert "val" not in set(splits["split"])


def test_holdout_keeps_cases_whole_and_near_ratio() -> None:
    table = classification_table(n_cases=80)
    splits, _ = make_splits(table, "classification", ratios=[0.7, 0.1, 0.2], seed=1)
    assert (splits.groupby("case_id")["split"].nunique() == 1).all()
    share = splits["split"].value_counts(normalize=True)
    assert abs(share["test"] - 0.2) < 0.05 and abs(share["train"] - 0.7) < 0.05
    assert set(splits.columns) == {"slide_id", "case_id", "label", "split", "fold", "repeat"}
    assert len(splits) == len(table)


def test_kfold_test_sets_partition_cases() -> None:
    table = classification_table(n_cases=40)
    splits, _ = make_splits(table, "classification", scheme="kfold", k=5, val_fraction=0.2, seed=2)
    assert sorted(splits["fold"].unique()) == [0, 1, 2, 3, 4]
    test_cases = [
        set(splits[(splits.fold == f) & (splits.split == "test")].case_id) for f in range(5)
    ]
    for i in range(5):
        for j in range(i + 1, 5):
            assert not test_cases[i] & test_cases[j]
    assert set().union(*test_cases) == set(table["case_id"])
    for fold, rows in splits.groupby("fold"):
        assert len(rows) == len(table)
        assert (rows.groupby("case_id")["split"].nunique() == 1).all()
        assert set(rows["split"]) == {"train", "val", "test"}, fold


def test_repeated_holdout_gives_one_fold_per_seed() -> None:
    table = classification_table()
    splits, info = make_splits(table, "classification", repeats=[11, 12, 13])
    assert sorted(splits["fold"].unique()) == [0, 1, 2]
    assert info["fold_seeds"] == [11, 12, 13]
    fold0 = splits[splits.fold == 0].set_index("slide_id")["split"]
    fold1 = splits[splits.fold == 1].set_index("slide_id")["split"]
    assert not fold0.equals(fold1)
    single, _ = make_splits(table, "classification", seed=12)
    assert fold1.tolist() == single.set_index("slide_id")["split"].tolist()


def test_repeated_kfold_partitions_each_repeat_and_differs_across_repeats() -> None:
    """CAMELYON's 3 x 3-fold: k folds per seed, fold r * k + j; test folds disjoint and covering
    every case within a repeat, different across repeats; each repeat equals a single k-fold."""
    table = classification_table()
    splits, info = make_splits(
        table, "classification", scheme="kfold", k=3, repeats=[2021, 2022, 2023]
    )
    assert sorted(splits["fold"].unique()) == list(range(9))
    assert info["fold_seeds"] == [2021, 2022, 2023] and info["folds_per_repeat"] == 3
    tests = {
        fold: frozenset(rows.loc[rows.split == "test", "case_id"])
        for fold, rows in splits.groupby("fold")
    }
    for repeat in range(3):
        parts = [tests[repeat * 3 + j] for j in range(3)]
        assert not (parts[0] & parts[1] or parts[0] & parts[2] or parts[1] & parts[2])
        assert frozenset().union(*parts) == frozenset(table["case_id"])
    assert {tests[0], tests[1], tests[2]} != {tests[3], tests[4], tests[5]}
    single, _ = make_splits(table, "classification", scheme="kfold", k=3, seed=2022)
    second = splits[splits.fold.isin([3, 4, 5])].assign(fold=lambda f: f.fold - 3)
    assert second.reset_index(drop=True).equals(single.reset_index(drop=True))


def test_given_split_is_kept_and_checked() -> None:
    table = one_slide_per_case(6).assign(split=["train", "train", "val", "test", "test", "train"])
    splits, _ = make_splits(table, "classification", scheme="given")
    assert (
        splits.set_index("slide_id")["split"].to_dict()
        == table.set_index("slide_id")["split"].to_dict()
    )
    leaking = table.assign(case_id=["C0", "C0", "C1", "C1", "C2", "C3"])
    with pytest.raises(LeakageError, match="C1"):
        make_splits(leaking, "classification", scheme="given")


def test_given_folds_one_column_per_fold() -> None:
    """Fold j is the table's split_j; survival bins per fold honour bins_from; the number of
    columns must be given_folds, and given_folds belongs to the given scheme."""
    table = survival_table(30)
    case_ids = sorted(set(table["case_id"]))
    test_fold = {case: i % 3 for i, case in enumerate(case_ids)}
    for j in range(3):
        table[f"split_{j}"] = ["test" if test_fold[c] == j else "train" for c in table["case_id"]]
    splits, info = make_splits(table, "survival", scheme="given", given_folds=3)
    assert info["given_columns"] == ["split_0", "split_1", "split_2"]
    for j in range(3):
        fold = splits[splits["fold"] == j]
        expected = {c for c, k in test_fold.items() if k == j}
        assert set(fold.loc[fold["split"] == "test", "case_id"]) == expected
    edges = [tuple(b["edges"]) for b in info["survival_bins"]]
    assert len(set(edges)) == 3  # bins_from train: each fold's own training cases
    _, info_all = make_splits(table, "survival", scheme="given", given_folds=3, bins_from="all")
    assert len({tuple(b["edges"]) for b in info_all["survival_bins"]}) == 1
    single, _ = make_splits(table.rename(columns={"split_1": "split"}).drop(
        columns=["split_0", "split_2"]), "survival", scheme="given")  # fmt: skip
    assert single["split"].tolist() == splits.loc[splits["fold"] == 1, "split"].tolist()
    with pytest.raises(ValueError, match="given_folds is 2 but the label sheet gives 3"):
        make_splits(table, "survival", scheme="given", given_folds=2)
    with pytest.raises(ValueError, match="applies to the given scheme only"):
        make_splits(table, "survival", scheme="kfold", k=3, given_folds=3)
    with pytest.raises(ValueError, match="needs the label sheet's split column"):
        make_splits(table.drop(columns=["split_0"]), "survival", scheme="given", given_folds=2)


def test_check_no_leakage_detects_shared_case() -> None:
    rows = pd.DataFrame(
        {
            "slide_id": ["a", "b", "c"],
            "case_id": ["p1", "p1", "p2"],
            "split": ["train", "test", "test"],
            "fold": [0, 0, 0],
        }
    )
    with pytest.raises(LeakageError, match="p1"):
        check_no_leakage(rows)
    check_no_leakage(rows.assign(fold=[0, 1, 1]))  # different folds: fine


def test_survival_bins_from_train_differ_from_all() -> None:
    table = survival_table()
    from_train, info_train = make_splits(table, "survival", ratios=[0.6, 0.0, 0.4], seed=5)
    from_all, info_all = make_splits(
        table, "survival", ratios=[0.6, 0.0, 0.4], seed=5, bins_from="all"
    )
    assert from_train["split"].tolist() == from_all["split"].tolist()

    cases = table.groupby("case_id")[["time", "event"]].first()
    train_cases = cases.loc[sorted(set(from_train.loc[from_train.split == "train", "case_id"]))]
    expected_train = np.quantile(train_cases.time[train_cases.event == 1], [0.25, 0.5, 0.75])
    expected_all = np.quantile(cases.time[cases.event == 1], [0.25, 0.5, 0.75])
    np.testing.assert_allclose(info_train["survival_bins"][0]["edges"][1:-1], expected_train)
    np.testing.assert_allclose(info_all["survival_bins"][0]["edges"][1:-1], expected_all)
    assert not np.allclose(expected_train, expected_all)

    uncensored_train = from_train[(from_train.split == "train") & (from_train.event == 1)]
    per_case = uncensored_train.groupby("case_id")["label"].first()
    assert sorted(per_case.value_counts().tolist()) in ([5, 5, 5, 6], [5, 5, 6, 6], [5, 6, 6, 6])
    assert set(from_train["label"]) <= {0, 1, 2, 3}
    assert {"time", "event"} <= set(from_train.columns)


def test_survival_labels_match_left_closed_cut() -> None:
    times = np.array([1.0, 5.0, 10.0, 20.0, 30.0, 40.0, 50.0, 60.0])
    events = np.array([1, 1, 0, 1, 1, 0, 1, 1])
    edges = survival_bin_edges(times, events, 4)
    expected = pd.cut(times, bins=edges, right=False, labels=False)
    np.testing.assert_array_equal(survival_labels(times, edges), expected)
    # times beyond the reference range fall in the outer bins
    np.testing.assert_array_equal(survival_labels(np.array([0.1, 500.0]), edges), [0, 3])


def test_survival_kfold_has_per_fold_edges() -> None:
    splits, info = make_splits(survival_table(), "survival", scheme="kfold", k=3, seed=4)
    assert [b["fold"] for b in info["survival_bins"]] == [0, 1, 2]
    edges = [tuple(b["edges"]) for b in info["survival_bins"]]
    assert len(set(edges)) == 3
    for fold in range(3):
        rows = splits[splits.fold == fold]
        assert (rows.groupby("case_id")["split"].nunique() == 1).all()


def test_oversampling_reaches_target_ratio_in_train_only() -> None:
    table = classification_table(n_cases=120, seed=3)
    splits, _ = make_splits(table, "classification", seed=9, oversample={"ILC": 2.0})
    train = splits[splits.split == "train"]
    weighted = train.groupby("label")["repeat"].sum()
    assert abs(weighted["IDC"] / weighted["ILC"] - 2.0) < 0.05
    assert (train.loc[train.label == "IDC", "repeat"] == 1).all()
    assert train.loc[train.label == "ILC", "repeat"].between(1, 3).all()
    assert (splits.loc[splits.split != "train", "repeat"] == 1).all()
    plain, _ = make_splits(table, "classification", seed=9)
    assert plain["split"].tolist() == splits["split"].tolist()
    assert (plain["repeat"] == 1).all()


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"ratios": [0.5, 0.2, 0.2]}, "ratios"),
        ({"scheme": "bootstrap"}, "scheme"),
        ({"scheme": "kfold", "k": 1}, "k >= 2"),
        ({"oversample": {"LCIS": 2.0}}, "absent"),
        ({"bins_from": "test"}, "bins_from"),
    ],
)
def test_bad_arguments_are_rejected(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        make_splits(classification_table(10), "classification", **kwargs)
