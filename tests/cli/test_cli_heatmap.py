"""`abmilx heatmap`: one slide's attention at a chosen resolution, with a colour bar."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pandas as pd
import pytest

from abmilx.cli.heatmap import BAR_HEIGHT, colour_table, draw_slide_heatmap
from abmilx.cohort.slidefile import write_slide


@pytest.fixture
def layout(tmp_path):
    """A 0.5 µm/px slide with 2 x 2 main-scale patches of 128 level-0 px, the top-left hot."""
    results = tmp_path / "results"
    image = np.full((512, 512, 3), 235, np.uint8)
    image[64:320, 64:320] = (190, 110, 170)
    write_slide(results / "cohort" / "d" / "slides" / "s1.svs", image, mpp=0.5, downsamples=(1, 4))
    pd.DataFrame({"slide_id": ["s1"], "case_id": ["c1"], "path": ["slides/s1.svs"]}).to_csv(
        results / "cohort" / "d" / "slides.csv", index=False
    )
    fold = results / "runs" / "d" / "exp" / "fold0"
    fold.mkdir(parents=True)
    coords = np.array([[64, 64], [192, 64], [64, 192], [192, 192]], np.int64)
    attention = np.array([[9.0, 0.1, 0.2, 0.3]], np.float32)
    np.savez(fold / "attention.npz", **{"s1/coords": coords, "s1/attention": attention})
    records = results / "tiles" / "d" / "slides"
    records.mkdir(parents=True)
    record = {
        "slide_id": "s1",
        "mpp": 0.5,
        "width": 512,
        "height": 512,
        "tiling": {"scales": {"main": {"mpp": 1.0, "extent_level0": 128.0}}},
    }
    (records / "s1.json").write_text(json.dumps(record))
    return fold.parent


def read_rgb(path):
    return cv2.cvtColor(cv2.imread(str(path)), cv2.COLOR_BGR2RGB)


def test_full_patch_scale_heatmap_has_the_slide_size_and_patch_colours(layout, tmp_path):
    out = draw_slide_heatmap(layout, "s1", tmp_path / "s1.png", mpp=1.0, normalisation="rank")
    image = read_rgb(out)
    assert image.shape == (256 + BAR_HEIGHT, 256, 3)  # 512 px at 0.5 µm/px shown at 1 µm/px
    table = colour_table().astype(float)
    grey = float(cv2.cvtColor(np.array([[[190, 110, 170]]], np.uint8), cv2.COLOR_RGB2GRAY)[0, 0])
    # patch i covers output pixels [coords / 2, coords / 2 + 64): rank 1 (hot) and rank 0 (cold)
    for (row, column), level in (((50, 50), 255), ((50, 120), 0)):
        expected = 0.35 * grey + 0.65 * table[level]
        assert np.abs(image[row, column] - expected).max() <= 4
    assert (image[5, 5] == image[5, 5][0]).all()  # glass outside the patches stays grey


def test_heatmap_refuses_finer_than_the_patches_and_unknown_slides(layout, tmp_path):
    with pytest.raises(ValueError, match="finer than the patches' own scale"):
        draw_slide_heatmap(layout, "s1", tmp_path / "x.png", mpp=0.5)
    with pytest.raises(ValueError, match="s9 is not an evaluated test slide"):
        draw_slide_heatmap(layout, "s9", tmp_path / "x.png")
