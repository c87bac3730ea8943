"""Segmentation of files like the ones real users bring: drawings at screen resolution, files
that claim a huge size, unsupported compression, and dark haematoxylin-dense tissue."""

from __future__ import annotations

import json
import subprocess
import sys

import cv2
import numpy as np
import pytest
import skimage.data
import tifffile
from conftest import MPP, SEGMENT_SETTINGS, SEGMENTATION, draw_slide_image

from abmilx.cohort import plan_cohort, render_slide, write_slide
from abmilx.cohort.stain import HAEMATOXYLIN
from abmilx.geometry import rasterize_polygons, read_geojson
from abmilx.segmentation import segment
from abmilx.segmentation.segment import output_paths, segment_slide
from abmilx.segmentation.settings import SegmentationSettings
from abmilx.segmentation.tissue import tissue_mask

cv2.setNumThreads(1)
# The rule before dark, saturated pixels were told from ink: every pixel darker than
# black_value_max was excluded (chroma is at most 255, so 256 lets every dark pixel through).
OLD_BLACK_RULE = {"black_ink_chroma_max": 256}


def add_haematoxylin(rgb: np.ndarray, where: np.ndarray, optical_density: float) -> None:
    """Darken ``rgb`` in place by ``optical_density`` more haematoxylin (Beer-Lambert)."""
    weight = cv2.GaussianBlur(where.astype(np.float32), (0, 0), 2) * optical_density
    absorbed = np.exp(-weight[..., None] * HAEMATOXYLIN)
    rgb[:] = np.clip(rgb * absorbed + 0.5, 0, 255).astype(np.uint8)


# --- Resolution and memory -----------------------------------------------------------------


def drawn_tiff(path, **options) -> tuple:
    """The drawn slide image as a plain tiled TIFF (a converter's output), and the image."""
    image, _ = draw_slide_image()
    options = dict(photometric="rgb", tile=(256, 256), compression="jpeg", metadata=None) | options
    tifffile.imwrite(path, image, **options)
    return path, image


def test_drawing_at_72_dpi_fails_with_the_mpp_source_and_the_fields_it_has(tmp_path):
    path, image = drawn_tiff(tmp_path / "drawing.tif", resolution=(72, 72), resolutionunit="INCH")
    record = segment_slide(
        path,
        tmp_path / "d",
        slide_id="d",
        dataset="x",
        settings=SegmentationSettings.from_settings(SEGMENT_SETTINGS),
    )
    assert record["status"] == "failed" and "72 dpi" in record["reason"]
    assert (record["vendor"], record["mpp_source"]) == ("generic-tiff", "tiff-resolution-inch")
    assert (record["width"], record["height"]) == (image.shape[1], image.shape[0])
    sheet = segment_slide(
        path,
        tmp_path / "s",
        slide_id="s",
        dataset="x",
        mpp=MPP,
        settings=SegmentationSettings.from_settings(SEGMENT_SETTINGS),
    )
    assert (sheet["status"], sheet["mpp_source"]) == ("ok", "override")
    trusted = segment_slide(
        path,
        tmp_path / "t",
        slide_id="t",
        dataset="x",
        settings=SegmentationSettings.from_settings(SEGMENT_SETTINGS | {"trust_file_mpp": True}),
    )
    # trusted, the drawing is 300 mm wide: the view is its level 0, never upsampled to 4 µm/px
    assert trusted["mask"]["mpp"] == pytest.approx(25400 / 72)
    assert (trusted["mask"]["width"], trusted["mask"]["height"]) == (1200, 900)


# Peak RSS from VmHWM, the high-water mark of this process's own memory: getrusage's ru_maxrss
# would also count the parent's RSS at fork, which exec carries over (the pytest process is big).
HUGE_CLAIM = """
import json, sys
from abmilx.config import schema_defaults
from abmilx.segmentation.segment import segment_slide
from abmilx.segmentation.settings import SegmentationSettings
settings = SegmentationSettings.from_settings(schema_defaults("segmentation"))
record = segment_slide(sys.argv[1], sys.argv[2], settings, slide_id="huge", dataset="x")
status = open("/proc/self/status").read().split("VmHWM:")[1]
peak_mb = int(status.split()[0]) / 1024
print(json.dumps({"status": record["status"], "reason": record["reason"], "peak_mb": peak_mb}))
"""


def test_tiny_file_claiming_a_huge_size_fails_in_bounded_memory(tmp_path):
    """200,000 x 200,000 px at 0.5 µm/px, no pyramid, every tile missing: a 300 KB file."""
    side, tile = 200_000, 1024
    path = tmp_path / "huge.tif"
    tifffile.imwrite(
        path, iter([b""] * (-(-side // tile)) ** 2), shape=(side, side, 3), dtype=np.uint8,
        photometric="rgb", tile=(tile, tile), compression="jpeg", metadata=None,
        resolution=(20000, 20000), resolutionunit="CENTIMETER",
    )  # fmt: skip
    assert path.stat().st_size < 1_000_000
    run = subprocess.run(
        [sys.executable, "-c", HUGE_CLAIM, str(path), str(tmp_path / "huge")],
        capture_output=True, text=True, timeout=120, check=True,
    )  # fmt: skip
    result = json.loads(run.stdout.splitlines()[-1])
    assert result["status"] == "failed"
    assert "too large to segment: a 25000 x 25000 px view at 4 µm/px" in result["reason"]
    assert "of 1 levels" in result["reason"] and "memory_budget_mb" in result["reason"]
    print(f"huge-claim segmentation peak RSS: {result['peak_mb']:.0f} MB")
    assert result["peak_mb"] < 400
    assert all(p.is_file() for p in output_paths(tmp_path / "huge").values())


def test_overlay_is_capped_in_size(drawn_slide, tmp_path, monkeypatch):
    monkeypatch.setattr(segment, "OVERLAY_MAX_SIDE", 100)
    record = segment_slide(
        drawn_slide[0],
        tmp_path / "o",
        slide_id="o",
        dataset="x",
        settings=SegmentationSettings.from_settings(SEGMENT_SETTINGS),
    )
    overlay = cv2.imread(str(output_paths(tmp_path / "o")["overlay"]))
    mask = cv2.imread(str(output_paths(tmp_path / "o")["mask"]), cv2.IMREAD_GRAYSCALE)
    assert record["status"] == "ok" and mask.shape == (112, 150)  # the mask keeps its size
    assert overlay.shape == (75, 100, 3)
    green = (overlay[..., 1] > 150) & (overlay[..., 0] < 60) & (overlay[..., 2] < 60)
    assert green.sum() > 50, "the contours are drawn at the overlay's scale"


def test_unsupported_compression_record_keeps_what_the_file_tells(tmp_path):
    path, _ = drawn_tiff(tmp_path / "lzma.tif", compression="lzma", resolution=(20000, 20000),
                         resolutionunit="CENTIMETER")  # fmt: skip
    record = segment_slide(
        path,
        tmp_path / "z",
        slide_id="z",
        dataset="x",
        settings=SegmentationSettings.from_settings(SEGMENTATION),
    )
    assert record["status"] == "failed"
    assert record["reason"].startswith("unsupported TIFF compression 34925 (LZMA)")
    assert (record["vendor"], record["mpp"], record["width"]) == ("generic-tiff", 0.5, 1200)


# --- Dark, saturated tissue is not ink -----------------------------------------------------


def test_dense_haematoxylin_is_tissue_and_black_ink_is_not(tmp_path):
    image, masks = draw_slide_image()
    dense = np.zeros(masks["tissue"].shape, np.uint8)
    cv2.ellipse(dense, (880, 330), (60, 80), -20, 0, 360, 1, -1)  # a focus in the right piece
    dense = dense.astype(bool)
    add_haematoxylin(image, dense, 3.0)
    core = cv2.erode(dense.astype(np.uint8), np.ones((9, 9), np.uint8)).astype(bool)
    rgb = np.median(image[core], axis=0)
    assert rgb.max() < 90 and rgb.max() - rgb.min() > 40, rgb  # darker than black_value_max
    ink = np.zeros_like(dense, np.uint8)
    cv2.line(ink, (120, 250), (560, 640), 1, 16)  # black ink across the left piece
    ink = ink.astype(bool)
    image[ink] = (0.2 * image[ink] + 0.8 * np.array([30, 30, 38])).astype(np.uint8)
    path = write_slide(tmp_path / "dense.svs", image, mpp=MPP, slide_format="aperio")
    found = {}
    for name, settings in (("new", {}), ("old", OLD_BLACK_RULE)):
        prefix = tmp_path / name
        segment_slide(
            path,
            prefix,
            slide_id=name,
            dataset="x",
            settings=SegmentationSettings.from_settings(SEGMENT_SETTINGS | settings),
        )
        found[name] = cv2.imread(str(output_paths(prefix)["mask"]), cv2.IMREAD_GRAYSCALE) > 0

    def share(mask, region):
        size = mask.shape[::-1]
        small = cv2.resize(region.astype(np.float32), size, interpolation=cv2.INTER_AREA) > 0.99
        return mask[small].mean()

    assert share(found["new"], dense) > 0.95
    assert share(found["old"], dense) < 0.2
    assert share(found["new"], ink) < 0.05  # as the cohort test bounds pen marks


def test_real_stained_image_at_double_density_stays_tissue():
    """scikit-image's IHC image (haematoxylin and DAB; dev dependency), the only stained tissue
    a package ships offline (its H&E 'skin' image is a download); twice its optical density
    makes a third of it darker than black_value_max."""
    image = skimage.data.immunohistochemistry()
    tissue = SegmentationSettings.from_settings(SEGMENTATION)
    reference = tissue_mask(image, mpp=4.0, settings=tissue.updated({"pen_hue_ranges_deg": []}))
    reference = reference.mask
    density = -np.log((image.astype(np.float64) + 1) / 256)
    dense = np.clip(256 * np.exp(-2 * density) - 1, 0, 255).astype(np.uint8)
    value = cv2.cvtColor(cv2.medianBlur(dense, 7), cv2.COLOR_RGB2HSV)[..., 2]
    assert (value[reference] < 90).mean() > 0.25

    def recall(**settings):
        mask = tissue_mask(dense, mpp=4.0, settings=tissue.updated(settings)).mask
        return (mask & reference).sum() / reference.sum()

    assert recall() > 0.75
    assert recall(**OLD_BLACK_RULE) < 0.5


def dense_cohort(root, n_slides: int = 4, seed: int = 11):
    """Synthetic slides (1 µm/px) with haematoxylin-dense foci, and their truth masks."""
    plan = plan_cohort("dense", "subtyping", n_slides, n_slides, seed=seed,
                       format_fractions={"aperio": 1.0}, aperio_mpp=1.0)  # fmt: skip
    rng = np.random.default_rng(seed)
    slides = []
    for row in plan.to_dict("records"):
        images = render_slide(row, width_um=1200, height_um=900, pen_probability=0.5)
        tissue = images["tissue"]
        foci = np.zeros(tissue.shape, np.uint8)
        ys, xs = np.nonzero(cv2.erode(tissue.astype(np.uint8), np.ones((61, 61), np.uint8)))
        for index in rng.choice(len(ys), size=min(3, len(ys)), replace=False):
            axes = tuple(int(a) for a in rng.uniform(40, 90, 2))
            cv2.ellipse(foci, (int(xs[index]), int(ys[index])), axes, rng.uniform(0, 180), 0, 360,
                        1, -1)  # fmt: skip
        foci = foci.astype(bool) & tissue
        add_haematoxylin(images["rgb"], foci, rng.uniform(2.8, 3.4))
        path = write_slide(root / f"{row['slide_id']}.svs", images["rgb"], mpp=1.0,
                           slide_format="aperio")  # fmt: skip
        slides.append((path, tissue, foci))
    return slides


def tissue_iou(prefix, truth: np.ndarray) -> float:
    found = rasterize_polygons(
        read_geojson(f"{prefix}.geojson"), truth.shape[1], truth.shape[0], (1.0, 1.0)
    ).astype(bool)
    return float((found & truth).sum() / (found | truth).sum())


def test_generated_cohort_with_dense_foci_keeps_them(tmp_path):
    settings = SEGMENTATION | {"min_tissue_area_um2": 20000, "min_hole_area_um2": 4000}
    for path, truth, foci in dense_cohort(tmp_path):
        iou = {}
        for name, extra in (("new", {}), ("old", OLD_BLACK_RULE)):
            prefix = tmp_path / f"{path.stem}-{name}"
            segment_slide(
                path,
                prefix,
                slide_id=path.stem,
                dataset="x",
                settings=SegmentationSettings.from_settings(settings | extra),
            )
            iou[name] = tissue_iou(prefix, truth)
        print(f"{path.stem}: foci {foci.sum() / truth.sum():.3f} of tissue, IoU {iou}")
        assert iou["new"] >= 0.9
        assert iou["new"] > iou["old"] + 0.5 * foci.sum() / truth.sum()
