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
    listed_slides,
    manifest_path,
    reusable_slides,
    shard_manifest_path,
    shards_dir,
)
from abmilx.integrity import DamagedFileError
from abmilx.shards import Shard, parse_shard, plan_shards, shard_members

torch.set_num_threads(1)

COUNTS = (("e", 4), ("a", 5), ("d", 2), ("b", 3), ("c", 6))  # store order is not sorted
DATASET = [slide for slide, _ in COUNTS]


def _shard(store, out, shard, size, **changes):
    """One shard job, through the command line the workflow runs."""
    settings = {**SETTINGS, "seed": 3, "device": "cpu", **changes}
    main(
        [
            "extract", "--store", str(store), "--out-dir", str(out),
            "--settings", json.dumps(settings), "--threads", "1",
            "--shard", shard.name, "--slides-per-job", str(size),
            f"--first={shard.first}", f"--last={shard.last}",
        ]
    )  # fmt: skip


def _sharded(store, out, size, dataset=DATASET, **changes):
    shards = plan_shards(dataset, size)
    for shard in shards:
        _shard(store, out, shard, size, **changes)
    size, count = str(size), str(len(shards))
    main(["combine", "--out-dir", str(out), "--slides-per-job", size, "--shards", count])


def _same_files(left, right):
    assert sorted(p.name for p in left.iterdir()) == sorted(p.name for p in right.iterdir())
    for file in left.iterdir():
        assert file.read_bytes() == (right / file.name).read_bytes(), file.name
        a, b = load_features(file), load_features(right / file.name)
        assert torch.equal(a["features"], b["features"]) and torch.equal(a["coords"], b["coords"])
    assert manifest_path(left).read_text() == manifest_path(right).read_text()


def test_shards_are_runs_of_the_sorted_slide_ids():
    assert plan_shards(["c", "a", "e", "b", "d"], 2) == [
        Shard("00000-of-00003", "a", "b"),
        Shard("00001-of-00003", "c", "d"),
        Shard("00002-of-00003", "e", "e"),
    ]
    assert plan_shards(["b", "a"], 200) == [Shard("00000-of-00001", "a", "b")]
    assert plan_shards([f"s{k:05d}" for k in range(10_616)], 200)[-1] == Shard(
        "00053-of-00054", "s10600", "s10615"
    )
    assert shard_members(["e", "a", "d"], "b", "d") == ["d"]  # c: not in the store
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


def test_slides_the_store_leaves_out_keep_the_shards_of_the_dataset(tmp_path):
    """Packing leaves out slides without patches: shards are cut from the dataset's ids."""
    store = write_store(tmp_path / "patches.lmdb", counts=[c for c in COUNTS if c[0] != "c"])
    extract(store, tmp_path / "one", seed=3, device="cpu", **SETTINGS)
    _sharded(store, tmp_path / "sharded", 2)  # a-b, c-d (d only), e
    _same_files(tmp_path / "sharded", tmp_path / "one")

    with pytest.raises(ValueError, match="the patch store holds 4 slides, its 2 shards 2"):
        _sharded(store, tmp_path / "other", 2, dataset=["a", "b", "c"])  # d, e in no shard


def test_a_failed_shard_resumes_only_its_missing_slides(tmp_path, caplog):
    store = write_store(tmp_path / "patches.lmdb", bad_patch_of="c", counts=COUNTS)
    out = tmp_path / "features"
    first, second = plan_shards(DATASET, 3)
    _shard(store, out, second, 3)  # d, e: not touched by the failure
    with pytest.raises(ValueError, match=r"slide 'c' scale 'main' patches 0\.\.3"):
        _shard(store, out, first, 3)  # a, b done, then c fails
    assert sorted(p.name for p in out.glob("*.pt")) == ["d.pt", "e.pt"]
    assert sorted(p.name for p in (tmp_path / "features.partial").glob("*/*.pt")) == [
        "a.pt", "b.pt"
    ]  # fmt: skip
    with pytest.raises(FileNotFoundError, match="00000-of-00002"):
        combine_shards(out, 3, 2)  # a shard is missing: no dataset manifest

    write_store(store, counts=COUNTS)  # repaired: same slides, same counts, valid JPEGs
    caplog.set_level("INFO", logger="abmilx.features.extract")
    stats = extract(
        store, out, seed=3, device="cpu", shard=first.name, slides_per_job=3,
        first=first.first, last=first.last, **SETTINGS,
    )  # fmt: skip
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
    _shard(store, out, plan_shards(DATASET, 4)[0], 4)
    assert "keeping 3 finished slide files" in caplog.text  # b, c, d; a is encoded again
    listed = json.loads(before)["slides"]["a"]["sha256"]
    assert hashlib.sha256((out / "a.pt").read_bytes()).hexdigest() == listed  # the same bytes

    old = load_features(out / "c.pt")["features"]
    caplog.clear()
    _sharded(store, out, 4, seed=4)  # other random weights: every slide is encoded again
    assert "keeping" not in caplog.text
    assert json.loads(manifest_path(out).read_text())["settings"]["seed"] == 4
    assert not torch.equal(load_features(out / "c.pt")["features"], old)


def test_a_damaged_manifest_is_named_with_what_to_do(tmp_path):
    """Written whole, a manifest that does not parse was damaged later: the error names it."""
    store = write_store(tmp_path / "patches.lmdb", counts=COUNTS)
    out = tmp_path / "sharded"
    _sharded(store, out, 2)
    assert listed_slides(manifest_path(out)) == ["a", "b", "c", "d", "e"]
    manifest_path(out).write_text("")  # a full disk
    with pytest.raises(
        DamagedFileError, match=r"manifest\.json: not a feature manifest: not valid JSON"
    ):
        listed_slides(manifest_path(out))
    manifest_path(out).write_text('["a", "b"]')
    with pytest.raises(
        DamagedFileError, match=r"JSON list, not an object; delete it and run again"
    ):
        listed_slides(manifest_path(out))

    shard = shard_manifest_path(out, 2, "00001-of-00003")
    shard.write_text(json.dumps({"slides": {}}))  # edited by hand
    with pytest.raises(DamagedFileError, match=rf"{shard.name}: not a feature manifest: needs"):
        combine_shards(out, 2, 3)


def test_a_manifest_of_another_shape_vouches_for_no_slide(tmp_path):
    """A shard's resume skips a damaged manifest (a JSON list here) instead of failing on it."""
    store = write_store(tmp_path / "patches.lmdb", counts=COUNTS)
    out = tmp_path / "sharded"
    _sharded(store, out, 2)
    current = json.loads(manifest_path(out).read_text())["fingerprint"]
    assert reusable_slides(out, current, DATASET) == set(DATASET)
    manifest_path(out).write_text('["a", "b"]')
    for stale in shards_dir(out).glob("*/*.json"):
        stale.unlink()
    assert reusable_slides(out, current, DATASET) == set()
