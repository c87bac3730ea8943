"""Feature extraction by shards of slides equals one job, file by file, and resumes per slide."""

import hashlib
import json

import pytest
import torch
from test_extract import SETTINGS, write_store

from abmilx.features.__main__ import main
from abmilx.features.extract import extract, load_features
from abmilx.features.shards import (
    combine_shards,
    manifest_path,
    parse_shard,
    shard_manifest_path,
    shard_members,
    shard_names,
    shards_dir,
)

torch.set_num_threads(1)

COUNTS = (("e", 4), ("a", 5), ("d", 2), ("b", 3), ("c", 6))  # store order is not sorted


def _shard(store, out, shard, size, **changes):
    """One shard job, through the command line the workflow runs."""
    settings = {**SETTINGS, "seed": 3, "device": "cpu", **changes}
    main(
        [
            "extract", "--store", str(store), "--out-dir", str(out),
            "--settings", json.dumps(settings), "--threads", "1",
            "--shard", shard, "--slides-per-job", str(size),
        ]
    )  # fmt: skip


def _sharded(store, out, size, **changes):
    names = shard_names(len(COUNTS), size)
    for name in names:
        _shard(store, out, name, size, **changes)
    main(
        [
            "combine",
            "--out-dir",
            str(out),
            "--slides-per-job",
            str(size),
            "--shards",
            str(len(names)),
        ]
    )


def _same_files(left, right):
    assert sorted(p.name for p in left.iterdir()) == sorted(p.name for p in right.iterdir())
    for file in left.iterdir():
        assert file.read_bytes() == (right / file.name).read_bytes(), file.name
        a, b = load_features(file), load_features(right / file.name)
        assert torch.equal(a["features"], b["features"]) and torch.equal(a["coords"], b["coords"])
    assert manifest_path(left).read_text() == manifest_path(right).read_text()


def test_shards_are_runs_of_the_sorted_slide_ids():
    assert shard_members(["c", "a", "e", "b", "d"], 2) == [["a", "b"], ["c", "d"], ["e"]]
    assert shard_members(["b", "a"], 200) == [["a", "b"]]
    assert shard_names(5, 2) == ["00000-of-00003", "00001-of-00003", "00002-of-00003"]
    assert shard_names(10_616, 200)[-1] == "00053-of-00054"
    assert parse_shard("00002-of-00003") == (2, 3)
    for bad in ("3-of-3", "2of3", "a-of-3"):
        with pytest.raises(ValueError, match="<index>-of-<count>"):
            parse_shard(bad)


def test_sharded_features_equal_one_job_features_file_by_file(tmp_path):
    store = write_store(tmp_path / "patches.lmdb", counts=COUNTS)
    extract(store, tmp_path / "one", seed=3, device="cpu", **SETTINGS)
    _sharded(store, tmp_path / "sharded", 2)
    _same_files(tmp_path / "sharded", tmp_path / "one")
    manifest = json.loads(manifest_path(tmp_path / "one").read_text())
    assert sorted(manifest["slides"]) == ["a", "b", "c", "d", "e"]
    shard = json.loads(shard_manifest_path(tmp_path / "sharded", 2, "00001-of-00003").read_text())
    assert shard["members"] == ["c", "d"] and sorted(shard["slides"]) == ["c", "d"]
    assert not (tmp_path / "sharded.partial").exists()


def test_a_failed_shard_resumes_only_its_missing_slides(tmp_path, caplog):
    store = write_store(tmp_path / "patches.lmdb", bad_patch_of="c", counts=COUNTS)
    out = tmp_path / "features"
    _shard(store, out, "00001-of-00002", 3)  # d, e: not touched by the failure
    with pytest.raises(ValueError, match=r"slide 'c' scale 'main' patches 0\.\.3"):
        _shard(store, out, "00000-of-00002", 3)  # a, b done, then c fails
    assert sorted(p.name for p in out.glob("*.pt")) == ["d.pt", "e.pt"]
    assert sorted(p.name for p in (tmp_path / "features.partial").glob("*/*.pt")) == [
        "a.pt", "b.pt"
    ]  # fmt: skip
    with pytest.raises(FileNotFoundError, match="00000-of-00002"):
        combine_shards(out, 3, 2)  # a shard is missing: no dataset manifest

    write_store(store, counts=COUNTS)  # repaired: same slides, same counts, valid JPEGs
    caplog.set_level("INFO", logger="abmilx.features.extract")
    stats = extract(
        store, out, seed=3, device="cpu", shard="00000-of-00002", slides_per_job=3, **SETTINGS
    )
    assert stats["slides_skipped"] == 2 and stats["slides_encoded"] == 1
    assert stats["patches"] == 6  # c only
    assert "resuming: 2 of 3 slides already done" in caplog.text
    combine_shards(out, 3, 2)
    extract(store, tmp_path / "one", seed=3, device="cpu", **SETTINGS)
    _same_files(out, tmp_path / "one")
    assert not (tmp_path / "features.partial").exists()


def test_a_new_shard_size_keeps_the_files_and_new_settings_do_not(tmp_path, caplog):
    store = write_store(tmp_path / "patches.lmdb", counts=COUNTS)
    out = tmp_path / "features"
    _sharded(store, out, 2)
    before = manifest_path(out).read_text()
    mtimes = {p.name: p.stat().st_mtime_ns for p in out.glob("*.pt")}
    caplog.set_level("INFO", logger="abmilx.features.extract")
    _sharded(store, out, 4)
    assert "keeping 4 finished slide files" in caplog.text
    assert "keeping 1 finished slide files" in caplog.text
    assert {p.name: p.stat().st_mtime_ns for p in out.glob("*.pt")} == mtimes
    assert manifest_path(out).read_text() == before
    assert sorted(p.name for p in shards_dir(out).iterdir()) == ["4"]  # size 2's are gone

    (out / "a.pt").write_bytes((out / "b.pt").read_bytes())  # a file that is not the listed one
    caplog.clear()
    _shard(store, out, "00000-of-00002", 4)
    assert "keeping 3 finished slide files" in caplog.text  # b, c, d; a is encoded again

    listed = json.loads(before)["slides"]["a"]["sha256"]
    assert hashlib.sha256((out / "a.pt").read_bytes()).hexdigest() == listed  # the same bytes
    old = load_features(out / "c.pt")["features"]
    caplog.clear()
    _sharded(store, out, 4, seed=4)  # other random weights: every slide is encoded again
    assert "keeping" not in caplog.text
    assert json.loads(manifest_path(out).read_text())["settings"]["seed"] == 4
    assert not torch.equal(load_features(out / "c.pt")["features"], old)


def test_a_shard_of_another_store_fails_naming_it(tmp_path):
    store = write_store(tmp_path / "patches.lmdb", counts=COUNTS)
    with pytest.raises(ValueError, match=r"patches.lmdb holds 5 slides, 3 shards of 2, not 4"):
        _shard(store, tmp_path / "features", "00000-of-00004", 2)
