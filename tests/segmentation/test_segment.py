"""Tissue segmentation of drawn slides: accuracy, exclusions, outputs and bad input."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest
from conftest import MPP, SEGMENT_SETTINGS, SEGMENTATION, draw_slide_image

from abmilx.cohort.slidefile import write_slide
from abmilx.geometry import geojson_to_polygons, rasterize_polygons
from abmilx.segmentation.__main__ import main
from abmilx.segmentation.segment import output_paths, segment_slide
from abmilx.segmentation.settings import SegmentationSettings
from abmilx.slides import SlideError

cv2.setNumThreads(1)
RECORD_KEYS = {
    "dataset", "slide_id", "status", "reason", "vendor", "mpp", "mpp_source",
    "objective_power", "width", "height", "level_count", "tissue_area_mm2",
}  # fmt: skip


def at_mask_size(layer: np.ndarray, mask: np.ndarray) -> np.ndarray:
    size = (mask.shape[1], mask.shape[0])
    return cv2.resize(layer.astype(np.float32), size, interpolation=cv2.INTER_AREA) > 0.5


def iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / (a | b).sum())


def read_mask(prefix) -> np.ndarray:
    return cv2.imread(str(output_paths(prefix)["mask"]), cv2.IMREAD_GRAYSCALE) > 0


@pytest.mark.parametrize("threshold", [20, "otsu"])
def test_mask_matches_drawing_and_excludes_ink_and_debris(drawn_slide, tmp_path, threshold):
    path, masks = drawn_slide
    prefix = tmp_path / "drawn"
    settings = {**SEGMENT_SETTINGS, "saturation_threshold": threshold}
    record = segment_slide(
        path,
        prefix,
        slide_id="drawn",
        dataset="demo",
        settings=SegmentationSettings.from_settings(settings),
    )
    assert record["status"] == "ok" and record["reason"] == ""
    mask = read_mask(prefix)
    assert mask.shape == (112, 150)  # 1200 x 900 px at 0.5 µm/px seen at 4 µm/px
    assert iou(mask, at_mask_size(masks["tissue"], mask)) >= 0.9
    for artefact in ("pen", "debris", "specks", "black"):
        assert not (mask & at_mask_size(masks[artefact], mask)).any(), artefact
    truth_mm2 = masks["tissue"].sum() * MPP * MPP / 1e6
    assert record["tissue_area_mm2"] == pytest.approx(truth_mm2, rel=0.1)


def test_outputs_and_holes(drawn_slide, tmp_path):
    path, masks = drawn_slide
    prefix = tmp_path / "qc" / "drawn"
    record = segment_slide(
        path,
        prefix,
        slide_id="drawn",
        dataset="demo",
        settings=SegmentationSettings.from_settings(SEGMENT_SETTINGS),
    )
    assert set(record) >= RECORD_KEYS
    assert json.loads(output_paths(prefix)["json"].read_text()) == record
    assert (record["vendor"], record["mpp"], record["mpp_source"]) == ("aperio", 0.5, "metadata")
    assert (record["width"], record["height"], record["level_count"]) == (1200, 900, 3)
    assert record["mask"]["downsample"] == pytest.approx([8.0, 900 / 112])
    geojson = json.loads(output_paths(prefix)["geojson"].read_text())
    assert geojson["type"] == "FeatureCollection"
    rings = sorted(len(f["geometry"]["coordinates"]) for f in geojson["features"])
    assert rings == [1, 3]  # one blob, one blob with its two holes
    for feature in geojson["features"]:
        for ring in feature["geometry"]["coordinates"]:
            assert ring[0] == ring[-1]
            assert all(0 <= x <= 1200 and 0 <= y <= 900 for x, y in ring)
    # the level-0 polygons rasterised at full resolution agree with the drawing
    polygons = geojson_to_polygons(geojson)
    assert iou(rasterize_polygons(polygons, 1200, 900, (1.0, 1.0)) >= 0.5, masks["tissue"]) >= 0.9
    overlay = cv2.imread(str(output_paths(prefix)["overlay"]))
    assert overlay.shape == (112, 150, 3)


def test_user_geojson_replaces_mask(drawn_slide, tmp_path):
    path, _ = drawn_slide
    square = [[[100, 100], [500, 100], [500, 400], [100, 400], [100, 100]]]
    user = tmp_path / "user.geojson"
    user.write_text(json.dumps({"type": "Polygon", "coordinates": square}))
    record = segment_slide(
        path,
        tmp_path / "u",
        slide_id="u",
        dataset="d",
        geojson=user,
        settings=SegmentationSettings.from_settings(SEGMENTATION),
    )
    assert (record["status"], record["mask_source"]) == ("ok", "geojson")
    assert record["tissue_area_mm2"] == pytest.approx(400 * 300 * MPP * MPP / 1e6, rel=0.05)
    user.write_text("{not json")
    record = segment_slide(
        path,
        tmp_path / "u",
        slide_id="u",
        dataset="d",
        geojson=user,
        settings=SegmentationSettings.from_settings(SEGMENTATION),
    )
    assert record["status"] == "failed" and "user.geojson" in record["reason"]


def bad_slide(kind: str, tmp_path, drawn_path):
    path = tmp_path / f"{kind}.svs"
    if kind == "zero_byte":
        path.touch()
    elif kind == "text":
        path.write_text("this is not a slide\n")
    elif kind == "truncated":
        data = drawn_path.read_bytes()
        path.write_bytes(data[: len(data) // 2])
    elif kind == "blank":
        blank = np.full((600, 800, 3), 236, np.uint8)
        path = write_slide(path, blank, mpp=MPP, slide_format="aperio")
    elif kind == "no_mpp":
        image, _ = draw_slide_image(seed=1)
        path = write_slide(tmp_path / "no_mpp.tif", image, mpp=MPP, slide_format="nompp")
    return path


@pytest.mark.parametrize(
    ("kind", "status", "reason"),
    [
        ("zero_byte", "failed", "zero-byte file"),
        ("text", "failed", "not a slide file"),
        ("truncated", "failed", "truncated file"),
        ("blank", "no_tissue", "no tissue found"),
        ("no_mpp", "failed", "no mpp metadata and the slide sheet gives no mpp override"),
    ],
)
def test_bad_input_gives_status_and_all_outputs(drawn_slide, tmp_path, kind, status, reason):
    path = bad_slide(kind, tmp_path, drawn_slide[0])
    prefix = tmp_path / "out" / kind
    record = segment_slide(
        path,
        prefix,
        slide_id=kind,
        dataset="d",
        settings=SegmentationSettings.from_settings(SEGMENT_SETTINGS),
    )
    assert record["status"] == status
    assert reason in record["reason"]
    assert set(record) >= RECORD_KEYS
    paths = output_paths(prefix)
    assert all(p.is_file() for p in paths.values())
    assert json.loads(paths["geojson"].read_text())["features"] == []
    assert not read_mask(prefix).any()
    strict_prefix = tmp_path / "strict" / kind
    with pytest.raises(SlideError, match=f"slide {kind}: {status}"):
        segment_slide(
            path,
            strict_prefix,
            slide_id=kind,
            dataset="d",
            strict=True,
            settings=SegmentationSettings.from_settings(SEGMENT_SETTINGS),
        )
    # a failed job leaves no file that looks finished (profiles/slurm keeps a failed job's files)
    assert not any(p.exists() for p in output_paths(strict_prefix).values())


def test_override_rescues_slide_without_mpp(drawn_slide, tmp_path):
    path = bad_slide("no_mpp", tmp_path, drawn_slide[0])
    record = segment_slide(
        path,
        tmp_path / "o",
        slide_id="o",
        dataset="d",
        mpp=0.5,
        settings=SegmentationSettings.from_settings(SEGMENT_SETTINGS),
    )
    assert (record["status"], record["mpp_source"], record["objective_power"]) == (
        "ok", "override", 20.0,
    )  # fmt: skip
    assert record["objective_power_source"] == "mpp"


def test_cli(drawn_slide, tmp_path, capsys):
    path, _ = drawn_slide
    prefix = tmp_path / "cli" / "drawn"
    args = ["segment", "--slide", str(path), "--slide-id", "drawn", "--dataset", "demo",
            "--mpp", "", "--out-prefix", str(prefix), "--settings", json.dumps(SEGMENT_SETTINGS)]  # fmt: skip
    assert main(args) == 0
    assert json.loads(output_paths(prefix)["json"].read_text())["status"] == "ok"
    blank = bad_slide("blank", tmp_path, path)
    strict = {**SEGMENT_SETTINGS, "strict": True}
    args_blank = [*args[:2], str(blank), *args[3:-1], json.dumps(strict)]
    assert main(args_blank) == 1
    assert "drawn: no_tissue" in capsys.readouterr().err
    with pytest.raises(SystemExit) as caught:
        main([*args[:-1], json.dumps({"working_mmp": 4.0})])
    assert caught.value.code == 2
    assert "unknown settings ['working_mmp']" in capsys.readouterr().err
    partial = {k: v for k, v in SEGMENT_SETTINGS.items() if k != "median_kernel"}
    with pytest.raises(SystemExit):
        main([*args[:-1], json.dumps(partial)])
    assert "--settings: missing settings ['median_kernel']" in capsys.readouterr().err


def test_cli_per_slide_overrides(drawn_slide, tmp_path, capsys):
    """--overrides (the slide sheet's segmentation column) replaces config settings."""
    path, _ = drawn_slide
    base = ["segment", "--slide", str(path), "--slide-id", "drawn", "--dataset", "demo",
            "--settings", json.dumps(SEGMENT_SETTINGS)]  # fmt: skip
    assert main([*base, "--out-prefix", str(tmp_path / "plain"), "--overrides", ""]) == 0
    override = {"saturation_threshold": 250, "working_mpp": 8.0}
    assert main([*base, "--out-prefix", str(tmp_path / "o"),
                 "--overrides", json.dumps(override)]) == 0  # fmt: skip
    plain = json.loads((tmp_path / "plain.json").read_text())
    record = json.loads((tmp_path / "o.json").read_text())
    assert plain["overridden_settings"] == [] and plain["status"] == "ok"
    assert record["overridden_settings"] == ["saturation_threshold", "working_mpp"]
    assert record["settings"]["saturation_threshold"] == 250
    assert record["settings"]["min_tissue_area_um2"] == SEGMENT_SETTINGS["min_tissue_area_um2"]
    assert record["mask"]["mpp"] == 8.0 and plain["mask"]["mpp"] == 4.0
    assert record["status"] == "no_tissue"  # nothing is that saturated
    for bad, message in [
        ('{"strict": true}', "--overrides: unknown settings ['strict']"),
        ("[1]", "--overrides must be a JSON object"),
        ("{bad", "--overrides is not valid JSON"),
    ]:
        with pytest.raises(SystemExit):
            main([*base, "--out-prefix", str(tmp_path / "x"), "--overrides", bad])
        assert message in capsys.readouterr().err


def test_cli_user_geojson(drawn_slide, tmp_path):
    path, _ = drawn_slide
    annotation = tmp_path / "ann.geojson"
    annotation.write_text(json.dumps({"type": "FeatureCollection", "features": [
        {"type": "Feature", "properties": {}, "geometry": {"type": "Polygon", "coordinates": [
            [[100, 100], [500, 100], [500, 400], [100, 400], [100, 100]]]}}]}))  # fmt: skip
    args = ["segment", "--slide", str(path), "--slide-id", "drawn", "--dataset", "demo",
            "--out-prefix", str(tmp_path / "g"), "--geojson", str(annotation),
            "--settings", json.dumps(SEGMENT_SETTINGS)]  # fmt: skip
    assert main(args) == 0
    record = json.loads((tmp_path / "g.json").read_text())
    assert record["mask_source"] == "geojson" and record["geojson_source"] == str(annotation)
    assert record["tissue_area_mm2"] == pytest.approx(400 * 300 * MPP**2 / 1e6, rel=0.05)


@pytest.mark.parametrize("seed", [0, 1])
def test_label_medians_are_scipys(seed):
    """The debris guard's per-piece medians (numpy, no scipy start-up) equal scipy's, even counts
    (mean of the two middle values) included."""
    from scipy import ndimage

    from abmilx.segmentation.tissue import label_medians

    rng = np.random.default_rng(seed)
    values = rng.integers(0, 256, (300, 400), dtype=np.uint8)
    mask = (rng.random((60, 80)) < 0.45).repeat(5, 0).repeat(5, 1)
    count, labels = cv2.connectedComponents(mask.astype(np.uint8), connectivity=8)
    which = np.arange(1, count)[rng.random(count - 1) < 0.6]
    assert len(which) > 10 and len(np.unique(np.bincount(labels.ravel())[which] % 2)) == 2
    expected = ndimage.median(values.astype(np.float32), labels, which)
    np.testing.assert_array_equal(label_medians(values, labels, which), expected)
