"""tiling.pack: move packs a copy and Snakemake removes the per-slide stores once packed
(temporary outputs); the finished run then has nothing to do."""

import shutil

import pytest
import yaml
from tiny_workflow import TINY_CONFIG, snakemake

from abmilx.config import REPO_ROOT
from abmilx.patches.store import PatchStore

pytestmark = pytest.mark.integration


def test_move_keeps_one_copy_of_the_patches(tmp_path):
    shutil.copytree(
        REPO_ROOT / "src", tmp_path / "src", ignore=shutil.ignore_patterns("__pycache__")
    )
    config = yaml.safe_load(TINY_CONFIG.read_text())
    config["tiling"]["pack"] = "move"
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(config))
    target = "results/tiles/tiny/patches.lmdb"
    result = snakemake(tmp_path, "--cores", "2", target)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-8000:]
    slides = tmp_path / "results" / "tiles" / "tiny" / "slides"
    with PatchStore(tmp_path / target) as store:
        assert not store.is_index and store.slide_ids
        assert store.read(store.slide_ids[0], "main", [0]).shape == (1, 32, 32, 3)
    assert not list(slides.glob("*.lmdb"))  # removed once packed
    assert len(list(slides.glob("*.json"))) == 10  # the tiling records stay
    dry = snakemake(tmp_path, "-n", target)
    assert "Nothing to be done" in dry.stdout + dry.stderr, dry.stdout[-4000:]
