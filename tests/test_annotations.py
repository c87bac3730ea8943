"""Annotation readers on small files in each real format, patch fractions against hand counts."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import tifffile

from abmilx import annotations
from abmilx.annotations import Annotations, read_camelyon_xml, read_geojson, read_panda_mask
from abmilx.config import ConfigError, check_config, validate_config

FOOTPRINT = 256


def _panda_mask(path: Path, subifds: bool = True) -> Path:
    """A PANDA-like mask: tiled RGB TIFF, labels in channel 0, pyramid at 4x and 16x (as SubIFDs
    of the first page, or as pages of their own)."""
    mask = np.zeros((1024, 1536, 3), np.uint8)
    mask[:512, :512, 0] = 4  # Radboud Gleason 4 (Karolinska: not a label it uses)
    mask[:512, 512:1024, 0] = 2  # Radboud healthy epithelium, Karolinska cancer
    mask[512:, :256, 0] = 5  # Radboud Gleason 5
    mask[..., 1] = 7  # other channels carry nothing
    with tifffile.TiffWriter(path) as tiff:
        tiff.write(mask, tile=(256, 256), photometric="rgb", subifds=2 if subifds else 0)
        tiff.write(mask[::4, ::4], tile=(64, 64), photometric="rgb", subfiletype=int(subifds))
        tiff.write(mask[::16, ::16], photometric="rgb", subfiletype=int(subifds))
    return path


PANDA_PATCHES = np.array([[0, 0], [512, 0], [128, 512], [256, 384], [1280, 768]])


@pytest.mark.parametrize("subifds", [True, False])
@pytest.mark.parametrize("max_side", [4096, 400, 100, 30])
def test_panda_mask_fractions_and_grades_at_any_pyramid_level(
    tmp_path, monkeypatch, max_side, subifds
):
    # 4096 reads level 0, 400 the 4x level, 100 the 16x level, 30 the 16x level decimated by 4
    monkeypatch.setattr(annotations, "MAX_SIDE", max_side)
    path = _panda_mask(tmp_path / "a1_mask.tiff", subifds)
    radboud = read_panda_mask(path, "Radboud")
    assert max(radboud.labels.shape) <= max_side
    assert radboud.downsample == {4096: 1, 400: 4, 100: 16, 30: 64}[max_side]
    # (0,0) all Gleason 4; (512,0) epithelium only; (128,512) half Gleason 5 (columns 128-255 of
    # 128-383); (256,384) rows 384-511 of 384-639 Gleason 4; (1280,768) background
    expected = [1.0, 0.0, 0.5, 0.5, 0.0]
    np.testing.assert_allclose(radboud.fraction(PANDA_PATCHES, FOOTPRINT), expected)
    names, _ = radboud.patch_classes(PANDA_PATCHES, FOOTPRINT)
    assert list(names) == ["Gleason 4", "", "Gleason 5", "Gleason 4", ""]
    karolinska = read_panda_mask(path, "karolinska")
    np.testing.assert_allclose(
        karolinska.fraction(PANDA_PATCHES, FOOTPRINT), [0.0, 1.0, 0.0, 0.0, 0.0]
    )


@pytest.mark.parametrize("subifds", [True, False])
def test_a_fitting_pyramid_level_is_read_whole_not_level_0_decimated(
    tmp_path, monkeypatch, subifds
):
    monkeypatch.setattr(annotations, "MAX_SIDE", 400)
    tiff, page, downsample, step = annotations._tiff_level(
        _panda_mask(tmp_path / "m.tiff", subifds)
    )
    with tiff:
        assert page.shape[:2] == (256, 384) and (downsample, step) == (4, 1)


def test_panda_mask_of_an_unknown_provider_fails_naming_the_file(tmp_path):
    path = _panda_mask(tmp_path / "a1_mask.tiff")
    with pytest.raises(ValueError, match=r"a1_mask\.tiff: data provider 'leeds'"):
        read_panda_mask(path, "leeds")


def _square(x0, y0, x1, y1):
    return [(x0, y0), (x1, y0), (x1, y1), (x0, y1)]


def _asap(path: Path, regions) -> Path:
    lines = ["<?xml version='1.0'?>", "<ASAP_Annotations>", "<Annotations>"]
    for number, (group, points) in enumerate(regions):
        lines.append(
            f'<Annotation Name="_{number}" Type="Polygon" PartOfGroup="{group}" Color="#F4FA58">'
        )
        lines.append("<Coordinates>")
        # written out of order: the reader follows Order
        for order, (x, y) in reversed(list(enumerate(points))):
            lines.append(f'<Coordinate Order="{order}" X="{x}" Y="{y}" />')
        lines += ["</Coordinates>", "</Annotation>"]
    lines += ["</Annotations>", "<AnnotationGroups />", "</ASAP_Annotations>"]
    path.write_text("\n".join(lines))
    return path


def test_camelyon_xml_tumour_groups_less_exclusion_holes(tmp_path):
    path = _asap(
        tmp_path / "tumor_001.xml",
        [
            ("Tumor", _square(0, 0, 400, 400)),
            ("_2", _square(100, 100, 200, 200)),
            ("_1", _square(600, 0, 800, 200)),
        ],
    )
    lesions = read_camelyon_xml(path)
    patches = np.array([[0, 0], [200, 200], [600, 0], [400, 0], [300, 300]])
    # (0,0): 200x200 less the 100x100 hole; (300,300): 100x100 of tumour
    np.testing.assert_allclose(lesions.fraction(patches, 200), [0.75, 1.0, 1.0, 0.0, 0.25])


def test_camelyon_xml_of_an_unknown_group_fails_naming_it(tmp_path):
    path = _asap(tmp_path / "t.xml", [("Metastasis", _square(0, 0, 10, 10))])
    with pytest.raises(ValueError, match=r"t\.xml: annotation 0 .* group 'Metastasis'"):
        read_camelyon_xml(path)


def _qupath(path: Path, features) -> Path:
    collection = {
        "type": "FeatureCollection",
        "features": [
            {
                "type": "Feature",
                "geometry": {"type": "Polygon", "coordinates": [[*points, points[0]]]},
                "properties": {"objectType": "annotation"}
                | ({"classification": {"name": name, "color": [200, 0, 0]}} if name else {}),
            }
            for name, points in features
        ],
    }
    path.write_text(json.dumps(collection))
    return path


def test_geojson_classes_lesion_classes_and_holes(tmp_path):
    path = _qupath(
        tmp_path / "s1.geojson",
        [
            ("Tumor", _square(0, 0, 300, 300)),
            ("Stroma", _square(300, 0, 600, 300)),
            ("Ignore", _square(0, 0, 100, 100)),
            (None, _square(0, 400, 100, 500)),
        ],
    )
    patches = np.array([[0, 0], [300, 0], [150, 0], [0, 400]])
    tumour_only = read_geojson(path, ["Tumor"], ["Ignore"])
    # (0,0) less the 100x100 hole; (150,0): columns 150-299 of 150-349 are Tumor
    np.testing.assert_allclose(tumour_only.fraction(patches, 200), [0.75, 0.0, 0.75, 0.0])
    every = read_geojson(path, None, ["Ignore"])
    np.testing.assert_allclose(every.fraction(patches, 200), [0.75, 1.0, 1.0, 0.25])
    names, _ = every.patch_classes(patches, 200)
    assert list(names) == ["Tumor", "Stroma", "Tumor", "lesion"]


def test_dataset_annotations_read_per_slide_with_panda_providers(tmp_path):
    _panda_mask(tmp_path / "a1_mask.tiff")
    providers = tmp_path / "train.csv"
    providers.write_text("image_id,data_provider,isup_grade\na1,karolinska,2\n")
    spec = {"format": "panda_mask", "dir": [str(tmp_path / "x"), str(tmp_path)]}
    found = Annotations(spec | {"providers": providers})  # the second folder has it
    assert found.read("a2") is None  # no file: the figure falls back to the slide label
    np.testing.assert_allclose(found.read("a1").fraction(PANDA_PATCHES[:2], FOOTPRINT), [0, 1])


def _config(tmp_path, annotations_block):
    sheet = tmp_path / "slides.csv"
    sheet.write_text("slide_id,case_id,path\n")
    labels = tmp_path / "labels.csv"
    labels.write_text("slide_id,label\n")
    return validate_config(
        {
            "datasets": {
                "cam": {
                    "task": "diagnosis",
                    "classes": ["normal", "tumor"],
                    "slides": str(sheet),
                    "labels": str(labels),
                    "annotations": annotations_block,
                }
            }
        }
    )


@pytest.mark.parametrize(
    ("block", "message"),
    [
        ({"format": "asap", "dir": "x"}, "annotations/format'"),
        ({"format": "camelyon_xml", "dir": "nowhere"}, "annotations/dir': nowhere not found"),
        ({"format": "camelyon_xml", "dir": [".", "gone"]}, "annotations/dir': gone not found"),
        ({"format": "geojson", "dir": ".", "pattern": "a.json"}, r"must contain \{slide_id\}"),
        ({"format": "panda_mask", "dir": "."}, "annotations/providers': panda_mask needs"),
    ],
)
def test_bad_annotations_fail_at_parse_time_naming_the_key(tmp_path, block, message):
    with pytest.raises(ConfigError, match=message):
        check_config(_config(tmp_path, block))


def test_annotation_folder_of_absent_slides_is_not_checked(tmp_path):
    config = _config(tmp_path, {"format": "camelyon_xml", "dir": "nowhere"})
    config["datasets"]["cam"]["slides"] = str(tmp_path / "absent.csv")
    check_config(config)
