"""Patient-level, stratified, seeded train/val/test splits.

Cases (patients) are the unit that is assigned: a case's slides always share one split within a
fold. Within each stratum (class label; survival: event x time-quantile bin) cases are shuffled
with the seed and dealt to the split that is relatively furthest below its integer slide target,
so with one slide per case every class hits its target exactly (largest-remainder rounding) and
with multi-slide cases it is off by at most one case.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd

from abmilx.sheets import given_split_columns

SPLITS = ("train", "val", "test")
SCHEMES = ("holdout", "kfold", "given")
STRATIFY_TIME_BINS = 4


class LeakageError(ValueError):
    """A case (patient) appears in more than one split of the same fold."""


def _integer_targets(total: int, ratios: Sequence[float], rng: np.random.Generator) -> np.ndarray:
    """Largest-remainder rounding of total * ratios; ties among remainders broken at random."""
    exact = np.asarray(ratios, dtype=float) * total
    counts = np.floor(exact + 1e-9).astype(int)
    remainder = exact - counts
    shortfall = total - counts.sum()
    if shortfall > 0:
        tiebreak = rng.random(len(ratios))
        order = np.lexsort((tiebreak, -np.round(remainder, 9)))
        counts[order[:shortfall]] += 1
    return counts


def _deal_cases(
    case_sizes: pd.Series, ratios: Sequence[float], rng: np.random.Generator
) -> dict[str, int]:
    """Assign the cases of one stratum to bins (index into `ratios`) by slide count targets.

    Cases are dealt in random order, each to the bin with the largest deficit relative to its
    target, so all bins fill at the same pace and no bin collects the cases dealt last.
    """
    targets = _integer_targets(int(case_sizes.sum()), ratios, rng)
    shuffled = case_sizes.iloc[rng.permutation(len(case_sizes))]
    filled = np.zeros(len(ratios), dtype=int)
    assignment = {}
    for case_id, size in shuffled.items():
        with np.errstate(divide="ignore", invalid="ignore"):
            relative_deficit = np.where(targets > 0, (targets - filled) / targets, -np.inf)
        chosen = int(np.argmax(relative_deficit))
        filled[chosen] += size
        assignment[case_id] = chosen
    return assignment


def _case_table(table: pd.DataFrame, task: str, classes: Sequence[str] | None) -> pd.DataFrame:
    """One row per case: number of slides and the stratum used for stratification."""
    grouped = table.groupby("case_id", sort=True)
    cases = pd.DataFrame({"n_slides": grouped.size()})
    if task == "survival":
        first = grouped[["time", "event"]].first()
        n_time_bins = min(STRATIFY_TIME_BINS, len(first))
        time_bin = pd.qcut(first["time"].rank(method="first"), n_time_bins, labels=False)
        cases["stratum"] = first["event"].astype(str) + "_" + time_bin.astype(str)
    else:
        order = {c: i for i, c in enumerate(classes or sorted(table["label"].unique()))}

        def majority(labels: pd.Series) -> str:
            counts = labels.value_counts()
            best = counts[counts == counts.max()].index
            return min(best, key=lambda label: order.get(label, len(order)))

        cases["stratum"] = grouped["label"].agg(majority)
    return cases


def _holdout(cases: pd.DataFrame, ratios: Sequence[float], rng: np.random.Generator) -> pd.Series:
    split_of_case: dict[str, str] = {}
    for _, members in cases.groupby("stratum", sort=True):
        dealt = _deal_cases(members["n_slides"], ratios, rng)
        split_of_case.update({case: SPLITS[index] for case, index in dealt.items()})
    return pd.Series(split_of_case)


def _kfold(cases: pd.DataFrame, k: int, rng: np.random.Generator) -> pd.Series:
    fold_of_case: dict[str, int] = {}
    for _, members in cases.groupby("stratum", sort=True):
        fold_of_case.update(_deal_cases(members["n_slides"], [1.0 / k] * k, rng))
    return pd.Series(fold_of_case)


def survival_bin_edges(times: np.ndarray, events: np.ndarray, n_bins: int) -> np.ndarray:
    """Quantile edges of the uncensored times (official `survival_label`).

    Returns n_bins + 1 edges; the outer ones are min - 1e-6 and max + 1e-6 of all given times.
    Labels use the inner edges only, so times outside the reference range fall in the first or
    last bin.
    """
    uncensored = np.asarray(times, dtype=float)[np.asarray(events) == 1]
    if len(uncensored) < n_bins:
        raise ValueError(
            f"survival binning needs at least {n_bins} uncensored cases, got {len(uncensored)}"
        )
    edges = np.quantile(uncensored, np.linspace(0.0, 1.0, n_bins + 1))
    edges[0] = np.min(times) - 1e-6
    edges[-1] = np.max(times) + 1e-6
    return edges


def survival_labels(times: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """Bin index of each time, bins closed on the left (`pd.cut(right=False)`)."""
    return np.searchsorted(edges[1:-1], np.asarray(times, dtype=float), side="right")


def _oversample_repeats(
    train: pd.DataFrame, oversample: Mapping[str, float], rng: np.random.Generator
) -> np.ndarray:
    """Repeat counts for training rows so that majority:minority is about the given ratio."""
    repeats = np.ones(len(train), dtype=int)
    counts = train["label"].value_counts()
    for minority, ratio in oversample.items():
        rows = np.flatnonzero(train["label"].to_numpy() == minority)
        if len(rows) == 0:
            continue
        majority = counts.drop(index=minority).max() if len(counts) > 1 else len(rows)
        target = round(float(majority) / ratio)
        if target <= len(rows):
            continue
        base, extra = divmod(target, len(rows))
        repeats[rows] = base
        repeats[rng.choice(rows, size=extra, replace=False)] += 1
    return repeats


def _validate_arguments(
    table: pd.DataFrame,
    task: str,
    scheme: str,
    ratios: Sequence[float],
    k: int,
    val_fraction: float,
    repeats: Sequence[int] | None,
    given_folds: int,
    n_bins: int,
    bins_from: str,
    oversample: Mapping[str, float] | None,
) -> None:
    if task not in ("classification", "survival"):
        raise ValueError(f"unknown task '{task}': expected classification or survival")
    if scheme not in SCHEMES:
        raise ValueError(f"unknown split scheme '{scheme}': expected one of {', '.join(SCHEMES)}")
    needed = ["slide_id", "case_id"] + (["time", "event"] if task == "survival" else ["label"])
    missing = [c for c in needed if c not in table.columns]
    if missing:
        raise ValueError(f"split table lacks column(s) {', '.join(missing)}")
    if given_folds < 1:
        raise ValueError(f"given_folds must be >= 1, got {given_folds}")
    if scheme != "given" and given_folds != 1:
        raise ValueError(f"given_folds ({given_folds}) applies to the given scheme only")
    if scheme == "given":
        given = given_split_columns(table.columns)
        if not given:
            raise ValueError(
                "the given scheme needs the label sheet's split column, or split_0 ... "
                f"split_<k-1> (one per fold); the table has: {', '.join(map(str, table.columns))}"
            )
        if len(given) != given_folds:
            raise ValueError(
                f"given_folds is {given_folds} but the label sheet gives {len(given)} "
                f"fold(s) ({', '.join(given)})"
            )
    if table["slide_id"].duplicated().any():
        duplicated = table.loc[table["slide_id"].duplicated(), "slide_id"].tolist()
        raise ValueError(f"split table has duplicate slide_id(s): {duplicated[:10]}")
    if len(ratios) != 3 or min(ratios) < 0 or abs(sum(ratios) - 1.0) > 1e-6 or ratios[0] <= 0:
        raise ValueError(
            f"ratios must be [train, val, test] >= 0 summing to 1 with train > 0, got {ratios}"
        )
    if scheme == "kfold" and k < 2:
        raise ValueError(f"kfold needs k >= 2, got {k}")
    if not 0.0 <= val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction}")
    if repeats is not None and (scheme == "given" or len(repeats) == 0):
        raise ValueError("repeats (a list of seeds) applies to the holdout and kfold schemes")
    if bins_from not in ("train", "all") and (task == "survival" or bins_from is not None):
        raise ValueError(
            f"bins_from must be 'train' or 'all', got {bins_from!r} (a null one follows the "
            "config's protocol: abmilx.config.split_bins_from)"
        )
    if task == "survival" and n_bins < 1:
        raise ValueError(f"n_bins must be >= 1, got {n_bins}")
    if oversample:
        if task == "survival":
            raise ValueError("oversample applies to classification tasks only")
        unknown = [c for c in oversample if c not in set(table["label"])]
        if unknown:
            raise ValueError(f"oversample names class(es) absent from the labels: {unknown}")
        if any(r <= 0 for r in oversample.values()):
            raise ValueError(f"oversample ratios must be > 0, got {dict(oversample)}")


def make_splits(
    table: pd.DataFrame,
    task: str,
    *,
    scheme: str,
    seed: int,
    ratios: Sequence[float],
    k: int,
    val_fraction: float,
    repeats: Sequence[int] | None,
    given_folds: int,
    n_bins: int,
    bins_from: str | None,
    oversample: Mapping[str, float] | None,
    classes: Sequence[str] | None = None,
) -> tuple[pd.DataFrame, dict]:
    """Split slides into train/val/test at patient level, stratified and seeded.

    The keywords but `classes` are a dataset's `split` block of the config, whose schema holds
    their defaults (`abmilx.config.schema_defaults("split")`; a null seed is the config's seed).

    table: one row per slide with slide_id, case_id and label (classification) or time, event
    (survival); for scheme "given" also `split`, or `split_0` ... `split_<k-1>` (one per fold).
    Schemes: "holdout" (one fold, `ratios` = [train, val, test]; with `repeats`, one fold per
    seed in the list), "kfold" (`k` folds whose test sets partition the cases; `val_fraction`
    of each fold's training slides become val; with `repeats`, k folds per seed, numbered
    repeat * k + j), "given" (fold j from the table's j-th given split column; `given_folds` of
    them: `split` or `split_0` for one, `split_0` ... `split_<k-1>` for k).
    Survival: `label` = bin index of `n_bins` quantile bins of uncensored times, edges from the
    fold's training cases (`bins_from="train"`) or all cases ("all", the official behaviour);
    the config's null is resolved from its protocol before (`abmilx.config.split_bins_from`).
    `oversample` {class: ratio}: training rows of that class get `repeat` > 1 so that
    majority:class is about ratio:1 (trainers repeat a row `repeat` times per epoch).

    Returns (rows slide_id, case_id, label, split, fold, repeat [+ time, event] sorted by fold
    then slide_id; info dict with the survival bin edges per fold).
    """
    ratios = [float(r) for r in ratios]
    _validate_arguments(
        table,
        task,
        scheme,
        ratios,
        k,
        val_fraction,
        repeats,
        given_folds,
        n_bins,
        bins_from,
        oversample,
    )
    table = table.copy()
    table["slide_id"] = table["slide_id"].astype(str)
    table["case_id"] = table["case_id"].astype(str)
    if task == "classification":
        table["label"] = table["label"].astype(str)

    fold_seeds = list(repeats) if repeats is not None else [seed]
    folds: list[pd.DataFrame] = []
    if scheme == "given":
        given = given_split_columns(table.columns)
        for fold, column in enumerate(given):
            folds.append(table.assign(split=table[column].astype(str), fold=fold))
    elif scheme == "holdout":
        for fold, fold_seed in enumerate(fold_seeds):
            rng = np.random.default_rng(fold_seed)
            cases = _case_table(table, task, classes)
            split_of_case = _holdout(cases, ratios, rng)
            folds.append(table.assign(split=table["case_id"].map(split_of_case), fold=fold))
    else:  # k folds per seed: repeat r's fold j is fold r * k + j (RRT-MIL's 3 x 3-fold)
        for repeat, fold_seed in enumerate(fold_seeds):
            rng = np.random.default_rng(fold_seed)
            cases = _case_table(table, task, classes)
            fold_of_case = _kfold(cases, k, rng)
            for part in range(k):
                in_test = fold_of_case == part
                split_of_case = pd.Series("test", index=fold_of_case.index[in_test])
                train_cases = cases.loc[fold_of_case.index[~in_test]]
                if val_fraction > 0:
                    val_split = _holdout(train_cases, [1 - val_fraction, val_fraction, 0.0], rng)
                    split_of_case = pd.concat([split_of_case, val_split])
                else:
                    split_of_case = pd.concat(
                        [split_of_case, pd.Series("train", index=train_cases.index)]
                    )
                fold = repeat * k + part
                folds.append(table.assign(split=table["case_id"].map(split_of_case), fold=fold))

    info: dict = {"task": task, "scheme": scheme, "seed": seed, "fold_seeds": fold_seeds}
    if scheme == "kfold":
        info["folds_per_repeat"] = k
    if scheme == "given":
        info["given_columns"] = given
    if task == "survival":
        info["survival_bins"] = []
    out = []
    for fold_rows in folds:
        fold = int(fold_rows["fold"].iloc[0])
        fold_rows = fold_rows.copy()
        fold_rows["repeat"] = 1
        if task == "survival":
            reference = (
                fold_rows if bins_from == "all" else fold_rows[fold_rows["split"] == "train"]
            )
            per_case = reference.groupby("case_id")[["time", "event"]].first()
            edges = survival_bin_edges(per_case["time"].to_numpy(), per_case["event"], n_bins)
            fold_rows["label"] = survival_labels(fold_rows["time"].to_numpy(), edges)
            info["survival_bins"].append(
                {
                    "fold": fold,
                    "bins_from": bins_from,
                    "edges": [float(e) for e in edges],
                    "n_uncensored_cases": int(per_case["event"].sum()),
                }
            )
        if oversample:
            is_train = (fold_rows["split"] == "train").to_numpy()
            per_seed = k if scheme == "kfold" else 1
            fold_seed = fold_seeds[min(fold // per_seed, len(fold_seeds) - 1)]
            rng = np.random.default_rng([fold_seed, fold, 1])
            repeat = fold_rows["repeat"].to_numpy()
            repeat[is_train] = _oversample_repeats(fold_rows[is_train], oversample, rng)
            fold_rows["repeat"] = repeat
        out.append(fold_rows)

    result = pd.concat(out, ignore_index=True)
    columns = ["slide_id", "case_id", "label", "split", "fold", "repeat"]
    if task == "survival":
        columns += ["time", "event"]
    result = result[columns].sort_values(["fold", "slide_id"], kind="stable")
    result = result.reset_index(drop=True)
    check_no_leakage(result)
    return result, info


def check_no_leakage(splits: pd.DataFrame) -> None:
    """Raise LeakageError if a case is in two splits, or a slide twice, within one fold."""
    pairs = splits[["fold", "case_id", "split"]].drop_duplicates()
    leaking = pairs[pairs.duplicated(["fold", "case_id"], keep=False)]
    if not leaking.empty:
        examples = (
            leaking.groupby(["fold", "case_id"])["split"]
            .agg(lambda s: "+".join(sorted(s)))
            .head(10)
        )
        listed = "; ".join(f"fold {f} case {c}: {s}" for (f, c), s in examples.items())
        raise LeakageError(f"patient leakage across splits: {listed}")
    repeated = splits[splits.duplicated(["fold", "slide_id"], keep=False)]
    if not repeated.empty:
        raise LeakageError(
            f"slides listed twice within a fold: {sorted(set(repeated['slide_id']))[:10]}"
        )
    unknown = set(splits["split"]) - set(SPLITS)
    if unknown:
        raise ValueError(f"unknown split value(s) {sorted(unknown)}: expected train, val or test")
