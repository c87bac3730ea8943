"""Feature extraction from a tiny real patch store."""

import json

import numpy as np
import pytest
import torch

from abmilx.config import encode_settings, schema_defaults
from abmilx.features.__main__ import main
from abmilx.features.extract import extract, load_features, partial_dir
from abmilx.patches.store import PatchStore, PatchStoreWriter, encode_jpeg

torch.set_num_threads(1)


@pytest.fixture
def store(tmp_path):
    rng = np.random.default_rng(0)
    path = tmp_path / "patches.lmdb"
    with PatchStoreWriter(path, patch_size=32, jpeg_quality=90, scales={"main": 0.5}) as writer:
        for slide_id, count in (("a", 7), ("b", 3)):
            images = rng.integers(0, 256, size=(count, 32, 32, 3), dtype=np.uint8)
            coords = np.stack([np.arange(count) * 32, np.zeros(count, dtype=int)], axis=1)
            writer.add_images(slide_id, "main", coords, list(images))
    return path


SETTINGS = encode_settings(schema_defaults("feature_set")) | {
    "encoder": "resnet18_layer3",
    "weights": "random",
    "image_size": 40,
    "batch_size": 4,
    "num_workers": 0,
}


def test_extract_writes_one_file_per_slide(store, tmp_path):
    stats = extract(store, tmp_path / "f1", seed=3, device="cpu", **SETTINGS)
    assert stats["patches"] == 10 and stats["patches_per_second"] > 0
    reader = PatchStore(store)
    for slide_id, count in (("a", 7), ("b", 3)):
        record = load_features(tmp_path / "f1" / f"{slide_id}.pt")
        assert record["features"].shape == (count, 256)
        assert record["features"].dtype == torch.float32
        np.testing.assert_array_equal(record["coords"].numpy(), reader.coords(slide_id, "main"))
        assert record["mpp"] == 0.5 and record["image_size"] == 40
        assert record["encoder"] == "resnet18_layer3" and record["weights"] == "random"


def test_random_weights_are_seeded(store, tmp_path):
    extract(store, tmp_path / "f1", seed=3, device="cpu", **SETTINGS)
    main(
        [
            "extract",
            "--store", str(store),
            "--out-dir", str(tmp_path / "f2"),
            "--settings", json.dumps({**SETTINGS, "seed": 3, "device": "cpu"}),
            "--threads", "1",
        ]
    )  # fmt: skip
    extract(store, tmp_path / "f3", seed=4, device="cpu", **SETTINGS)
    first = load_features(tmp_path / "f1" / "a.pt")["features"]
    assert torch.equal(first, load_features(tmp_path / "f2" / "a.pt")["features"])
    assert not torch.allclose(first, load_features(tmp_path / "f3" / "a.pt")["features"])


def test_chunking_does_not_change_features(store, tmp_path):
    extract(store, tmp_path / "small", seed=3, device="cpu", **SETTINGS)
    extract(store, tmp_path / "big", seed=3, device="cpu", **{**SETTINGS, "batch_size": 64})
    small = load_features(tmp_path / "small" / "a.pt")["features"]
    big = load_features(tmp_path / "big" / "a.pt")["features"]
    torch.testing.assert_close(small, big, rtol=1e-4, atol=1e-5)


def write_store(path, bad_patch_of=None, counts=(("a", 5), ("b", 3), ("c", 6), ("d", 2))):
    """Four slides of random patches; `bad_patch_of` gets one patch that is not a JPEG."""
    rng = np.random.default_rng(1)
    with PatchStoreWriter(path, patch_size=32, jpeg_quality=90, scales={"main": 0.5}) as writer:
        for slide_id, count in counts:
            images = rng.integers(0, 256, size=(count, 32, 32, 3), dtype=np.uint8)
            jpegs = [encode_jpeg(image, 90) for image in images]
            if slide_id == bad_patch_of:
                jpegs[1] = b"not a jpeg"
            coords = np.stack([np.arange(count) * 32, np.zeros(count, dtype=int)], axis=1)
            writer.add_slide(slide_id, "main", coords, jpegs)
    return path


def test_a_crash_redoes_only_the_unfinished_slides(tmp_path, caplog):
    store = write_store(tmp_path / "patches.lmdb", bad_patch_of="c")
    out = tmp_path / "features"
    with pytest.raises(ValueError, match=r"slide 'c' scale 'main' patches 0\.\.3"):
        extract(store, out, seed=3, device="cpu", **SETTINGS)
    assert not out.exists()
    assert sorted(p.name for p in partial_dir(out).glob("*/*.pt")) == ["a.pt", "b.pt"]

    write_store(store)  # repaired: same slides, same counts, valid JPEGs
    caplog.set_level("INFO", logger="abmilx.features.extract")
    stats = extract(store, out, seed=3, device="cpu", **SETTINGS)
    assert stats["slides_skipped"] == 2 and stats["slides_encoded"] == 2
    assert stats["patches"] == 6 + 2  # only c and d were encoded
    assert "resuming: 2 of 4 slides already done" in caplog.text
    assert "features resnet18_layer3: 8/8 patches" in caplog.text
    assert not partial_dir(out).exists()

    clean = tmp_path / "clean"
    extract(store, clean, seed=3, device="cpu", **SETTINGS)
    for slide_id in "abcd":
        resumed = load_features(out / f"{slide_id}.pt")["features"]
        assert torch.equal(resumed, load_features(clean / f"{slide_id}.pt")["features"])


def test_unfinished_slides_of_other_settings_are_discarded(tmp_path, caplog):
    store = write_store(tmp_path / "patches.lmdb", bad_patch_of="c")
    out = tmp_path / "features"
    with pytest.raises(ValueError):
        extract(store, out, seed=3, device="cpu", **SETTINGS)
    write_store(store)
    caplog.set_level("INFO", logger="abmilx.features.extract")
    stats = extract(store, out, seed=3, device="cpu", **{**SETTINGS, "image_size": 32})
    assert "settings changed" in caplog.text
    assert stats["slides_skipped"] == 0 and stats["slides_encoded"] == 4
    assert load_features(out / "a.pt")["image_size"] == 32


def test_a_lost_slide_file_is_rebuilt_alone_and_equal(store, tmp_path):
    """The manifest lists every slide file; `slides=` rebuilds a lost one, bit for bit."""
    extract(store, tmp_path / "f", seed=3, device="cpu", **SETTINGS)
    manifest = json.loads((tmp_path / "f.manifest.json").read_text())
    assert sorted(manifest["slides"]) == ["a", "b"]
    original = load_features(tmp_path / "f" / "b.pt")
    (tmp_path / "f" / "b.pt").unlink()
    before = (tmp_path / "f" / "a.pt").stat().st_mtime_ns
    main(
        [
            "extract",
            "--store", str(store),
            "--out-dir", str(tmp_path / "f"),
            "--settings", json.dumps({**SETTINGS, "seed": 3, "device": "cpu"}),
            "--slides", "b",
        ]
    )  # fmt: skip
    rebuilt = load_features(tmp_path / "f" / "b.pt")
    assert torch.equal(rebuilt["features"], original["features"])
    assert torch.equal(rebuilt["coords"], original["coords"])
    assert (tmp_path / "f" / "a.pt").stat().st_mtime_ns == before  # the others untouched
    assert sorted(path.name for path in tmp_path.iterdir() if path.name.startswith("f")) == [
        "f", "f.manifest.json"
    ]  # fmt: skip
