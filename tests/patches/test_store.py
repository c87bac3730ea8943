"""Patch store: round trip, partial writes, pack, fork safety and bad input."""

from __future__ import annotations

import json
import multiprocessing
import pickle

import lmdb
import numpy as np
import pytest

import abmilx
from abmilx.patches.store import (
    META_KEY,
    PatchStore,
    PatchStoreWriter,
    pack_stores,
    write_empty_store,
)

SCALES = {"main": 1.0, "low": 2.0}


def smooth_patches(n: int, size: int, seed: int) -> np.ndarray:
    """Smooth random colour fields: JPEG keeps them close, so decode errors stay small."""
    rng = np.random.default_rng(seed)
    ramp = np.linspace(0.0, 1.0, size)
    patches = np.empty((n, size, size, 3), dtype=np.uint8)
    for i in range(n):
        base = rng.uniform(40, 200, size=3)
        slope = rng.uniform(-40, 40, size=(2, 3))
        field = base + ramp[:, None, None] * slope[0] + ramp[None, :, None] * slope[1]
        patches[i] = np.clip(field, 0, 255).astype(np.uint8)
    return patches


def write_store(
    path, slide_id: str, n_main: int, n_low: int, seed: int = 0, size: int = 32, mpp: float = 0.5
):
    images = {
        "main": smooth_patches(n_main, size, seed),
        "low": smooth_patches(n_low, size, seed + 1),
    }
    coords = {scale: np.arange(len(images[scale]) * 2).reshape(-1, 2) * 64 for scale in images}
    with PatchStoreWriter(
        path, patch_size=size, jpeg_quality=90, scales=SCALES, expected_patches=n_main + n_low
    ) as writer:
        for scale in ("main", "low"):
            writer.add_images(
                slide_id,
                scale,
                coords[scale],
                iter(images[scale]),
                extent_level0=64.0 * SCALES[scale],
                slide_mpp=mpp,
            )
    return images, coords


def test_round_trip_meta_coords_pixels(tmp_path):
    path = tmp_path / "s1.lmdb"
    images, coords = write_store(path, "s1", 5, 3)
    store = PatchStore(path)
    assert store.slide_ids == ["s1"]
    assert store.scales == ["main", "low"]
    assert store.count("s1", "main") == 5 and store.count("s1", "low") == 3
    np.testing.assert_array_equal(store.coords("s1", "main"), coords["main"])
    assert store.coords("s1", "low").dtype == np.int64
    meta = store.meta
    assert meta["format"] == "abmilx-patches" and meta["format_version"] == 1
    assert meta["code_version"] == abmilx.__version__
    assert meta["patch_size"] == 32 and meta["jpeg_quality"] == 90
    assert meta["scales"] == {"main": {"mpp": 1.0}, "low": {"mpp": 2.0}}
    assert meta["slides"] == {"s1": {"main": 5, "low": 3}}
    assert store.extent_level0("s1", "low") == 128.0
    assert meta["slide_mpp"] == {"s1": 0.5}
    patches = store.read("s1", "main", [4, 0, 2])
    assert patches.shape == (3, 32, 32, 3) and patches.dtype == np.uint8
    error = np.abs(patches.astype(int) - images["main"][[4, 0, 2]].astype(int))
    assert error.mean() < 3.0
    assert store.read_jpeg("s1", "low", 1)[:2] == b"\xff\xd8"
    # two readers of one file share the environment; raw keys are as documented once closed
    other = PatchStore(path)
    assert other.read_jpeg("s1", "main", 0) == store.read_jpeg("s1", "main", 0)
    store.close()
    assert other.count("s1", "main") == 5 and other.read("s1", "low", [0]).shape[0] == 1
    other.close()
    with lmdb.open(str(path), subdir=False, readonly=True, lock=False) as env, env.begin() as txn:
        raw = txn.get(b"s1/low/coords")
        assert np.frombuffer(raw, "<i8").reshape(-1, 2).tolist() == coords["low"].tolist()
        assert txn.get(b"s1/main/0000004") is not None
        assert json.loads(txn.get(META_KEY))["slides"]["s1"]["low"] == 3


def test_reader_errors_name_slide_and_scale(tmp_path):
    path = tmp_path / "s1.lmdb"
    write_store(path, "s1", 2, 1)
    store = PatchStore(path)
    with pytest.raises(KeyError, match="'s9'"):
        store.count("s9", "main")
    with pytest.raises(KeyError, match="'mid'"):
        store.coords("s1", "mid")
    with pytest.raises(IndexError, match="count 2"):
        store.read("s1", "main", [2])
    with pytest.raises(FileNotFoundError, match=r"missing\.lmdb"):
        PatchStore(tmp_path / "missing.lmdb")


def test_failed_write_leaves_no_store(tmp_path):
    path = tmp_path / "s1.lmdb"

    def patches_then_crash():
        yield from smooth_patches(2, 32, 0)
        raise RuntimeError("killed")

    with (
        pytest.raises(RuntimeError, match="killed"),
        PatchStoreWriter(path, patch_size=32, jpeg_quality=90, scales=SCALES) as writer,
    ):
        writer.add_images("s1", "main", np.zeros((3, 2)), patches_then_crash())
    assert not path.exists()
    assert list(tmp_path.iterdir()) == []


def test_writer_rejects_count_mismatch_and_wrong_shape(tmp_path):
    with PatchStoreWriter(tmp_path / "a.lmdb", patch_size=32, jpeg_quality=90, scales=SCALES) as w:
        with pytest.raises(ValueError, match="1 patches for 2 coords"):
            w.add_images("s1", "main", np.zeros((2, 2)), smooth_patches(1, 32, 0))
        with pytest.raises(ValueError, match="expected \\(32, 32, 3\\)"):
            w.add_images("s1", "low", np.zeros((1, 2)), smooth_patches(1, 16, 0))


def test_map_grows_when_expected_count_is_too_small(tmp_path):
    path = tmp_path / "big.lmdb"
    rng = np.random.default_rng(0)
    noise = rng.integers(0, 256, size=(400, 256, 256, 3), dtype=np.uint8)  # ~100 MB of JPEG
    with PatchStoreWriter(path, patch_size=256, jpeg_quality=95, scales={"main": 1.0}) as writer:
        writer.add_images("s1", "main", np.zeros((400, 2)), iter(noise))
    assert PatchStore(path).count("s1", "main") == 400


def test_pack_merges_and_skips_empty(tmp_path):
    _, coords_a = write_store(tmp_path / "a.lmdb", "a", 4, 2, seed=1)
    write_store(tmp_path / "b.lmdb", "b", 3, 1, seed=5)
    write_empty_store(tmp_path / "c.lmdb", "c", patch_size=32, jpeg_quality=90, scales=SCALES)
    assert PatchStore(tmp_path / "c.lmdb").meta["slides"] == {"c": {"main": 0, "low": 0}}
    out = tmp_path / "patches.lmdb"
    meta = pack_stores([tmp_path / "a.lmdb", tmp_path / "c.lmdb", tmp_path / "b.lmdb"], out)
    assert meta["slides"] == {"a": {"main": 4, "low": 2}, "b": {"main": 3, "low": 1}}
    packed = PatchStore(out)
    np.testing.assert_array_equal(packed.coords("a", "main"), coords_a["main"])
    assert packed.read_jpeg("b", "main", 2) == PatchStore(tmp_path / "b.lmdb").read_jpeg(
        "b", "main", 2
    )
    assert packed.extent_level0("b", "low") == 128.0
    assert not (tmp_path / "patches.lmdb.partial").exists()


def test_pack_rejects_duplicates_and_mismatches(tmp_path):
    write_store(tmp_path / "a.lmdb", "a", 2, 1)
    write_store(tmp_path / "a2.lmdb", "a", 2, 1)
    with pytest.raises(ValueError, match="'a' is in both"):
        pack_stores([tmp_path / "a.lmdb", tmp_path / "a2.lmdb"], tmp_path / "p.lmdb")
    write_store(tmp_path / "b.lmdb", "b", 2, 1, size=16)
    with pytest.raises(ValueError, match=r"b\.lmdb: patch_size 16"):
        pack_stores([tmp_path / "a.lmdb", tmp_path / "b.lmdb"], tmp_path / "p.lmdb")
    assert not (tmp_path / "p.lmdb").exists()


def _read_in_child(store: PatchStore, queue) -> None:
    patches = store.read("s1", "main", [0, 1])
    queue.put((int(patches.sum()), store._pid))


def test_fork_safety_and_pickling(tmp_path):
    path = tmp_path / "s1.lmdb"
    write_store(path, "s1", 3, 1)
    store = PatchStore(path)
    parent_sum = int(store.read("s1", "main", [0, 1]).sum())  # parent opens its environment
    parent_env = store._env
    context = multiprocessing.get_context("fork")
    queue = context.Queue()
    child = context.Process(target=_read_in_child, args=(store, queue))
    child.start()
    child_sum, child_pid = queue.get(timeout=30)
    child.join(timeout=30)
    assert child.exitcode == 0
    assert child_sum == parent_sum
    assert child_pid == child.pid  # the child opened its own environment
    assert store._env is parent_env and int(store.read("s1", "main", [0, 1]).sum()) == parent_sum
    clone = pickle.loads(pickle.dumps(store))
    assert clone._env is None and int(clone.read("s1", "main", [0, 1]).sum()) == parent_sum


def test_not_a_store(tmp_path):
    path = tmp_path / "x.lmdb"
    with lmdb.open(str(path), subdir=False, lock=False) as env, env.begin(write=True) as txn:
        txn.put(b"k", b"v")
    with pytest.raises(ValueError, match="not a patch store"):
        _ = PatchStore(path).meta
