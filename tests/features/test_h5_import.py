"""CLAM/TRIDENT HDF5 feature files as a feature set: checks, and the same training as ours.

The files are written here with h5py in the layouts the two tools document: TRIDENT keeps the
patch geometry on the feature file's `coords` (patch_size, patch_size_level0, magnifications);
CLAM's feature files (`h5_files/`) have int32 coords and no attributes, and its patch files
(`patches/`) carry patch_size, patch_level and downsample.
"""

import json
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import pytest
import torch

from abmilx.evaluation import evaluate
from abmilx.features.__main__ import main
from abmilx.features.h5 import H5FeatureError, import_h5
from abmilx.training.runs import load_run
from abmilx.two_stage import train

torch.set_num_threads(1)

SLIDE_MPP = 0.25  # a 40x scan
SCALE = {"scale": "main", "mpp": 0.5, "patch_size": 256}  # 20x patches of 256 px


def write_ours(directory: Path, labels: dict[str, int], dim: int = 12) -> None:
    """Our feature files (the layout abmilx.features.extract writes); class 1 carries a signal."""
    rng = np.random.default_rng(0)
    directory.mkdir(parents=True)
    for k, (slide_id, label) in enumerate(labels.items()):
        n = 8 + k
        features = rng.normal(size=(n, dim)).astype(np.float32)
        features[:3, 0] += 3.0 * label
        coords = np.stack([np.arange(n) * 512, np.full(n, 1024)], axis=1).astype(np.int64)
        record = {"features": torch.from_numpy(features), "coords": torch.from_numpy(coords)}
        torch.save(record, directory / f"{slide_id}.pt")


def write_clam(ours: Path, root: Path, slide_ids, batch_axis: bool = True) -> None:
    """CLAM: h5_files/<id>.h5 (features, int32 coords, no attrs) + patches/<id>.h5 (coords with
    patch_size at patch_level 1, downsample 2 of a 40x slide)."""
    (root / "h5_files").mkdir(parents=True)
    (root / "patches").mkdir()
    for slide_id in slide_ids:
        record = torch.load(ours / f"{slide_id}.pt")
        features, coords = record["features"].numpy(), record["coords"].numpy().astype(np.int32)
        with h5py.File(root / "h5_files" / f"{slide_id}.h5", "w") as handle:
            handle["features"] = features[None] if batch_axis else features
            handle["coords"] = coords
        with h5py.File(root / "patches" / f"{slide_id}.h5", "w") as handle:
            handle["coords"] = coords
            attrs = handle["coords"].attrs
            attrs["patch_size"], attrs["patch_level"] = 256, 1
            attrs["downsample"] = np.array([2.0, 2.0])
            attrs["name"] = slide_id


def write_trident(ours: Path, folder: Path, slide_ids, patch_size_level0: int = 512) -> None:
    """TRIDENT: <id>.h5 with features and level-0 coords whose attrs give the geometry."""
    folder.mkdir(parents=True)
    for slide_id in slide_ids:
        record = torch.load(ours / f"{slide_id}.pt")
        with h5py.File(folder / f"{slide_id}.h5", "w") as handle:
            handle["features"] = record["features"].numpy()
            handle["coords"] = record["coords"].numpy()
            attrs = handle["coords"].attrs
            attrs["patch_size"], attrs["patch_size_level0"] = 256, patch_size_level0
            attrs["level0_magnification"], attrs["target_magnification"] = 40, 20


def write_qc(folder: Path, slide_ids, failed=()) -> None:
    """Tiling QC records: the slides that passed, and failed ones (which need no file)."""
    folder.mkdir(parents=True)
    for slide_id in [*slide_ids, *failed]:
        status = "failed" if slide_id in failed else "ok"
        record = {"slide_id": slide_id, "status": status, "mpp": SLIDE_MPP}
        (folder / f"{slide_id}.json").write_text(json.dumps(record))


@pytest.fixture
def cohort(tmp_path):
    labels = {f"s{k}": k % 2 for k in range(12)}
    write_ours(tmp_path / "ours", labels)
    write_qc(tmp_path / "qc", labels, failed=["s_failed"])
    split = ["train"] * 8 + ["val"] * 2 + ["test"] * 2
    pd.DataFrame(
        {
            "slide_id": list(labels),
            "case_id": list(labels),
            "label": ["pos" if y else "neg" for y in labels.values()],
            "split": split,
            "fold": 0,
        }
    ).to_csv(tmp_path / "splits.csv", index=False)
    return tmp_path, list(labels)


def clam_settings(root: Path) -> dict:
    return {
        "h5_dir": str(root / "h5_files"),
        "h5_pattern": "{slide_id}.h5",
        "h5_coords_dir": str(root / "patches"),
        "encoder": "resnet50_layer3",
        **SCALE,
    }


def train_and_evaluate(features: Path, splits: Path, out: Path) -> tuple[dict, dict]:
    settings = {"epochs": 4, "lr": 2e-3, "seed": 1, "classes": ["neg", "pos"]}
    train(features, splits, 0, out, **settings)
    metrics = evaluate(
        out, splits, 0, "two_stage", out / "eval", features_dir=features, n_boot=50, seed=3,
        model_weights="main", device="cpu", paper_inference_time=False,
    )  # fmt: skip
    return load_run(out)["state_dict"], metrics["metrics"]


def test_clam_files_train_to_the_same_weights_and_metrics_as_ours(cohort):
    tmp, slide_ids = cohort
    write_clam(tmp / "ours", tmp / "clam", slide_ids)
    main(
        ["import-h5", "--qc-dir", str(tmp / "qc"), "--out-dir", str(tmp / "imported"),
         "--settings", json.dumps(clam_settings(tmp / "clam"))]
    )  # fmt: skip
    assert sorted(p.stem for p in (tmp / "imported").glob("*.pt")) == sorted(slide_ids)
    record = torch.load(tmp / "imported" / "s3.pt")
    assert record["features"].dtype == torch.float32 and record["coords"].dtype == torch.int64
    assert record["source"] == "h5" and record["mpp"] == 0.5

    ours_model, ours_metrics = train_and_evaluate(tmp / "ours", tmp / "splits.csv", tmp / "a")
    h5_model, h5_metrics = train_and_evaluate(tmp / "imported", tmp / "splits.csv", tmp / "b")
    assert ours_model.keys() == h5_model.keys()
    for name, tensor in ours_model.items():
        assert torch.equal(tensor, h5_model[name]), name
    assert ours_metrics == h5_metrics
    assert (tmp / "a" / "eval" / "predictions.csv").read_text() == (
        tmp / "b" / "eval" / "predictions.csv"
    ).read_text()


def test_trident_files_read_their_own_geometry(cohort):
    tmp, slide_ids = cohort
    write_trident(tmp / "ours", tmp / "trident", slide_ids)
    settings = {**clam_settings(tmp), "h5_dir": str(tmp / "trident"), "h5_coords_dir": None}
    summary = import_h5(tmp / "imported", qc_dir=tmp / "qc", **settings)
    assert summary == {"slides": 12, "patches": sum(8 + k for k in range(12)), "dim": 12}
    for slide_id in slide_ids:
        ours = torch.load(tmp / "ours" / f"{slide_id}.pt")
        imported = torch.load(tmp / "imported" / f"{slide_id}.pt")
        assert torch.equal(ours["features"], imported["features"])
        assert torch.equal(ours["coords"], imported["coords"])


def test_missing_slides_are_named(cohort):
    tmp, slide_ids = cohort
    write_clam(tmp / "ours", tmp / "clam", slide_ids)
    (tmp / "clam" / "h5_files" / "s4.h5").unlink()
    with pytest.raises(H5FeatureError, match=r"1 of 12 slides .*s4 \(.*h5_files/s4\.h5\)"):
        import_h5(tmp / "imported", qc_dir=tmp / "qc", **clam_settings(tmp / "clam"))
    assert not (tmp / "imported").exists()  # nothing written before every file is checked


def test_shape_mismatch_names_the_file(cohort):
    tmp, slide_ids = cohort
    write_clam(tmp / "ours", tmp / "clam", slide_ids)
    path = tmp / "clam" / "h5_files" / "s2.h5"
    with h5py.File(path, "a") as handle:
        del handle["coords"]
        handle["coords"] = np.zeros((3, 2), np.int32)
    with pytest.raises(H5FeatureError, match=r"s2\.h5: coords have shape \(3, 2\) but features"):
        import_h5(tmp / "imported", qc_dir=tmp / "qc", **clam_settings(tmp / "clam"))


def test_dimension_mismatch_names_a_file_of_each(cohort):
    tmp, slide_ids = cohort
    write_clam(tmp / "ours", tmp / "clam", slide_ids)
    path = tmp / "clam" / "h5_files" / "s5.h5"
    with h5py.File(path, "a") as handle:
        features = handle["features"][()]
        del handle["features"]
        handle["features"] = features[..., :10]
    with pytest.raises(H5FeatureError, match=r"differ in dimension: 10 \(.*s5\.h5\), 12"):
        import_h5(tmp / "imported", qc_dir=tmp / "qc", **clam_settings(tmp / "clam"))


def test_resolution_and_patch_size_mismatches_name_the_file(cohort):
    tmp, slide_ids = cohort
    write_trident(tmp / "ours", tmp / "trident", slide_ids, patch_size_level0=1024)  # 10x
    settings = {**clam_settings(tmp), "h5_dir": str(tmp / "trident"), "h5_coords_dir": None}
    with pytest.raises(H5FeatureError, match=r"s0\.h5: patches cover 256 µm .*scale 128 µm"):
        import_h5(tmp / "imported", qc_dir=tmp / "qc", **settings)
    settings["mpp"] = 1.0  # 10x patches of 256 px cover what these do
    assert import_h5(tmp / "imported", qc_dir=tmp / "qc", **settings)["slides"] == 12
    with pytest.raises(H5FeatureError, match=r"cover 256 µm .*patch_size 224 px at 1 µm/px"):
        import_h5(tmp / "imported2", qc_dir=tmp / "qc", **{**settings, "patch_size": 224})


def test_clam_features_without_their_patch_files_say_what_to_give(cohort):
    tmp, slide_ids = cohort
    write_clam(tmp / "ours", tmp / "clam", slide_ids)
    settings = {**clam_settings(tmp / "clam"), "h5_coords_dir": None}
    with pytest.raises(H5FeatureError, match=r"s0\.h5: coords record no patch size.*h5_coords_dir"):
        import_h5(tmp / "imported", qc_dir=tmp / "qc", **settings)
    with h5py.File(tmp / "clam" / "patches" / "s0.h5", "a") as handle:
        handle["coords"][0] = [7, 7]
    with pytest.raises(H5FeatureError, match=r"patches/s0\.h5: its coords are not those of"):
        import_h5(tmp / "imported", qc_dir=tmp / "qc", **clam_settings(tmp / "clam"))


def test_workflow_imports_an_h5_feature_set_instead_of_encoding(tmp_path):
    """Dry run of the demo with a two-stage experiment on a CLAM feature set: its features come
    from import_h5_features, after tiling (QC), and nothing encodes them."""
    import subprocess
    import sys

    from abmilx.config import REPO_ROOT

    (tmp_path / "clam" / "h5_files").mkdir(parents=True)
    (tmp_path / "clam" / "patches").mkdir()
    (tmp_path / "config.yaml").write_text((REPO_ROOT / "config.yaml").read_text())
    extra = tmp_path / "clam.yaml"
    extra.write_text(
        "feature_sets:\n"
        "  clam_uni: {source: h5, h5_dir: clam/h5_files, h5_coords_dir: clam/patches}\n"
        "experiments:\n"
        "  abmil_clam: {kind: two_stage, features: clam_uni, datasets: [demo_subtyping]}\n"
    )
    snakemake = Path(sys.executable).parent / "snakemake"
    target = "results/runs/demo_subtyping/abmil_clam/fold0/model.pt"
    result = subprocess.run(
        [str(snakemake), "-n", target, "--directory", str(tmp_path), "--configfile", str(extra)],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert "import_h5_features" in output and "tile_slide" in output, output
    assert "extract_features" not in output and "pack_tiles" not in output, output


def test_config_names_a_missing_h5_folder(tmp_path):
    from abmilx.config import ConfigError, check_config, validate_config

    dataset = {"task": "subtyping", "classes": ["a", "b"], "synthetic": {}}
    folder = tmp_path / "nowhere"
    config = validate_config(
        {"datasets": {"d": dataset}, "feature_sets": {"x": {"source": "h5", "h5_dir": str(folder)}}}
    )
    with pytest.raises(ConfigError, match=r"'feature_sets/x/h5_dir': folder .*nowhere' does not"):
        check_config(config)
