"""`abmilx export-qupath`: a run's attention and tissue as GeoJSON that QuPath imports.

A hand-made run layout checks the numbers exactly (offset, rank, heads, probability); the
finished tiny run checks the command on the workflow's own outputs.
"""

from __future__ import annotations

import json
import subprocess
import sys

import jsonschema
import numpy as np
import pandas as pd
import pytest

from abmilx.cli.qupath import export_qupath
from abmilx.geometry import polygons_to_geojson, read_geojson

# What QuPath's GeoJSON import reads: Features with a geometry and, in `properties`, an
# `objectType` it knows, an optional classification, and measurements as name -> number.
QUPATH_GEOJSON = {
    "type": "object",
    "required": ["type", "features"],
    "properties": {
        "type": {"const": "FeatureCollection"},
        "features": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["type", "geometry", "properties"],
                "properties": {
                    "type": {"const": "Feature"},
                    "geometry": {
                        "type": "object",
                        "required": ["type", "coordinates"],
                        "properties": {"type": {"enum": ["Polygon", "MultiPolygon"]}},
                    },
                    "properties": {
                        "type": "object",
                        "required": ["objectType"],
                        "properties": {
                            "objectType": {"enum": ["annotation", "detection", "tile", "cell"]},
                            "classification": {
                                "type": "object",
                                "required": ["name"],
                                "properties": {"name": {"type": "string"}},
                            },
                            "measurements": {
                                "type": "object",
                                "additionalProperties": {"type": "number"},
                            },
                        },
                    },
                },
            },
        },
    },
}

TISSUE = [[np.array([[100.0, 100.0], [900.0, 100.0], [900.0, 700.0], [100.0, 700.0]])]]


@pytest.fixture
def run_layout(tmp_path):
    """results/ with one evaluated fold of a 2-head run on two slides, one with a bounds offset."""
    results = tmp_path / "results"
    fold = results / "runs" / "toy" / "exp" / "fold0"
    fold.mkdir(parents=True)
    rng = np.random.default_rng(0)
    arrays = {}
    for slide_id, n in (("S1", 5), ("S2", 3)):
        arrays[f"{slide_id}/coords"] = rng.integers(0, 800, (n, 2)).astype(np.int64)
        arrays[f"{slide_id}/attention"] = rng.random((2, n)).astype(np.float32)
    np.savez_compressed(fold / "attention.npz", **arrays)
    pd.DataFrame(
        {
            "slide_id": ["S1", "S2"],
            "label": ["a", "b"],
            "prob_a": [0.8, 0.3],
            "prob_b": [0.2, 0.7],
            "pred": ["a", "b"],
        }
    ).to_csv(fold / "predictions.csv", index=False)
    records = results / "tiles" / "toy" / "slides"
    records.mkdir(parents=True)
    for slide_id, bounds in (("S1", (0, 0)), ("S2", (40, 60))):
        record = {
            "slide_id": slide_id,
            "mpp": 0.5,
            "bounds_x": bounds[0],
            "bounds_y": bounds[1],
            "tiling": {"scales": {"main": {"mpp": 1.0, "extent_level0": 128.0}}},
        }
        (records / f"{slide_id}.json").write_text(json.dumps(record))
    qc = results / "qc" / "segmentation" / "toy"
    qc.mkdir(parents=True)
    for slide_id in ("S1", "S2"):
        (qc / f"{slide_id}.geojson").write_text(json.dumps(polygons_to_geojson(TISSUE)))
    return fold, arrays


def tiles_of(collection):
    return [f for f in collection["features"] if f["properties"]["objectType"] == "tile"]


def test_export_round_trips_contours_and_attention(run_layout, tmp_path):
    fold, arrays = run_layout
    written = export_qupath(fold.parent, tmp_path / "qupath")
    assert sorted(p.name for p in written) == ["S1.geojson", "S2.geojson"]
    for slide_id, offset, probability in (("S1", (0, 0), 0.8), ("S2", (40, 60), 0.7)):
        path = tmp_path / "qupath" / f"{slide_id}.geojson"
        collection = json.loads(path.read_text())
        jsonschema.validate(collection, QUPATH_GEOJSON)
        # tissue contours: re-read through the slide sheet's geojson reader, offset applied
        contours = read_geojson(path)[: len(TISSUE)]
        np.testing.assert_allclose(contours[0][0][:4], TISSUE[0][0] - np.array(offset))
        tiles = tiles_of(collection)
        coords, attention = arrays[f"{slide_id}/coords"], arrays[f"{slide_id}/attention"]
        assert len(tiles) == len(coords)
        mean = attention.astype(np.float64).mean(axis=0)
        for index, tile in enumerate(tiles):
            ring = np.array(tile["geometry"]["coordinates"][0])
            np.testing.assert_allclose(ring[0], coords[index] - np.array(offset))
            np.testing.assert_allclose(ring[2] - ring[0], [128.0, 128.0])
            measured = tile["properties"]["measurements"]
            for head in range(2):
                assert measured[f"attention head {head + 1}"] == pytest.approx(
                    attention[head, index], rel=1e-6
                )
            assert measured["attention mean"] == pytest.approx(mean[index])
            assert measured["attention rank"] == 1 + int(np.sum(mean > mean[index]))
            assert measured["predicted class probability"] == pytest.approx(probability)


def test_export_names_unknown_slides_and_missing_evaluation(run_layout, tmp_path):
    fold, _ = run_layout
    with pytest.raises(ValueError, match="no attention for slides S9"):
        export_qupath(fold.parent, tmp_path / "q", slides=["S9"])
    (fold / "attention.npz").unlink()
    with pytest.raises(FileNotFoundError, match="is the run evaluated"):
        export_qupath(fold.parent, tmp_path / "q")


def test_export_qupath_command_on_the_tiny_run(tiny_run, tmp_path):
    run = next(iter(sorted((tiny_run / "results" / "runs").glob("*/*/fold0/attention.npz"))))
    experiment = run.parent.parent
    out = tmp_path / "qupath"
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "abmilx",
            "export-qupath",
            "--run",
            str(experiment),
            "--out",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    with np.load(run) as stored:
        tested = sorted(k.removesuffix("/attention") for k in stored.files if "/attention" in k)
    assert sorted(p.stem for p in out.glob("*.geojson")) == tested
    collection = json.loads((out / f"{tested[0]}.geojson").read_text())
    jsonschema.validate(collection, QUPATH_GEOJSON)
    kinds = {f["properties"]["objectType"] for f in collection["features"]}
    assert kinds == {"annotation", "tile"}
