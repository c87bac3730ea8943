"""Shard jobs of segmentation and tiling (rules segment_tissue, tile_slide): several slides per
job in worker processes, one manifest per shard, and a rerun that redoes only the slides whose
inputs changed, whose files are gone or that failed."""

from __future__ import annotations

import json
import shutil

import pytest
from conftest import SEGMENT_SETTINGS

import abmilx.tiling.tile as tile_module
from abmilx.config import schema_defaults
from abmilx.integrity import DamagedFileError
from abmilx.segmentation.__main__ import main as segmentation_main
from abmilx.shards import listed_files, lost_files, read_slide_manifest, shard_slides
from abmilx.tiling.__main__ import main as tiling_main

TILE_SETTINGS = schema_defaults("tiling") | {"scales": {"main": 1.0}, "patch_size": 64}


def slide_jobs(paths, overrides=None):
    overrides = overrides or {}
    return [
        {"slide_id": slide_id, "path": str(path), "mpp": "", "geojson": "",
         "overrides": json.dumps(overrides[slide_id]) if slide_id in overrides else ""}
        for slide_id, path in paths.items()
    ]  # fmt: skip


def segment(tmp_path, jobs, *, strict=False, threads=2):
    settings = {**SEGMENT_SETTINGS, "strict": strict}
    return segmentation_main([
        "segment-shard", "--slides", json.dumps(jobs), "--dataset", "d",
        "--out-dir", str(tmp_path / "seg"), "--manifest", str(tmp_path / "seg.shards/3/s.json"),
        "--settings", json.dumps(settings), "--code", "c1", "--threads", str(threads),
    ])  # fmt: skip


def tile(tmp_path, jobs, threads=2):
    return tiling_main([
        "tile-shard", "--slides", json.dumps(jobs), "--dataset", "d",
        "--segmentation-dir", str(tmp_path / "seg"), "--out-dir", str(tmp_path / "tiles"),
        "--manifest", str(tmp_path / "tiles.shards/3/s.json"),
        "--settings", json.dumps({**TILE_SETTINGS, "strict": False}), "--code", "c1",
        "--threads", str(threads),
    ])  # fmt: skip


def mtimes(folder):
    return {path.name: path.stat().st_mtime_ns for path in sorted(folder.iterdir())}


@pytest.fixture
def three_slides(drawn_slide, tmp_path):
    """Three copies of the drawn slide, a, b and c."""
    path, _ = drawn_slide
    paths = {name: tmp_path / "slides" / f"{name}.svs" for name in "abc"}
    paths["a"].parent.mkdir()
    for copy in paths.values():
        shutil.copy(path, copy)
    return paths


def test_shards_cut_sorted_ids_into_runs():
    assert shard_slides(["c", "a", "b", "e", "d"], 2) == {
        "00000-of-00003": ["a", "b"], "00001-of-00003": ["c", "d"], "00002-of-00003": ["e"],
    }  # fmt: skip
    with pytest.raises(ValueError, match="at least 1"):
        shard_slides(["a"], 0)


def test_a_rerun_redoes_only_the_slides_that_changed(three_slides, tmp_path, capsys):
    jobs = slide_jobs(three_slides)
    assert segment(tmp_path, jobs) == 0
    manifest = tmp_path / "seg.shards/3/s.json"
    record = read_slide_manifest(manifest)
    assert record["stage"] == "segmentation" and record["shard"] == "s"
    assert {s: e["status"] for s, e in record["slides"].items()} == dict.fromkeys("abc", "ok")
    records = listed_files([manifest], "record")
    assert records == [str(tmp_path / "seg" / f"{s}.json") for s in "abc"]
    first = mtimes(tmp_path / "seg")
    assert len(first) == 12  # four files per slide

    assert segment(tmp_path, jobs) == 0  # nothing changed: nothing redone
    assert mtimes(tmp_path / "seg") == first
    assert "3 slides, 3 unchanged" in capsys.readouterr().err

    # a slide's sheet override changes: that slide alone is segmented again
    assert segment(tmp_path, slide_jobs(three_slides, {"b": {"working_mpp": 8.0}})) == 0
    changed = {name for name, mtime in mtimes(tmp_path / "seg").items() if first[name] != mtime}
    assert changed == {"b.json", "b.geojson", "b.mask.png", "b.overlay.png"}
    assert json.loads((tmp_path / "seg" / "b.json").read_text())["mask"]["mpp"] == 8.0

    # a lost file is named by the manifest, and the rerun makes that slide again
    (tmp_path / "seg" / "c.overlay.png").unlink()
    assert lost_files(manifest) == [str(tmp_path / "seg" / "c.overlay.png")]
    before = mtimes(tmp_path / "seg")
    assert segment(tmp_path, slide_jobs(three_slides, {"b": {"working_mpp": 8.0}})) == 0
    after = mtimes(tmp_path / "seg")
    assert {name for name in after if before.get(name) != after[name]} == {
        "c.json", "c.geojson", "c.mask.png", "c.overlay.png",
    }  # fmt: skip
    assert lost_files(manifest) == []

    # tiling follows: a rerun redoes nothing, a deleted store is tiled again alone
    assert tile(tmp_path, jobs) == 0
    tiles = tmp_path / "tiles.shards/3/s.json"
    stores = listed_files([tiles], "store")
    assert stores == [str(tmp_path / "tiles" / f"{s}.lmdb") for s in "abc"]
    first = mtimes(tmp_path / "tiles")
    assert tile(tmp_path, jobs) == 0
    assert mtimes(tmp_path / "tiles") == first
    (tmp_path / "tiles" / "a.lmdb").unlink()
    assert lost_files(tiles) == [stores[0]] and lost_files(tiles, skip=("store",)) == []
    assert tile(tmp_path, jobs) == 0
    after = mtimes(tmp_path / "tiles")
    assert {name for name in after if first[name] != after[name]} == {"a.lmdb", "a.json"}


def test_a_failed_slide_keeps_the_others_and_only_it_is_redone(three_slides, tmp_path, capsys):
    """One slide that fails a strict run: the shard fails naming it and writes no manifest, the
    two finished slides keep their files, and the rerun segments only the failed slide."""
    jobs = slide_jobs(three_slides)
    good = three_slides["b"].read_bytes()
    three_slides["b"].write_text("not a slide\n")
    assert segment(tmp_path, jobs, strict=True, threads=2) == 1  # SlideError from a worker
    err = capsys.readouterr().err
    assert "1 of 3 slides failed (2 done and kept for the rerun)" in err and "  b: " in err
    assert not (tmp_path / "seg.shards/3/s.json").exists()
    kept = mtimes(tmp_path / "seg")
    assert {name.split(".")[0] for name in kept} == {"a", "c"}
    three_slides["b"].write_bytes(good)
    assert segment(tmp_path, jobs, strict=True, threads=1) == 0
    after = mtimes(tmp_path / "seg")
    assert {name for name in after if kept.get(name) != after[name]} == {
        "b.json", "b.geojson", "b.mask.png", "b.overlay.png",
    }  # fmt: skip
    assert "3 slides, 2 unchanged" in capsys.readouterr().err


def test_a_damaged_shard_manifest_is_named(tmp_path):
    manifest = tmp_path / "s.json"
    for text, problem in [
        ("{", "not valid JSON"),
        ("[]", "holds a JSON list"),
        ('{"stage": "tiling"}', "needs keys"),
        ('{"stage": 1, "dataset": 1, "shard": 1, "slides": {"a": {}}}', "slide 'a' lists no"),
    ]:
        manifest.write_text(text)
        with pytest.raises(DamagedFileError, match=f"s.json: not a shard manifest: .*{problem}"):
            lost_files(manifest)


def test_fewer_slides_than_threads_share_the_threads(three_slides, tmp_path, monkeypatch):
    """One slide and four threads: the slide is tiled in the job's process with 4 patch
    threads, not 1 (a few large slides on a workstation)."""
    jobs = slide_jobs({"a": three_slides["a"]})
    assert segment(tmp_path, jobs) == 0
    given = []
    real = tile_module.tile_slide
    monkeypatch.setattr(
        tile_module, "tile_slide", lambda *a, **k: given.append(k["threads"]) or real(*a, **k)
    )
    assert tile(tmp_path, jobs, threads=4) == 0
    assert given == [4]
