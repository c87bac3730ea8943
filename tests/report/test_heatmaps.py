"""Heatmaps people can read: one extreme patch must not flatten the rest of a slide's range."""

from __future__ import annotations

import numpy as np
import pytest

from abmilx.report.figures.draw import attention_map, normalise_attention, overlay

# 10 x 10 patches of side 10 px: a smooth ramp of attention and one patch 1,000x hotter
COORDS = np.array([(x * 10, y * 10) for y in range(10) for x in range(10)])
RAMP = np.linspace(0.001, 0.002, len(COORDS))


def rendered_colours(normalisation: str) -> np.ndarray:
    attention = RAMP.copy()
    attention[0] = 2.0
    heat, covered = attention_map(
        COORDS, attention[None, :], 10, 1.0, (100, 100), normalisation=normalisation
    )
    grey = np.full((100, 100, 3), 200, np.uint8)
    return overlay(grey, heat, covered)


def distinct_colours_of_the_ramp(image: np.ndarray) -> int:
    """Distinct rendered colours among the patch centres, the extreme patch left out."""
    centres = image[5::10, 5::10].reshape(-1, 3)[1:]
    return len(np.unique(np.round(centres * 255).astype(int), axis=0))


def test_percentile_and_rank_keep_the_range_visible_beside_one_extreme_patch():
    assert distinct_colours_of_the_ramp(rendered_colours("minmax")) <= 2  # all one colour
    assert distinct_colours_of_the_ramp(rendered_colours("percentile")) >= 60
    assert distinct_colours_of_the_ramp(rendered_colours("rank")) >= 90


def test_normalisations_map_into_the_unit_interval_in_order():
    values = np.array([3.0, 1.0, 2.0, 100.0])
    for normalisation in ("percentile", "minmax", "rank"):
        scaled = normalise_attention(values, normalisation)
        assert scaled.min() >= 0.0 and scaled.max() <= 1.0
        assert list(np.argsort(scaled, kind="stable")) == [1, 2, 0, 3]
    np.testing.assert_allclose(normalise_attention(values, "rank"), [2 / 3, 0, 1 / 3, 1])
    np.testing.assert_allclose(normalise_attention(np.ones(3), "percentile"), np.ones(3))
    with pytest.raises(ValueError, match="use one of percentile, minmax, rank"):
        normalise_attention(values, "zscore")


def test_the_schema_fills_the_heatmap_normalisation():
    from abmilx.config import REPO_ROOT, load_config, validate_config

    config = load_config(REPO_ROOT / "config.yaml")
    validate_config(config)
    heatmaps = [f for f in config["figures"].values() if f["kind"] == "attention_heatmaps"]
    assert heatmaps and all(f["normalisation"] == "percentile" for f in heatmaps)
