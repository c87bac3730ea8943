"""Artefacts that tissue segmentation must reject: pen strokes and dark debris specks.

They are painted over the rendered RGB image (over glass or tissue) and returned as a mask; the
ground-truth tissue mask excludes them.
"""

from __future__ import annotations

import cv2
import numpy as np

from abmilx.cohort.texture import SCALE, SHIFT

PEN_COLOURS = {
    "green": (35, 135, 75),
    "blue": (40, 65, 165),
    "black": (30, 30, 38),
}
DEBRIS_COLOUR = (55, 45, 40)


def _stroke(width: int, height: int, rng: np.random.Generator) -> np.ndarray:
    """A smooth curve (quarter-pixel int points) through 4 random points near one slide edge,
    where pathologists usually mark."""
    edge = int(rng.integers(4))
    t = np.sort(rng.uniform(0.05, 0.95, 4))
    depth = rng.uniform(0.02, 0.25, 4)
    if edge in (0, 1):  # top / bottom
        xs, ys = t * width, (depth if edge == 0 else 1 - depth) * height
    else:  # left / right
        xs, ys = (depth if edge == 2 else 1 - depth) * width, t * height
    fine = np.linspace(0, 1, 64)
    knots = np.linspace(0, 1, 4)
    xs = np.interp(fine, knots, xs) + np.sin(fine * np.pi * rng.uniform(1, 3)) * 0.03 * width
    ys = np.interp(fine, knots, ys)
    smooth = np.stack([xs, ys], axis=1)
    smooth = cv2.blur(smooth.reshape(-1, 1, 2), (1, 9)).reshape(-1, 2)
    return np.rint(smooth * SCALE).astype(np.int32)


def pen_mark(
    shape: tuple[int, int], mpp: float, rng: np.random.Generator
) -> tuple[np.ndarray, tuple[int, int, int]]:
    """Mask of one pen stroke 40-110 µm wide and its colour."""
    height, width = shape
    mask = np.zeros(shape, dtype=np.uint8)
    thickness = max(2, round(rng.uniform(40, 110) / mpp))
    cv2.polylines(mask, [_stroke(width, height, rng)], False, 1, thickness, cv2.LINE_8, SHIFT)
    colour = list(PEN_COLOURS.values())[int(rng.integers(len(PEN_COLOURS)))]
    return mask.astype(bool), colour


def debris(shape: tuple[int, int], mpp: float, rng: np.random.Generator, count: int) -> np.ndarray:
    """Mask of ``count`` dark specks (8-40 µm irregular blobs) anywhere on the slide."""
    height, width = shape
    mask = np.zeros(shape, dtype=np.uint8)
    for _ in range(count):
        cx, cy = rng.uniform(0, width), rng.uniform(0, height)
        for _ in range(int(rng.integers(1, 4))):  # a few overlapping ellipses = irregular speck
            axes = (rng.uniform(4, 20, 2) / mpp * SCALE).astype(int)
            offset = rng.normal(0, 5 / mpp, 2)
            centre = (round((cx + offset[0]) * SCALE), round((cy + offset[1]) * SCALE))
            angle = rng.uniform(0, 180)
            cv2.ellipse(
                mask, centre, (int(axes[0]), int(axes[1])), angle, 0, 360, 1, -1, cv2.LINE_8, SHIFT
            )
    return mask.astype(bool)


def paint(rgb: np.ndarray, mask: np.ndarray, colour: tuple[int, int, int], opacity: float) -> None:
    """Blend ``colour`` over ``rgb`` where ``mask`` (in place): ink is translucent."""
    pixels = rgb[mask].astype(np.float32)
    rgb[mask] = np.rint((1 - opacity) * pixels + opacity * np.asarray(colour)).astype(np.uint8)
