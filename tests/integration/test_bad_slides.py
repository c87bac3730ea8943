"""Bad slides inside a real cohort, run through the real DAG: each gets a QC row with a reason,
the good ones go on to the table, ``strict`` stops the run naming the slide, and a tiling job
killed mid-write leaves no store that a rerun would take for finished."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest
import tifffile
import yaml

from abmilx.cohort.slidefile import write_slide
from abmilx.config import REPO_ROOT
from abmilx.patches.store import PatchStore

pytestmark = pytest.mark.integration
BIN = Path(sys.executable).parent
DATASET = "cohort"
TARGETS = ["results/tables", "results/qc/slides.tsv"]
AS_ROOT = os.geteuid() == 0  # root reads a mode-000 file: use a directory named .svs instead
# bad slide id -> (expected QC status, words a person would look for in the reason)
BAD = {
    "unreadable": ("failed", "is a directory" if AS_ROOT else "permission denied"),
    "zero_byte": ("failed", "zero-byte file"),
    "truncated": ("failed", "truncated"),
    "not_a_slide": ("failed", "not a slide file"),
    "blank": ("no_tissue", "no tissue found"),
    "no_mpp": ("failed", "no mpp metadata"),
    "drawing": ("failed", "72 dpi"),  # a TIFF drawing whose only resolution is 72 dpi
    "lzma": ("failed", "unsupported TIFF compression 34925 (LZMA)"),
}
TIFFS = {"no_mpp", "drawing", "lzma"}


# a 200 x 200 µm rectangle (level-0 px at 0.5 µm/px, on the 8 µm/px mask grid) inside good6's first blob
ANNOTATION = {"type": "FeatureCollection", "features": [{"type": "Feature", "properties": {},
    "geometry": {"type": "Polygon",
                 "coordinates": [[[192, 192], [592, 192], [592, 592], [192, 592], [192, 192]]]}}]}  # fmt: skip


def snakemake(workdir: Path, *args: str, timeout: int = 300) -> subprocess.CompletedProcess:
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}"}
    return subprocess.run(
        [str(BIN / "snakemake"), "--snakefile", str(REPO_ROOT / "Snakefile"),
         "--directory", str(workdir), "--configfile", str(workdir / "config.yaml"),
         "--cores", "2", *args],
        env=env, capture_output=True, text=True, timeout=timeout,
    )  # fmt: skip


def tissue_image(seed: int, blank: bool = False) -> np.ndarray:
    """768 x 1024 px of background with two stained blobs (none when ``blank``)."""
    rng = np.random.default_rng(seed)
    image = np.clip(rng.normal(238, 3, (768, 1024, 3)), 0, 255).astype(np.uint8)
    if blank:
        return image
    mask = np.zeros(image.shape[:2], np.uint8)
    cv2.ellipse(mask, (300, 380), (220, 260), 10 * seed, 0, 360, 1, -1)
    cv2.circle(mask, (760, 360), 170 + 10 * seed, 1, -1)
    colour = np.array([200, 110, 170], np.float32) + rng.normal(0, 12, image.shape)
    image[mask > 0] = np.clip(colour, 0, 255).astype(np.uint8)[mask > 0]
    return image


def build_cohort(root: Path) -> None:
    slides = root / "data" / "slides"
    slides.mkdir(parents=True)
    rows, labels = [], []
    for index in range(8):  # 4 per class
        slide_id = f"good{index}"
        write_slide(slides / f"{slide_id}.svs", tissue_image(index), mpp=0.5)
        rows.append((slide_id, f"case{index}", f"slides/{slide_id}.svs"))
        labels.append((slide_id, "A" if index % 2 else "B"))
    good_file = slides / "good0.svs"
    if AS_ROOT:
        (slides / "unreadable.svs").mkdir()
    else:
        shutil.copy(good_file, slides / "unreadable.svs")
        (slides / "unreadable.svs").chmod(0)
    (slides / "zero_byte.svs").touch()
    data = good_file.read_bytes()
    (slides / "truncated.svs").write_bytes(data[: len(data) // 2])
    (slides / "not_a_slide.svs").write_text("this is a note, not a slide\n")
    write_slide(slides / "blank.svs", tissue_image(0, blank=True), mpp=0.5)
    write_slide(slides / "no_mpp.tif", tissue_image(9), mpp=0.5, slide_format="nompp")
    plain = dict(photometric="rgb", tile=(256, 256), metadata=None)
    tifffile.imwrite(slides / "drawing.tif", tissue_image(10), compression="jpeg",
                     resolution=(72, 72), resolutionunit="INCH", **plain)  # fmt: skip
    tifffile.imwrite(slides / "lzma.tif", tissue_image(11), compression="lzma",
                     resolution=(20000, 20000), resolutionunit="CENTIMETER", **plain)  # fmt: skip
    for index, slide_id in enumerate(BAD):
        suffix = ".tif" if slide_id in TIFFS else ".svs"
        rows.append((slide_id, f"bad{index}", f"slides/{slide_id}{suffix}"))
        labels.append((slide_id, "A" if index % 2 else "B"))
    sheet = pd.DataFrame(rows, columns=["slide_id", "case_id", "path"])
    # per-slide overrides (optional columns): settings for good7, an annotation for good6
    sheet["segmentation"] = ""
    sheet.loc[sheet.slide_id == "good7", "segmentation"] = json.dumps({"closing_um": 16.0})
    sheet["geojson"] = ""
    sheet.loc[sheet.slide_id == "good6", "geojson"] = "annotations/good6.geojson"
    (root / "data" / "annotations").mkdir()
    (root / "data" / "annotations" / "good6.geojson").write_text(json.dumps(ANNOTATION))
    sheet.to_csv(root / "data" / "slides.csv", index=False)
    pd.DataFrame(labels, columns=["slide_id", "label"]).to_csv(
        root / "data" / "labels.csv", index=False
    )
    config = {
        "seed": 5,
        "device": "cpu",
        "datasets": {
            DATASET: {
                "task": "subtyping",
                "classes": ["A", "B"],
                "slides": str(root / "data" / "slides.csv"),
                "labels": str(root / "data" / "labels.csv"),
                "split": {"scheme": "holdout", "ratios": [0.5, 0.0, 0.5]},
            }
        },
        "segmentation": {"min_tissue_area_um2": 20000, "min_hole_area_um2": 4000},
        "tiling": {"patch_size": 32, "scales": {"main": 2.0, "low": 4.0}, "jpeg_quality": 85},
        "feature_sets": {
            "r18": {"encoder": "resnet18_layer3", "weights": "random", "image_size": 32,
                    "batch_size": 64, "num_workers": 0},
        },
        "experiments": {
            "abmil_two_stage": {"kind": "two_stage", "title": "ABMIL two-stage",
                                "features": "r18", "settings": {"mil": "abmil", "epochs": 2}},
        },
        "evaluation": {"n_boot": 50},
    }  # fmt: skip
    (root / "config.yaml").write_text(yaml.safe_dump(config))


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("bad_slides")
    build_cohort(workdir)
    result = snakemake(workdir, *TARGETS)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-8000:]
    yield workdir
    unreadable = workdir / "data" / "slides" / "unreadable.svs"
    if unreadable.is_file():
        unreadable.chmod(0o644)  # let pytest clean up


@pytest.fixture(scope="module")
def qc(finished_run):
    return pd.read_csv(finished_run / "results" / "qc" / "slides.tsv", sep="\t").set_index(
        "slide_id"
    )


@pytest.mark.parametrize("slide_id", list(BAD))
def test_bad_slide_has_status_and_reason(qc, slide_id):
    status, words = BAD[slide_id]
    row = qc.loc[slide_id]
    assert row.status == status, (slide_id, row.status, row.reason)
    assert words in row.reason, (slide_id, row.reason)
    assert row.patches_main == 0 and row.patches_low == 0


def test_refused_tiffs_keep_what_the_file_tells_in_the_qc_row(qc):
    assert (qc.loc["drawing", "mpp_source"], qc.loc["drawing", "vendor"]) == (
        "tiff-resolution-inch", "generic-tiff",
    )  # fmt: skip
    assert (qc.loc["lzma", "vendor"], qc.loc["lzma", "mpp"], qc.loc["lzma", "width"]) == (
        "generic-tiff", 0.5, 1024,
    )  # fmt: skip


def test_good_slides_are_ok_and_reach_the_table(finished_run, qc):
    assert len(qc) == 8 + len(BAD)
    good = qc.loc[[f"good{i}" for i in range(8)]]
    assert (good.status == "ok").all(), good[["status", "reason"]]
    assert (good.patches_main > 0).all() and (good.tissue_area_mm2 > 0).all()
    table = pd.read_csv(finished_run / "results" / "tables" / "main.csv")
    assert set(table.experiment) == {"abmil_two_stage"} and len(table) > 0


def test_slide_sheet_overrides_reach_segmentation(finished_run, qc):
    records = finished_run / "results" / "qc" / "segmentation" / DATASET
    settings = json.loads((records / "good7.json").read_text())
    assert settings["overridden_settings"] == ["closing_um"]
    assert settings["settings"]["closing_um"] == 16.0
    annotated = json.loads((records / "good6.json").read_text())
    assert annotated["mask_source"] == "geojson"
    assert annotated["tissue_area_mm2"] == pytest.approx(0.2 * 0.2, rel=0.05)
    assert qc.loc["good6", "tissue_area_mm2"] == pytest.approx(0.04, rel=0.05)


def test_split_leaves_out_bad_slides(finished_run):
    split = pd.read_csv(finished_run / "results" / "splits" / f"{DATASET}.csv")
    assert set(split.slide_id) == {f"good{i}" for i in range(8)}
    assert set(split.split) == {"train", "test"}
    summary = json.loads((finished_run / "results" / "splits" / f"{DATASET}.json").read_text())
    assert set(BAD) <= {e["slide_id"] for e in summary["excluded"]}


KILLED_WRITER = textwrap.dedent(
    """
    import os, signal, sys
    import numpy as np
    from abmilx.patches.store import PatchStoreWriter, encode_jpeg

    def patches():
        for index in range(1500):
            if index == 1200:  # after one committed transaction of 1000 puts
                os.kill(os.getpid(), signal.SIGKILL)
            yield encode_jpeg(np.full((32, 32, 3), index % 255, np.uint8), 85)

    writer = PatchStoreWriter(sys.argv[1], patch_size=32, jpeg_quality=85,
                              scales={"main": 2.0, "low": 4.0}, expected_patches=1500)
    writer.add_slide("good0", "main", np.zeros((1500, 2), np.int64), patches())
    writer.close()
    """
)


def test_killed_tiling_job_is_redone(finished_run):
    """A tiling job killed mid-write leaves only ``<store>.partial``: the next run finds the
    store missing from its shard's manifest, reruns that shard and tiles that slide alone."""
    slides_dir = finished_run / "results" / "tiles" / DATASET / "slides"
    store = slides_dir / "good0.lmdb"
    store.unlink()  # the killed job had not finished: its output is not there yet
    killed = subprocess.run([sys.executable, "-c", KILLED_WRITER, str(store)], timeout=60)
    assert killed.returncode == -signal.SIGKILL
    partial = store.with_name(store.name + ".partial")
    assert partial.is_file() and not store.exists()
    others = {p.name: p.stat().st_mtime_ns for p in slides_dir.glob("*.lmdb")}
    (manifest,) = (finished_run / "results" / "tiles" / DATASET).glob("slides.shards/*/*.json")
    target = str(manifest.relative_to(finished_run))
    dry = snakemake(finished_run, "-n", target)
    assert dry.returncode == 0, dry.stderr[-4000:]
    assert "tile_slide" in dry.stdout + dry.stderr, dry.stdout[-4000:]
    rerun = snakemake(finished_run, target)
    assert rerun.returncode == 0, rerun.stdout[-4000:] + rerun.stderr[-8000:]
    assert store.is_file() and not partial.exists()
    with PatchStore(store) as opened:
        assert opened.count("good0", "main") > 0
    assert {name: (slides_dir / name).stat().st_mtime_ns for name in others} == others


def test_strict_run_fails_naming_the_bad_slide(finished_run):
    result = snakemake(finished_run, "results/qc/slides.tsv", "--config", "strict=True")
    output = result.stdout + result.stderr
    assert result.returncode != 0, output[-4000:]
    assert "slide zero_byte: failed: zero-byte file" in output, output[-6000:]
    assert "slide not_a_slide: failed: not a slide file" in output, output[-6000:]
