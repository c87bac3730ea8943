"""Slide reading: metadata, exact-mpp level choice, aligned reads and unusable files."""

from __future__ import annotations

import os

import cv2
import numpy as np
import pytest
import tifffile

from abmilx.cohort.slidefile import write_slide
from abmilx.config import schema_defaults
from abmilx.slides import Slide, SlideError, check_mpp, resize_to
from abmilx.tiling.grid import plan_scale, read_patch

PLAUSIBLE_MPP = tuple(schema_defaults("segmentation")["plausible_mpp"])

cv2.setNumThreads(1)


def gradient_image(height: int, width: int, seed: int = 0) -> np.ndarray:
    """Smooth but position-dependent pixels, so a wrong level or offset shows."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    image = np.stack([x / width * 200 + 30, y / height * 200 + 30, (x + y) % 97 + 80], axis=-1)
    image += rng.normal(0, 2, image.shape)
    return np.clip(image, 0, 255).astype(np.uint8)


@pytest.fixture(scope="module")
def slides(tmp_path_factory):
    root = tmp_path_factory.mktemp("slides")
    image = gradient_image(768, 1024)
    return {
        "aperio_025": write_slide(root / "a.svs", image, mpp=0.25, slide_format="aperio"),
        "generic_05": write_slide(
            root / "g.tif", image, mpp=0.5, slide_format="generic", downsamples=(1, 2, 4, 8)
        ),
        "nompp": write_slide(root / "n.tif", image, mpp=0.5, slide_format="nompp"),
        "image": image,
    }


def test_metadata_from_properties(slides):
    with Slide(slides["aperio_025"]) as slide:
        info = slide.info
        assert (info.vendor, info.mpp, info.mpp_source) == ("aperio", 0.25, "metadata")
        assert (info.objective_power, info.objective_power_source) == (40.0, "metadata")
        assert (info.width, info.height, info.level_count) == (1024, 768, 3)
        assert info.level_downsamples == (1.0, 4.0, 16.0)
    with Slide(slides["generic_05"]) as slide:
        assert slide.info.vendor == "generic-tiff"
        assert (slide.info.objective_power, slide.info.objective_power_source) == (20.0, "mpp")


def test_mpp_override_and_missing_mpp(slides):
    with pytest.raises(SlideError, match="no mpp metadata") as caught:
        Slide(slides["nompp"])
    assert "override" in caught.value.reason
    with Slide(slides["nompp"], mpp_override=0.5) as slide:
        assert (slide.mpp, slide.info.mpp_source) == (0.5, "override")
    with Slide(slides["aperio_025"], mpp_override=0.3) as slide:  # the sheet wins
        assert (slide.mpp, slide.info.mpp_source) == (0.3, "override")
    with pytest.raises(SlideError, match="positive"):
        Slide(slides["aperio_025"], mpp_override=-1.0)


@pytest.mark.parametrize(
    ("name", "target", "level"),
    [
        ("aperio_025", 1.0, 1),  # level 1 is exactly 1.0 µm/px
        ("aperio_025", 0.5, 0),  # level 1 would be too coarse
        ("aperio_025", 0.25, 0),
        ("aperio_025", 4.0, 2),
        ("aperio_025", 3.9, 1),
        ("generic_05", 2.0, 2),
        ("generic_05", 1.5, 1),
        ("generic_05", 100.0, 3),
    ],
)
def test_level_is_coarsest_at_least_as_fine(slides, name, target, level):
    with Slide(slides[name]) as slide:
        assert slide.level_for_mpp(target) == level


def test_level_tolerance_allows_slightly_coarser_level(slides):
    with Slide(slides["aperio_025"], mpp_override=0.2527) as slide:  # level 1: 1.0108 µm/px
        assert slide.level_for_mpp(1.0) == 0
        assert slide.level_for_mpp(1.0, tolerance=0.02) == 1


def test_read_at_target_uses_level_directly(slides):
    with Slide(slides["aperio_025"]) as slide:
        plan = plan_scale(slide, "main", 1.0, 64, 0.0)
        assert (plan.level, plan.read_size, plan.extent_level0) == (1, 64, 256.0)
        level1 = slide.read_level(1, 0, 0, 256, 192)
        np.testing.assert_array_equal(read_patch(slide, plan, 32, 64), level1[64:128, 32:96])


def test_read_at_half_resizes_level0_by_two(slides):
    with Slide(slides["aperio_025"]) as slide:
        plan = plan_scale(slide, "main", 0.5, 64, 0.0)
        assert (plan.level, plan.read_size, plan.extent_level0) == (0, 128, 128.0)
        region = slide.read_level(0, 256, 128, 128, 128)
        expected = cv2.resize(region, (64, 64), interpolation=cv2.INTER_AREA)
        np.testing.assert_array_equal(read_patch(slide, plan, 256, 128), expected)
        # and it shows the right place of the original image (JPEG-close)
        truth = cv2.resize(
            slides["image"][128:256, 256:384], (64, 64), interpolation=cv2.INTER_AREA
        )
        assert np.abs(expected.astype(int) - truth.astype(int)).mean() < 3.0


def test_generic_level2_at_2um(slides):
    with Slide(slides["generic_05"]) as slide:
        plan = plan_scale(slide, "low", 2.0, 32, 0.0)
        assert (plan.level, plan.read_size, plan.extent_level0) == (2, 32, 128.0)


def test_outside_the_slide_reads_white(slides):
    with Slide(slides["aperio_025"]) as slide:
        region = slide.read_level(0, 1000, 740, 64, 64)  # 24 x 28 px inside
        assert (region[28:, :] == 255).all() and (region[:, 24:] == 255).all()
        assert (region[:28, :24] < 255).any()


def test_thumbnail_size_is_physical(slides):
    with Slide(slides["aperio_025"]) as slide:
        assert slide.thumbnail(2.0).shape == (96, 128, 3)
        assert slide.thumbnail(3.0).shape == (64, 85, 3)


@pytest.mark.parametrize("name", ["aperio_025", "generic_05"])
def test_thumbnail_from_raw_tiles_is_openslides(slides, name):
    """The thumbnail, put together from raw JPEG tiles, is OpenSlide's read of its level."""
    with Slide(slides[name]) as slide:
        level, width, height = slide.view_size(2.0)
        assert slide.jpeg_tiles(level) is not None
        region = slide.read_level(level, 0, 0, *slide.level_dimensions(level))
        np.testing.assert_array_equal(slide.thumbnail(2.0), resize_to(region, width, height))


@pytest.mark.parametrize(
    ("kind", "reason"),
    [
        ("missing", "file not found"),
        ("zero", "zero-byte"),
        ("text", "not a slide file"),
        ("truncated", "truncated file"),
    ],
)
def test_unusable_files(slides, tmp_path, kind, reason):
    path = tmp_path / "bad.svs"
    if kind == "zero":
        path.touch()
    elif kind == "text":
        path.write_text("slide_id,case_id\nA,B\n")
    elif kind == "truncated":
        data = slides["aperio_025"].read_bytes()
        path.write_bytes(data[: len(data) * 2 // 3])
    with pytest.raises(SlideError, match=reason) as caught:
        Slide(path)
    assert str(path) in str(caught.value)


@pytest.mark.skipif(os.geteuid() == 0, reason="root can read a file of mode 000")
def test_unreadable_file(slides, tmp_path):
    path = tmp_path / "locked.svs"
    path.write_bytes(slides["aperio_025"].read_bytes())
    path.chmod(0)
    try:
        with pytest.raises(SlideError, match="permission denied"):
            Slide(path)
    finally:
        path.chmod(0o644)


def test_directory_named_like_a_slide(tmp_path):
    (tmp_path / "x.svs").mkdir()
    with pytest.raises(SlideError, match="is a directory"):
        Slide(tmp_path / "x.svs")


# --- Resolution sanity -------------------------------------------------------------------


def write_tiff(path, image, **kwargs):
    """A tiled TIFF as a drawing program or a converter writes it (no slide metadata)."""
    options = dict(photometric="rgb", tile=(256, 256), compression="jpeg", metadata=None)
    tifffile.imwrite(path, image, **(options | kwargs))
    return path


def test_a_72_dpi_drawing_is_refused_until_the_sheet_gives_its_mpp(slides, tmp_path):
    path = write_tiff(
        tmp_path / "drawing.tif", slides["image"], resolution=(72, 72), resolutionunit="INCH"
    )
    with Slide(path) as slide:
        assert slide.info.mpp_source == "tiff-resolution-inch"
        with pytest.raises(SlideError, match="72 dpi") as caught:
            check_mpp(slide, PLAUSIBLE_MPP, False)
        assert "'mpp'" in caught.value.reason and "trust_file_mpp" in caught.value.reason
        assert caught.value.facts["vendor"] == "generic-tiff"
        check_mpp(slide, PLAUSIBLE_MPP, True)
    with Slide(path, mpp_override=0.5) as slide:
        check_mpp(slide, PLAUSIBLE_MPP, False)


def test_mpp_outside_the_microscope_range_is_refused(slides, tmp_path):
    coarse = write_tiff(
        tmp_path / "c.tif", slides["image"], resolution=(200, 200), resolutionunit="CENTIMETER"
    )
    with Slide(coarse) as slide, pytest.raises(SlideError, match=r"outside the 0\.1-20 µm/px"):
        check_mpp(slide, PLAUSIBLE_MPP, False)
    with Slide(slides["generic_05"]) as slide:
        assert slide.info.mpp_source == "tiff-resolution-centimeter"
        # the synthetic cohort's generic slides stay accepted
        check_mpp(slide, PLAUSIBLE_MPP, False)
    with Slide(slides["aperio_025"]) as slide:
        check_mpp(slide, plausible_mpp=(0.1, 0.2), trust_file_mpp=True)
        with pytest.raises(SlideError, match="from metadata"):
            check_mpp(slide, plausible_mpp=(0.1, 0.2), trust_file_mpp=False)


def test_a_scale_finer_than_level0_is_refused_not_upsampled(slides):
    with Slide(slides["generic_05"]) as slide:
        plan_scale(slide, "main", 0.47, 64, 0.0)  # 6 % finer: within the tolerance
        with pytest.raises(SlideError, match=r"'main' at 0.25 µm/px .* level 0 \(0.5 µm/px") as e:
            plan_scale(slide, "main", 0.25, 64, 0.0)
        assert "upsampled 2x" in e.value.reason and "'mpp' in the slide sheet" in e.value.reason
        assert e.value.facts["mpp"] == 0.5
        # a thumbnail asked finer than level 0 comes at level 0
        assert slide.thumbnail(0.1).shape == (768, 1024, 3)


# --- Honest reasons -----------------------------------------------------------------------


def test_unsupported_compression_names_it_and_keeps_what_the_file_tells(slides, tmp_path):
    path = write_tiff(
        tmp_path / "lzma.tif",
        slides["image"],
        compression="lzma",
        resolution=(20000, 20000),
        resolutionunit="CENTIMETER",
    )
    with pytest.raises(SlideError, match=r"unsupported TIFF compression 34925 \(LZMA\)") as e:
        Slide(path)
    assert e.value.facts == {
        "vendor": "generic-tiff",
        "width": 1024,
        "height": 768,
        "level_count": 1,
        "tiled": True,
        "mpp": 0.5,
        "mpp_source": "tiff-resolution-centimeter",
    }


def test_truncated_file_unreadable_tile_and_picture_each_have_their_reason(slides, tmp_path):
    data = slides["generic_05"].read_bytes()
    truncated = tmp_path / "t.tif"
    truncated.write_bytes(data[: len(data) // 2])
    with pytest.raises(SlideError, match=r"truncated file: .* bytes, but its tiles reach") as e:
        Slide(truncated)
    assert (e.value.facts["width"], e.value.facts["height"]) == (1024, 768)

    with tifffile.TiffFile(slides["generic_05"]) as tif:
        offset, count = tif.pages[0].dataoffsets[1], tif.pages[0].databytecounts[1]
    damaged = bytearray(data)
    damaged[offset : offset + count] = bytes(count)  # same size, one tile zeroed
    (tmp_path / "d.tif").write_bytes(bytes(damaged))
    with Slide(tmp_path / "d.tif") as slide:
        slide.read_level(0, 0, 0, 64, 64)  # the first tile is fine
        with pytest.raises(SlideError, match=r"unreadable tile at level 0 .* file is complete"):
            slide.read_level(0, 256, 0, 64, 64)

    picture = tmp_path / "p.tif"
    tifffile.imwrite(picture, slides["image"], photometric="rgb", metadata=None)
    with pytest.raises(SlideError, match="not a slide file: a TIFF image without tiles"):
        Slide(picture)
