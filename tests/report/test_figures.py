"""The figures on files made here: what each kind computes (KM and log-rank against lifelines and
a hand computation, lesion shares, entropy, subsampling) and that each renders PNG + PDF."""

import json
import os

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from scipy.stats import chi2

from abmilx.annotations import read_truth
from abmilx.cohort.slidefile import write_slide
from abmilx.config import REPO_ROOT, ConfigError, load_config, validate_config
from abmilx.experiments import resolve_experiments
from abmilx.report.figures import (
    KINDS,
    attention_dynamics,
    attention_heatmaps,
    draw,
    km_curves,
    sparsity_vs_features,
)
from abmilx.report.figures.attention_heatmaps import choose_slides
from abmilx.report.figures.draw import attention_map
from abmilx.report.figures.performance_vs_cost import panel_points
from abmilx.report.figures.plan import plan_figures
from abmilx.report.figures.umap_features import NON_LESION, balanced_subsample, patch_classes
from abmilx.report.publish import TIMESTAMP, publish

# --- a one-slide cohort: slide file, sheet, QC record and a truth mask with one lesion ---------


@pytest.fixture
def cohort(tmp_path):
    image = np.full((600, 800, 3), 240, np.uint8)
    image[100:500, 100:700] = (200, 120, 190)
    write_slide(tmp_path / "cohort" / "slides" / "s1.svs", image, mpp=0.5, downsamples=(1, 4))
    pd.DataFrame(
        {"slide_id": ["s1"], "case_id": ["c1"], "path": ["slides/s1.svs"], "mpp": [None]}
    ).to_csv(tmp_path / "cohort" / "slides.csv", index=False)
    lesion = np.zeros((150, 200), bool)  # downsample 4: level-0 x 240..360, y 200..280
    lesion[50:70, 60:90] = True
    (tmp_path / "cohort" / "truth").mkdir()
    np.savez(tmp_path / "cohort" / "truth" / "s1.svs.npz", lesion=lesion, downsample=4)
    (tmp_path / "qc").mkdir()
    (tmp_path / "qc" / "s1.json").write_text(json.dumps({"slide_id": "s1", "mpp": 0.5}))
    return {
        "dataset": "d",
        "title": "",
        "slide_sheet": str(tmp_path / "cohort" / "slides.csv"),
        "qc_dir": str(tmp_path / "qc"),
        "truth_dir": str(tmp_path / "cohort" / "truth"),
        "patch_size": 20,
        "main_mpp": 2.0,  # footprint: 20 px x 2 µm / 0.5 µm = 80 level-0 px
    }


COORDS = np.array([[x, y] for y in range(120, 480, 80) for x in range(120, 680, 80)])


def _run(folder, attention, label="x", pred="x"):
    folder.mkdir(parents=True)
    (folder / "fold0").mkdir()
    pd.DataFrame(
        {"slide_id": ["s1"], "label": [label], "prob_x": [0.9], "prob_y": [0.1], "pred": [pred]}
    ).to_csv(folder / "fold0" / "predictions.csv", index=False)
    np.savez(folder / "fold0" / "attention.npz", **{"s1/coords": COORDS, "s1/attention": attention})
    return {"title": folder.name, "dir": str(folder), "kind": "e2e"}


def test_attention_map_paints_each_patch_footprint():
    coords = np.array([[0, 0], [100, 0]])
    attention = np.array([[0.2, 0.8], [0.2, 0.8]], np.float32)
    heat, covered = attention_map(coords, attention, footprint=100, scale=0.1, shape=(20, 30))
    assert heat[5, 5] == pytest.approx(0.0)
    assert heat[5, 15] == pytest.approx(1.0)
    assert covered[:10, :20].all() and not covered[:, 20:].any() and not covered[10:].any()


def test_choose_slides_alternates_classes_most_confident_first():
    predictions = pd.DataFrame(
        {
            "slide_id": ["a", "b", "c", "d"],
            "label": ["x", "x", "y", "y"],
            "prob_x": [0.6, 0.9, 0.2, 0.4],
            "prob_y": [0.4, 0.1, 0.8, 0.6],
            "pred": ["x", "x", "y", "y"],
        }
    )
    assert choose_slides(predictions, 3) == ["b", "c", "a"]


def test_choose_slides_handles_case_level_survival_predictions():
    predictions = pd.DataFrame(
        {"slide_id": ["a", "b"], "case_id": ["c1", "c2"], "label": [0, 3], "risk": [-1.0, -3.0],
         "pred": [0, 2]}
    )  # fmt: skip
    assert choose_slides(predictions, 2) == ["a", "b"]


def test_attention_heatmaps_draw_runs_side_by_side_byte_identically(cohort, tmp_path):
    rng = np.random.default_rng(0)
    runs = [_run(tmp_path / name, rng.random((2, len(COORDS)))) for name in ("abmil", "abmilx")]
    settings = {**cohort, "n_slides": 2, "runs": runs, "normalisation": "percentile"}
    first = attention_heatmaps.render(settings, tmp_path / "a" / "heat.png")
    second = attention_heatmaps.render(settings, tmp_path / "b" / "heat.png")
    assert first.read_bytes() == second.read_bytes()
    assert first.with_suffix(".pdf").read_bytes() == second.with_suffix(".pdf").read_bytes()
    width, height = Image.open(first).size
    assert width > 2.5 * height  # thumbnail + two runs in one row


def test_lesion_fraction_is_the_covered_share_of_each_patch(cohort):
    truth = os.path.join(cohort["truth_dir"], "s1.svs.npz")
    # lesion: level-0 x 240..360, y 200..280; patches of side 80
    coords = np.array([[240, 200], [200, 200], [0, 0], [320, 240]])
    np.testing.assert_allclose(read_truth(truth).fraction(coords, 80), [1.0, 0.5, 0.0, 0.25])


def _heatmap_title(cohort, tmp_path, monkeypatch, **extra):
    """The default title of a heatmap figure of the cohort (drawn for real, title captured)."""
    titles = []

    def finish(figure, settings, title, out, dpi):
        titles.append(title)
        return draw.finish(figure, settings, title, out, dpi)

    monkeypatch.setattr(attention_heatmaps, "finish", finish)
    run = _run(tmp_path / "run", np.random.default_rng(0).random((1, len(COORDS))))
    settings = {**cohort, **extra, "n_slides": 1, "runs": [run], "normalisation": "percentile"}
    attention_heatmaps.render(settings, tmp_path / "heat.png")
    return titles[0]


def test_heatmaps_outline_annotations_and_say_when_a_slide_has_none(cohort, tmp_path, monkeypatch):
    folder = tmp_path / "xml"
    folder.mkdir()
    (folder / "s1.xml").write_text(
        '<ASAP_Annotations><Annotations><Annotation Name="a" PartOfGroup="Tumor"><Coordinates>'
        + "".join(
            f'<Coordinate Order="{i}" X="{x}" Y="{y}"/>'
            for i, (x, y) in enumerate([(240, 200), (360, 200), (360, 280), (240, 280)])
        )
        + "</Coordinates></Annotation></Annotations></ASAP_Annotations>"
    )
    spec = {"format": "camelyon_xml", "dir": str(folder)}
    slides = draw.Slides({**cohort, "annotations": spec, "truth_dir": None})
    (outline,) = slides.lesions("s1").outline(0.5)
    # level-0 (240, 200)-(360, 280) at scale 0.5, through the edge pixels' centres
    np.testing.assert_allclose(outline.min(axis=0), [120, 100], atol=0.5)
    np.testing.assert_allclose(outline.max(axis=0), [180, 140], atol=0.5)
    title = _heatmap_title(cohort, tmp_path / "a", monkeypatch, annotations=spec)
    assert "from camelyon_xml annotations" in title and "without annotation" not in title
    (folder / "s1.xml").unlink()  # the slide now has none: label only, and the title says so
    title = _heatmap_title(cohort, tmp_path / "b", monkeypatch, annotations=spec)
    assert "1 of 1 slides without annotation: label only" in title


def test_umap_classes_come_from_the_annotation_classes(cohort, tmp_path):
    folder = tmp_path / "geojson"
    folder.mkdir()
    ring = [[240, 200], [360, 200], [360, 280], [240, 280], [240, 200]]
    feature = {
        "type": "Feature",
        "geometry": {"type": "Polygon", "coordinates": [ring]},
        "properties": {"classification": {"name": "Gleason 4"}},
    }
    (folder / "s1.geojson").write_text(
        json.dumps({"type": "FeatureCollection", "features": [feature]})
    )
    slides = draw.Slides({**cohort, "annotations": {"format": "geojson", "dir": str(folder)}})
    coords = np.array([[240, 200], [200, 200], [0, 0]])
    classes = patch_classes(slides, "s1", "x", coords, threshold=0.5)
    assert list(classes) == ["Gleason 4", "Gleason 4", NON_LESION]
    generated = patch_classes(draw.Slides(cohort), "s1", "x", coords, threshold=0.6)
    assert list(generated) == ["lesion (x)", NON_LESION, NON_LESION]
    assert patch_classes(draw.Slides({**cohort, "truth_dir": None}), "s1", "x", coords, 0.5) is None


# --- Kaplan-Meier and log-rank: against lifelines and a hand computation ------------------------


def _survival_cases():
    """8 cases; the 4 lowest risks live longer. Low: t 5 6+ 7 8; high: t 1 2 3+ 4 (+ censored)."""
    return pd.DataFrame(
        {
            "fold": 0,
            "case_id": [f"c{i}" for i in range(8)],
            "time": [5.0, 6.0, 7.0, 8.0, 1.0, 2.0, 3.0, 4.0],
            "event": [1, 0, 1, 1, 1, 1, 0, 1],
            "risk": [-4.0, -3.0, -2.0, -1.0, 1.0, 2.0, 3.0, 4.0],
        }
    )


def _hand_logrank(times, events, group):
    """Mantel's log-rank chi-square (1 df), written out: sum over event times of O - E and V."""
    observed = expected = variance = 0.0
    for t in np.unique(times[events == 1]):
        at_risk = times >= t
        n, n1 = at_risk.sum(), (at_risk & group).sum()
        d = ((times == t) & (events == 1)).sum()
        d1 = ((times == t) & (events == 1) & group).sum()
        observed += d1
        expected += d * n1 / n
        if n > 1:
            variance += d * (n1 / n) * (1 - n1 / n) * (n - d) / (n - 1)
    statistic = (observed - expected) ** 2 / variance
    return statistic, chi2.sf(statistic, 1)


def test_km_curves_and_logrank_p_equal_lifelines_and_hand_values():
    from lifelines import KaplanMeierFitter
    from lifelines.statistics import logrank_test

    cases = _survival_cases()
    analysis = km_curves.km_analysis(cases)
    low, high = analysis["groups"]["low"], analysis["groups"]["high"]
    # by hand: low 1 x 3/4 (t5), censored t6, x 1/2 (t7), x 0 (t8); high 3/4, 2/4, censored, 0
    assert dict(zip(low["time"], low["survival"], strict=True)) == pytest.approx(
        {0: 1, 5: 0.75, 6: 0.75, 7: 0.375, 8: 0.0}
    )
    assert dict(zip(high["time"], high["survival"], strict=True)) == pytest.approx(
        {0: 1, 1: 0.75, 2: 0.5, 3: 0.5, 4: 0.0}
    )
    assert (low["n"], low["events"], high["n"], high["events"]) == (4, 3, 4, 3)
    np.testing.assert_array_equal(low["censored_times"], [6.0])
    for group, rows in (("low", cases[:4]), ("high", cases[4:])):
        fitter = KaplanMeierFitter().fit(rows.time, rows.event)
        np.testing.assert_allclose(
            analysis["groups"][group]["survival"], fitter.survival_function_.iloc[:, 0]
        )
    reference = logrank_test(cases.time[:4], cases.time[4:], cases.event[:4], cases.event[4:])
    statistic, p = _hand_logrank(cases.time.to_numpy(), cases.event.to_numpy(), cases.risk > 0)
    assert analysis["p"] == pytest.approx(reference.p_value, rel=1e-12)
    assert analysis["p"] == pytest.approx(p, rel=1e-9)
    assert analysis["statistic"] == pytest.approx(statistic, rel=1e-9)


def test_each_fold_is_split_at_its_own_median_risk():
    cases = pd.concat(
        [_survival_cases(), _survival_cases().assign(fold=1, risk=lambda t: 100 + t.risk)],
        ignore_index=True,
    )  # pooled, fold 1's risks all lie above fold 0's
    groups = km_curves.risk_groups(cases)
    expected = np.where(cases.risk - 100 * cases.fold > 0, "high", "low")
    assert groups.tolist() == expected.tolist()


def test_km_figure_prints_the_logrank_p(tmp_path, monkeypatch):
    run = tmp_path / "run"
    run.mkdir()
    _survival_cases().to_csv(run / "predictions.csv", index=False)
    texts = []
    monkeypatch.setattr(
        km_curves,
        "finish",
        lambda figure, settings, title, out: texts.extend(
            t.get_text() for a in figure.axes for t in a.texts
        ),
    )
    km_curves.render({"dataset": "d", "runs": [{"title": "r", "dir": str(run)}]}, tmp_path / "k")
    assert texts == [km_curves.p_text(km_curves.km_analysis(_survival_cases())["p"])]
    assert texts[0].startswith("log-rank p = 0.")


def test_performance_vs_cost_reads_metric_interval_and_cost(tmp_path):
    runs = []
    for name, cost in (("a", 10.0), ("b", None)):
        folder = tmp_path / name
        folder.mkdir()
        summary = {"mean": 0.8, "ci_low": 0.7, "ci_high": 0.9}
        costs = {} if cost is None else {"train_seconds": cost}
        (folder / "metrics.json").write_text(
            json.dumps({"metrics": {"auc": summary}, "cost": costs})
        )
        runs.append({"title": name, "kind": "e2e", "dir": str(folder)})
    panel = {"dataset": "d", "metric": "auc", "runs": runs}
    assert panel_points(panel, "train_seconds") == [
        {"title": "a", "kind": "e2e", "cost": 10.0, "mean": 0.8, "low": 0.7, "high": 0.9}
    ]
    from abmilx.report.figures import performance_vs_cost

    settings = {"panels": [panel], "cost": "train_seconds", "log_x": True}
    path = performance_vs_cost.render(settings, tmp_path / "cost.png")
    assert path.exists() and path.with_suffix(".pdf").exists()


# --- attention dynamics -------------------------------------------------------------------------


def test_normalised_entropy_is_one_for_uniform_and_zero_for_one_patch():
    assert attention_dynamics.normalised_entropy(np.full(8, 1 / 8)) == pytest.approx(1.0)
    assert attention_dynamics.normalised_entropy(np.eye(1, 8)[0]) == pytest.approx(0.0)


def test_attention_dynamics_measures_the_mass_on_lesion_patches(cohort, tmp_path):
    run = tmp_path / "run"
    snapshots = run / "fold0" / "snapshots"
    snapshots.mkdir(parents=True)
    coords = np.array([[240, 200], [0, 0], [400, 400], [80, 400]])  # the first is lesion
    for epoch, on_lesion in ((0, 0.25), (3, 0.7)):
        rest = (1 - on_lesion) / 3
        attention = np.array([[on_lesion, rest, rest, rest]] * 2, np.float32)
        np.savez(
            snapshots / f"attention_epoch{epoch}.npz",
            **{"s1/coords": coords, "s1/attention": attention},
        )
    settings = {**cohort, "runs": [{"title": "r", "dir": str(run)}]}
    result = attention_dynamics.dynamics(
        attention_dynamics.load_snapshots(run), attention_dynamics.Slides(settings)
    )
    assert result["epochs"] == [0, 3]
    curve = result["slides"]["s1"]
    np.testing.assert_allclose(curve["lesion_mass"], [0.25, 0.7], rtol=1e-6)
    assert curve["lesion_share"] == 0.25
    assert curve["entropy"][0] == pytest.approx(1.0) and curve["entropy"][1] < 1.0
    path = attention_dynamics.render(settings, tmp_path / "dyn.png")
    assert path.exists() and path.with_suffix(".pdf").exists()


def _snapshot_run(folder, epochs):
    snapshots = folder / "fold0" / "snapshots"
    snapshots.mkdir(parents=True)
    rng = np.random.default_rng(len(epochs))
    for epoch in epochs:
        np.savez(
            snapshots / f"attention_epoch{epoch}.npz",
            **{"s1/coords": COORDS, "s1/attention": rng.random((2, len(COORDS)), np.float32)},
        )
    return {"title": folder.name, "dir": str(folder)}


def test_attention_dynamics_compares_runs_as_curves_and_as_heatmaps(cohort, tmp_path):
    runs = [
        _snapshot_run(tmp_path / "abmil", (0, 3)),
        _snapshot_run(tmp_path / "abmilx", (0, 1, 3)),
    ]
    settings = {**cohort, "runs": runs, "n_slides": 1, "normalisation": "percentile"}
    curves = attention_dynamics.render({**settings, "view": "curves"}, tmp_path / "c" / "d.png")
    width, height = Image.open(curves).size
    assert height > 0.5 * width  # two rows of three panels
    heatmaps = {**settings, "view": "heatmaps", "epochs": None}
    first = attention_dynamics.render(heatmaps, tmp_path / "h1" / "d.png")
    second = attention_dynamics.render(heatmaps, tmp_path / "h2" / "d.png")
    assert first.read_bytes() == second.read_bytes()
    width, height = Image.open(first).size
    assert height > 0.6 * width  # training and converged rows (one row: under 0.4)
    with pytest.raises(ValueError, match=r"abmil: no attention snapshot of epoch\(s\) \[2\]"):
        attention_dynamics.render({**heatmaps, "epochs": [2]}, tmp_path / "h3" / "d.png")


def test_attention_dynamics_without_snapshots_says_how_to_get_them(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"callbacks\.attention_every"):
        attention_dynamics.load_snapshots(tmp_path)


# --- sparsity vs feature quality (Fig. 2) -------------------------------------------------------


def _two_stage_run(folder, mil, features, auc, attention):
    (folder / "fold0").mkdir(parents=True)
    summary = {"mean": auc, "ci_low": auc - 0.05, "ci_high": auc + 0.05}
    (folder / "metrics.json").write_text(json.dumps({"metrics": {"auc": summary}}))
    np.savez(folder / "fold0" / "attention.npz", **{"s1/attention": np.array([attention])})
    return {"title": folder.name, "dir": str(folder), "mil": mil, "features": features}


def test_sparsity_vs_features_reads_metric_and_attention_sparsity(tmp_path):
    runs = [
        # min-max normalised: one of four patches above 0.5 (sparsity 0.75), or three (0.25)
        _two_stage_run(tmp_path / "a", "abmil", "r50", 0.7, [0.0, 0.1, 0.2, 1.0]),
        _two_stage_run(tmp_path / "b", "abmil", "uni", 0.9, [0.0, 0.1, 0.2, 1.0]),
        _two_stage_run(tmp_path / "c", "transmil", "r50", 0.8, [0.0, 0.9, 0.8, 1.0]),
    ]
    settings = {"dataset": "d", "title": "", "runs": runs, "metric": "auc", "seed": 0}
    found = sparsity_vs_features.points(settings)
    assert [p["metric"]["mean"] for p in found] == [0.7, 0.9, 0.8]
    assert [p["sparsity"]["point"] for p in found] == [0.75, 0.75, 0.25]
    first = sparsity_vs_features.render(settings, tmp_path / "f1" / "s.png")
    second = sparsity_vs_features.render(settings, tmp_path / "f2" / "s.png")
    assert first.read_bytes() == second.read_bytes()


# --- UMAP patch subsample -----------------------------------------------------------------------


def test_balanced_subsample_caps_evenly_and_is_deterministic():
    classes = np.array([NON_LESION] * 90 + ["lesion (a)"] * 8 + ["lesion (b)"] * 30, dtype=object)
    picked = balanced_subsample(classes, 30, seed=1)
    counts = pd.Series(classes[picked]).value_counts().to_dict()
    assert counts == {"lesion (a)": 8, "lesion (b)": 11, NON_LESION: 11}  # a's leftover shared
    np.testing.assert_array_equal(picked, balanced_subsample(classes, 30, seed=1))
    assert list(picked) == sorted(picked)
    assert len(balanced_subsample(classes, 500, seed=1)) == len(classes)


# --- publishing into the figures folder ---------------------------------------------------------


def test_publishing_one_figure_dates_the_folder_as_outdated(tmp_path):
    cache = tmp_path / ".figures" / "a"
    cache.mkdir(parents=True)
    (cache / "a.png").write_bytes(b"png")
    (cache / "a.pdf").write_bytes(b"pdf")
    (cache / TIMESTAMP).touch()  # Snakemake's date of the cache folder: not published
    out = tmp_path / "figures"
    publish([cache], out, part=False)
    assert sorted(p.name for p in out.iterdir()) == ["a.pdf", "a.png"]
    (out / TIMESTAMP).touch()  # what Snakemake leaves after the whole-folder rule
    publish([cache], out, part=True)
    assert sorted(p.name for p in out.iterdir()) == ["a.pdf", "a.png"]  # its timestamp dropped
    assert out.stat().st_mtime == 1  # older than any cache folder: `results/figures` copies again


# --- the shipped configs' figures ---------------------------------------------------------------


@pytest.mark.parametrize(
    "path",
    [REPO_ROOT / "config.yaml", *sorted(REPO_ROOT.glob("workflow/configs/paper/*.yaml"))],
    ids=lambda p: p.name,
)
def test_shipped_figures_resolve(path):
    config = load_config(path)
    tasks = {d: spec["task"] for d, spec in config["datasets"].items()}
    plans = plan_figures(
        config["figures"], resolve_experiments(config), tasks, config["feature_sets"]
    )
    assert all(plan["kind"] in KINDS for plan in plans.values())
    if path.name == "config.yaml":
        assert sorted(plans) == sorted(KINDS)


def _figure_config(figures, experiments=None, unavailable=None):
    config = validate_config(
        {
            "datasets": {
                "sub": {"task": "subtyping", "classes": ["a", "b"], "synthetic": {}},
                "surv": {"task": "survival", "synthetic": {}},
            },
            "feature_sets": {"f": {}},
            "experiments": experiments
            or {
                "two": {"kind": "two_stage", "features": "f"},
                "e2e": {"kind": "e2e", "datasets": ["sub"]},
            },
            "figures": figures,
        }
    )
    tasks = {"sub": "subtyping", "surv": "survival"}
    return plan_figures(
        config["figures"], resolve_experiments(config), tasks, {"f": {}}, unavailable
    )


def test_unavailable_columns_and_panels_are_left_out_with_their_reason():
    missing = {"two": "weights/uni.bin not found", "uni": "weights/uni.bin not found"}
    plans = _figure_config(
        {
            "heat": {"kind": "attention_heatmaps", "experiments": ["e2e", "two"]},
            "umap": {"kind": "umap_features", "experiment": "e2e", "features": ["f", "uni"]},
        },
        unavailable=missing,
    )
    assert [run["experiment"] for run in plans["heat"]["runs"]] == ["e2e"]
    assert plans["heat"]["left_out"] == {"two": missing["two"]}
    assert plans["umap"]["features"] == ["f"] and plans["umap"]["left_out"] == {
        "uni": missing["uni"]
    }
    assert draw.left_out_note(plans["heat"]) == "\nleft out: two (weights/uni.bin not found)"
    with pytest.raises(ValueError, match="figures/x/experiments': every experiment is unavailable"):
        _figure_config({"x": {"kind": "km_curves", "experiments": ["two"]}}, unavailable=missing)


@pytest.mark.parametrize(
    ("figure", "message"),
    [
        ({"kind": "km_curves", "experiments": ["nope"]}, "no experiment 'nope'"),
        ({"kind": "km_curves", "experiments": ["two"], "dataset": "sub"}, "need a survival one"),
        ({"kind": "km_curves", "experiments": ["e2e"], "dataset": "surv"}, "not run on 'surv'"),
        ({"kind": "attention_dynamics", "experiment": "e2e"}, "attention_every"),
        ({"kind": "umap_features", "experiment": "two", "features": "f"}, "trained patch encoder"),
        ({"kind": "umap_features", "experiment": "e2e", "features": "g"}, "no feature set 'g'"),
        ({"kind": "umap_features", "experiment": "e2e", "features": ["f", "g"]}, "set 'g'"),
        ({"kind": "sparsity_vs_features", "experiments": ["two", "e2e"]}, "'e2e' is a e2e run"),
        ({"kind": "attention_dynamics", "experiments": ["e2e"]}, "attention_every"),
    ],
)
def test_figure_references_fail_at_parse_time_naming_the_key(figure, message):
    with pytest.raises(ValueError, match=message) as error:
        _figure_config({"x": figure})
    assert "figures/x" in str(error.value)


def test_a_figure_of_unknown_options_fails_validation_naming_them():
    with pytest.raises(ConfigError, match=r"figures/x.*'n_slide'"):
        _figure_config({"x": {"kind": "attention_heatmaps", "experiments": ["e2e"], "n_slide": 2}})


def test_figure_defaults_come_from_the_schema():
    plan = _figure_config({"x": {"kind": "umap_features", "experiment": "e2e", "features": "f"}})
    assert plan["x"]["max_patches"] == 1500 and plan["x"]["dataset"] == "sub"
