"""Shared fixtures: tiny synthetic slides rendered once per session (real files, real OpenSlide)."""

from __future__ import annotations

import cv2
import pytest
import torch

from abmilx.cohort import plan_cohort


@pytest.fixture(autouse=True, scope="session")
def _single_thread():
    cv2.setNumThreads(1)
    torch.set_num_threads(1)


@pytest.fixture(scope="session")
def subtyping_plan():
    return plan_cohort("demo", "subtyping", 40, 30, seed=7)


@pytest.fixture
def small():
    """Rendering options of a 400 x 300 µm slide: 800 x 600 px at 0.5 µm/px, renders fast."""
    return {"width_um": 400.0, "height_um": 300.0}
