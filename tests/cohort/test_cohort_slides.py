"""Rendered slides: real files in OpenSlide, determinism, and ground truth that matches pixels."""

from __future__ import annotations

import cv2
import numpy as np
import openslide
import pytest

from abmilx.cohort import load_truth, plan_cohort, render_slide, synthesize_slide
from abmilx.cohort.lesions import survival_grade


def _row(plan, slide_format, mpp=None):
    rows = plan[plan["slide_format"] == slide_format]
    if mpp is not None:
        rows = rows[rows["mpp"] == mpp]
    return rows.iloc[0]


@pytest.mark.parametrize(
    ("slide_format", "mpp", "vendor", "power"),
    [
        ("aperio", 0.5, "aperio", "20"),
        ("generic", 0.25, "generic-tiff", None),
        ("nompp", 0.5, "generic-tiff", None),
    ],
)
def test_every_format_opens_in_openslide(
    tmp_path, small, subtyping_plan, slide_format, mpp, vendor, power
):
    row = _row(subtyping_plan, slide_format, mpp)
    path = tmp_path / row["file"]
    synthesize_slide(row, path, tmp_path / "truth.npz", **small)
    with openslide.OpenSlide(path) as slide:
        props = slide.properties
        assert props["openslide.vendor"] == vendor
        assert props.get("openslide.objective-power") == power
        if slide_format == "nompp":
            assert "openslide.mpp-x" not in props
        else:
            assert float(props["openslide.mpp-x"]) == pytest.approx(mpp, rel=1e-4)
            assert float(props["openslide.mpp-y"]) == pytest.approx(mpp, rel=1e-4)
        assert slide.level_count == 3
        assert slide.dimensions == (round(400 / mpp), round(300 / mpp))
        assert slide.level_downsamples == pytest.approx((1.0, 4.0, 16.0), rel=0.02)
    truth = load_truth(tmp_path / "truth.npz")
    assert truth["mpp"] == pytest.approx(mpp * truth["downsample"])
    assert tuple(truth["level0_shape"]) == (round(300 / mpp), round(400 / mpp))
    assert truth["tissue"].shape == (-(-round(300 / mpp) // 8), -(-round(400 / mpp) // 8))


def test_same_seed_same_bytes_other_seed_other_bytes(tmp_path, small, subtyping_plan):
    row = _row(subtyping_plan, "aperio")
    for run in ("a", "b"):
        synthesize_slide(row, tmp_path / run / "s.svs", tmp_path / run / "t.npz", **small)
    other = row.copy()
    other["seed"] = row["seed"] + 1
    synthesize_slide(other, tmp_path / "c" / "s.svs", tmp_path / "c" / "t.npz", **small)
    read = lambda run, name: (tmp_path / run / name).read_bytes()  # noqa: E731
    assert read("a", "s.svs") == read("b", "s.svs")
    assert read("a", "t.npz") == read("b", "t.npz")
    assert read("a", "s.svs") != read("c", "s.svs")
    assert read("a", "t.npz") != read("c", "t.npz")


@pytest.fixture(scope="module")
def medium_slide(tmp_path_factory):
    """A 1 x 0.75 mm aperio slide with a pen mark, written and its truth loaded."""
    plan = plan_cohort("demo", "subtyping", 40, 30, seed=7)
    row = plan[plan["slide_format"] == "aperio"].iloc[1]
    folder = tmp_path_factory.mktemp("medium")
    synthesize_slide(
        row,
        folder / row["file"],
        folder / "truth.npz",
        width_um=1000,
        height_um=750,
        pen_probability=1.0,
    )
    return row, folder / row["file"], load_truth(folder / "truth.npz")


def test_truth_masks_are_consistent(medium_slide):
    row, _, truth = medium_slide
    tissue, lesion, artefact = truth["tissue"], truth["lesion"], truth["artefact"]
    assert 0.2 <= tissue.mean() <= 0.6
    assert not (lesion & ~tissue).any()  # lesions lie inside tissue
    assert artefact.sum() > 100  # the pen stroke is there ...
    assert not (artefact & tissue).any()  # ... and is never tissue
    fraction = lesion.sum() / tissue.sum()
    assert fraction == pytest.approx(row["lesion_fraction"], rel=0.35)


def test_truth_tissue_is_what_is_rendered(medium_slide):
    """Saturation thresholding of the slide's own pixels recovers the truth (IoU >= 0.9)."""
    _, path, truth = medium_slide
    ds = truth["downsample"]
    with openslide.OpenSlide(path) as slide:
        width, height = slide.dimensions
        rgb = np.asarray(slide.read_region((0, 0), 0, (width, height)).convert("RGB"))
    small = cv2.resize(
        rgb, (truth["tissue"].shape[1], truth["tissue"].shape[0]), interpolation=cv2.INTER_AREA
    )
    assert ds * small.shape[1] >= width
    saturation = cv2.cvtColor(small, cv2.COLOR_RGB2HSV)[..., 1]
    found = (saturation > 25) & ~truth["artefact"]
    iou = (found & truth["tissue"]).sum() / (found | truth["tissue"]).sum()
    assert iou >= 0.9
    glass = ~truth["tissue"] & ~truth["artefact"]
    glass = cv2.erode(glass.astype(np.uint8), np.ones((5, 5), np.uint8)).astype(bool)
    assert 228 <= small[glass].mean() <= 248  # bright, near-white background


def _lesion_and_stroma(label):
    """Mean RGB and share of dark (nuclear) pixels in the lesion and in the other tissue."""
    plan = plan_cohort("demo", "subtyping", 30, 30, seed=4, lesion_fraction=0.12)
    row = plan[(plan["label"] == label) & (plan["slide_format"] == "aperio")].iloc[0]
    images = render_slide(row, width_um=800, height_um=600, pen_probability=0.0)
    rgb, lesion = images["rgb"].astype(float), images["lesion"]
    stroma = images["tissue"] & ~lesion
    dark = rgb.mean(axis=2) < 130
    return (
        rgb[lesion].mean(axis=0),
        rgb[stroma].mean(axis=0),
        dark[lesion].mean(),
        dark[stroma].mean(),
    )


def test_subtype_lesions_look_different():
    idc_rgb, _, idc_dark, idc_stroma_dark = _lesion_and_stroma("IDC")
    ilc_rgb, ilc_stroma_rgb, ilc_dark, _ = _lesion_and_stroma("ILC")
    # IDC nests: crowded dark nuclei, far more than in stroma or in ILC lesions.
    assert idc_dark > 3 * idc_stroma_dark
    assert idc_dark > ilc_dark + 0.05
    assert idc_rgb[1] < ilc_rgb[1] - 20
    # ILC: paler stroma (less eosin: more green) with a lilac hue shift (red drops, blue > red).
    assert ilc_rgb[1] > ilc_stroma_rgb[1] + 10
    assert ilc_rgb[0] < ilc_stroma_rgb[0] - 10
    assert ilc_rgb[2] > ilc_rgb[0]


@pytest.mark.parametrize(("task", "label"), [("grading", "0"), ("diagnosis", "normal")])
def test_negative_slides_have_no_lesion(small, task, label):
    plan = plan_cohort("demo", task, 30, 30, seed=4)
    row = plan[plan["label"] == label].iloc[0]
    assert not render_slide(row, **small)["lesion"].any()


@pytest.mark.parametrize(
    ("task", "label"),
    [("grading", "1"), ("grading", "5"), ("diagnosis", "tumor"), ("survival", None)],
)
def test_positive_slides_of_every_task_have_lesions(task, label):
    plan = plan_cohort("demo", task, 30, 30, seed=4)
    row = plan.iloc[0] if label is None else plan[plan["label"] == label].iloc[0]
    images = render_slide(row, width_um=800, height_um=600)
    fraction = images["lesion"].sum() / images["tissue"].sum()
    assert fraction == pytest.approx(row["lesion_fraction"], rel=0.35)


def test_plan_row_without_required_column_is_named(tmp_path, small, subtyping_plan):
    row = subtyping_plan.iloc[0].drop("lesion_fraction")
    with pytest.raises(KeyError, match="lesion_fraction"):
        synthesize_slide(row, tmp_path / "s.svs", tmp_path / "t.npz", **small)


def test_survival_morphology_grows_more_aggressive_with_the_burden():
    grades = [survival_grade(f) for f in (0.02, 0.07, 0.12, 0.2, 0.4)]
    assert grades == [2, 3, 4, 5, 5]


def test_every_metastasis_covers_more_than_one_patch():
    """CAMELYON-like metastases are small, but each spans more than one 64 µm demo patch."""
    plan = plan_cohort("demo", "diagnosis", 40, 40, seed=6)
    tumor = plan[plan["label"] == "tumor"]
    row = tumor.loc[tumor["lesion_fraction"].idxmin()]  # the smallest burden of the cohort
    images = render_slide(row, width_um=1200, height_um=900, pen_probability=0.0)
    count, _, stats, _ = cv2.connectedComponentsWithStats(images["lesion"].astype(np.uint8))
    areas_um2 = stats[1:, cv2.CC_STAT_AREA] * row["mpp"] ** 2
    assert count > 1 and areas_um2.min() > 64 * 64
    assert images["lesion"].sum() / images["tissue"].sum() < 0.1
