"""The Sec. 3.3 sparsity measure (docs/method.md) on hand-made attention vectors."""

import numpy as np
import pytest

from abmilx.report.sparsity import attention_of, slide_sparsity, sparsity_summary


@pytest.mark.parametrize(
    ("attention", "expected"),
    [
        ([0.0, 0.0, 0.0, 1.0], 0.75),  # one peak: 1 of 4 activated
        ([0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0], 0.5),  # > midpoint of the range
        ([0.2, 0.2, 0.2, 0.2], 0.0),  # constant: nothing stands out, nothing suppressed
        ([0.5, 0.49, 0.0], 1 / 3),  # 0.49 / 0.5 = 0.98 > τ, 0 is not: 2 of 3 activated
        ([[0.0, 1.0, 0.0, 0.0], [0.0, 0.0, 0.0, 1.0]], 1.0 - 2 / 4),  # heads averaged first
        ([[0.0, 1.0, 1.0, 0.0], [0.0, 0.0, 0.5, 1.0]], 0.25),  # mean 0, .5, .75, .5: 3 > τ
    ],
)
def test_slide_sparsity_on_hand_made_attention(attention, expected):
    assert slide_sparsity(np.array(attention)) == pytest.approx(expected)


def test_threshold_is_strict_and_min_max_scaled():
    # min-max scaling makes the measure independent of the attention's scale and offset
    weights = np.array([3.0, 4.0, 5.0, 7.0])  # normalised 0, .25, .5, 1: only 7 is > .5
    assert slide_sparsity(weights) == pytest.approx(0.75)
    assert slide_sparsity(10 * weights + 2) == pytest.approx(0.75)
    assert slide_sparsity(weights, threshold=0.2) == pytest.approx(0.25)


@pytest.mark.parametrize("bad", [np.zeros(0), np.zeros((2, 2, 2)), np.array([0.1, np.nan])])
def test_malformed_attention_fails(bad):
    with pytest.raises(ValueError, match="attention"):
        slide_sparsity(bad)


def test_summary_averages_slides_over_folds(tmp_path):
    np.savez(tmp_path / "f0.npz", **{"a/attention": np.array([[0, 0, 0, 1.0]]),
                                     "a/coords": np.zeros((4, 2))})  # fmt: skip
    np.savez(tmp_path / "f1.npz", **{"b/attention": np.array([[0.2, 0.2]])})
    assert set(attention_of(tmp_path / "f0.npz")) == {"a"}
    summary = sparsity_summary([tmp_path / "f0.npz", tmp_path / "f1.npz"], n_boot=200, seed=1)
    assert summary["point"] == pytest.approx(0.375) and summary["n"] == 2
    assert summary["ci_low"] == pytest.approx(0.0) and summary["ci_high"] == pytest.approx(0.75)
    assert summary == sparsity_summary([tmp_path / "f0.npz", tmp_path / "f1.npz"], 200, 1)
    np.savez(tmp_path / "none.npz")
    assert sparsity_summary([tmp_path / "none.npz"], n_boot=10, seed=0) is None
