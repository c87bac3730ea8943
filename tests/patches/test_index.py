"""Dataset index of per-slide stores: same reads as a packed copy, no bytes copied, stale stores
caught, a bounded number of stores open, and per-process environments under fork."""

from __future__ import annotations

import multiprocessing
import os
import pickle

import numpy as np
import pytest
from test_store import SCALES, write_store

from abmilx.patches.store import (
    INDEX_FORMAT,
    PatchStore,
    StaleIndexError,
    index_stores,
    pack_stores,
    write_empty_store,
)


@pytest.fixture
def stores(tmp_path):
    """Six per-slide stores under slides/ (one without patches) and their slide ids."""
    folder = tmp_path / "slides"
    paths = []
    for i in range(5):
        write_store(folder / f"s{i}.lmdb", f"s{i}", 6 + i, 3, seed=10 * i)
        paths.append(folder / f"s{i}.lmdb")
    write_empty_store(folder / "e.lmdb", "e", patch_size=32, jpeg_quality=90, scales=SCALES)
    paths.append(folder / "e.lmdb")
    return paths


def test_index_reads_what_a_packed_copy_reads(tmp_path, stores):
    packed_meta = pack_stores(stores, tmp_path / "packed.lmdb")
    index_meta = index_stores(stores, tmp_path / "patches.lmdb")
    assert index_meta["format"] == INDEX_FORMAT
    assert index_meta["slide_store"]["s3"] == "slides/s3.lmdb"  # relative to the index
    for key in ("slides", "scales", "patch_size", "jpeg_quality", "extent_level0", "slide_mpp"):
        assert index_meta[key] == packed_meta[key], key
    assert "e" not in index_meta["slides"]  # like pack: a store without patches is left out
    packed, index = PatchStore(tmp_path / "packed.lmdb"), PatchStore(tmp_path / "patches.lmdb")
    assert index.is_index and not packed.is_index
    for slide_id in packed.slide_ids:
        for scale in SCALES:
            n = packed.count(slide_id, scale)
            assert index.count(slide_id, scale) == n
            np.testing.assert_array_equal(
                index.coords(slide_id, scale), packed.coords(slide_id, scale)
            )
            picks = np.arange(n)[::-1]
            np.testing.assert_array_equal(
                index.read(slide_id, scale, picks), packed.read(slide_id, scale, picks)
            )
            assert index.read_jpeg(slide_id, scale, 1) == packed.read_jpeg(slide_id, scale, 1)
    # No patch is copied: the index is a fraction of one per-slide store.
    assert (tmp_path / "patches.lmdb").stat().st_size < min(p.stat().st_size for p in stores[:5])


def test_index_moves_with_its_folder(tmp_path, stores):
    index_stores(stores, tmp_path / "patches.lmdb")
    moved = tmp_path / "moved"
    moved.mkdir()
    for name in ("patches.lmdb", "slides"):
        os.rename(tmp_path / name, moved / name)  # a rename keeps the mtimes
    assert PatchStore(moved / "patches.lmdb").read("s2", "main", [0]).shape == (1, 32, 32, 3)


def test_changed_or_missing_store_is_an_error_naming_slide_and_file(tmp_path, stores):
    index = tmp_path / "patches.lmdb"
    index_stores(stores, index)
    reader = PatchStore(index)
    reader.read("s1", "main", [0])
    write_store(stores[1], "s1", 6, 3, seed=99)  # retiled: other pixels, same counts
    with pytest.raises(StaleIndexError, match=r"slides/s1\.lmdb.*slide 's1'"):
        _ = PatchStore(index).meta  # checked up front
    fresh = PatchStore(index, max_open=1)
    fresh._meta = reader.meta  # as a worker that got the meta before the change
    with pytest.raises(StaleIndexError, match=r"s1\.lmdb: (size|mtime_ns) .*slide 's1'"):
        fresh.read("s1", "main", [0])
    os.remove(stores[2])
    with pytest.raises(StaleIndexError, match=r"s2\.lmdb: missing.*slide 's2'"):
        fresh.read("s2", "main", [0])


def test_meta_digest_catches_a_store_with_the_same_size_and_mtime(tmp_path, stores):
    index = tmp_path / "patches.lmdb"
    index_stores(stores, index)
    original = stores[0].stat()
    # The same patches with another slide mpp of the same length: a file of the same size.
    write_store(tmp_path / "other.lmdb", "s0", 6, 3, seed=0, mpp=0.7)
    assert (tmp_path / "other.lmdb").stat().st_size == original.st_size
    os.replace(tmp_path / "other.lmdb", stores[0])
    os.utime(stores[0], ns=(original.st_atime_ns, original.st_mtime_ns))
    reader = PatchStore(index)
    assert reader.meta  # size and mtime agree: the up-front check passes
    with pytest.raises(StaleIndexError, match=r"s0\.lmdb: its __meta__ entry differs"):
        reader.read("s0", "main", [0])
    assert reader.open_stores == 0


def test_open_stores_stay_within_the_bound(tmp_path, stores):
    index_stores(stores, tmp_path / "patches.lmdb")
    reader = PatchStore(tmp_path / "patches.lmdb", max_open=2)
    seen = []
    for _ in range(3):
        for slide_id in reader.slide_ids:
            reader.read(slide_id, "main", [0])
            reader.coords(slide_id, "low")
            seen.append(reader.open_stores)
    assert max(seen) == 2 and seen[:2] == [1, 2]
    fds = len(os.listdir("/proc/self/fd"))
    for slide_id in reader.slide_ids * 3:
        reader.read(slide_id, "low", [1])
    assert len(os.listdir("/proc/self/fd")) == fds  # evicted stores give their descriptor back
    reader.close()
    assert reader.open_stores == 0
    with pytest.raises(ValueError, match="max_open"):
        PatchStore(tmp_path / "patches.lmdb", max_open=0)


def _read_in_child(store: PatchStore, queue) -> None:
    patches = store.read("s3", "main", [0, 1])
    queue.put((int(patches.sum()), store.open_stores, store._open_pid))


def test_index_reader_under_fork_and_pickle(tmp_path, stores):
    index_stores(stores, tmp_path / "patches.lmdb")
    store = PatchStore(tmp_path / "patches.lmdb", max_open=1)
    parent_sum = int(store.read("s3", "main", [0, 1]).sum())
    context = multiprocessing.get_context("fork")
    queue = context.Queue()
    child = context.Process(target=_read_in_child, args=(store, queue))
    child.start()
    child_sum, child_open, child_pid = queue.get(timeout=30)
    child.join(timeout=30)
    assert child.exitcode == 0 and child_sum == parent_sum
    assert child_open == 1 and child_pid == child.pid  # the child opened its own
    assert store.open_stores == 1 and int(store.read("s3", "main", [0, 1]).sum()) == parent_sum
    clone = pickle.loads(pickle.dumps(store))
    assert clone.open_stores == 0 and int(clone.read("s3", "main", [0, 1]).sum()) == parent_sum


def test_index_of_an_index_is_refused(tmp_path, stores):
    index_stores(stores, tmp_path / "patches.lmdb")
    with pytest.raises(ValueError, match="is an index"):
        index_stores([tmp_path / "patches.lmdb"], tmp_path / "again.lmdb")
