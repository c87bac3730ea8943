"""H&E colour model: Beer-Lambert mixing of a haematoxylin and an eosin stain, per-slide variation.

Tissue is described by two uint8 concentration maps (``code / 255 * MAX_OD`` optical density per
unit stain vector). A 256 x 256 lookup table turns (H, E) codes into RGB in one gather, which
keeps a 12-megapixel slide well inside the time budget.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

MAX_OD = 2.5  # optical density represented by concentration code 255

# Reference optical-density vectors (RGB) of unit stain: haematoxylin absorbs red and green
# (purple-blue nuclei); eosin absorbs mostly green (pink stroma).
HAEMATOXYLIN = np.array([0.65, 0.70, 0.29])
EOSIN = np.array([0.09, 0.92, 0.38])


def od_code(optical_density: float) -> int:
    """Concentration code (0-255) of an optical density, for drawing into the maps."""
    return int(np.clip(round(optical_density / MAX_OD * 255), 0, 255))


@dataclass(frozen=True)
class Stain:
    """One slide's staining: stain vectors (scaled by stain strength) and background light."""

    haematoxylin: np.ndarray
    eosin: np.ndarray
    background: np.ndarray  # RGB intensity of bare glass, ~235-245

    def lookup_table(self) -> np.ndarray:
        """(65536, 3) uint8 RGB for index ``h_code * 256 + e_code``."""
        codes = np.arange(256, dtype=np.float64) / 255 * MAX_OD
        od = codes[:, None, None] * self.haematoxylin + codes[None, :, None] * self.eosin
        rgb = self.background * np.exp(-od)
        return np.clip(np.rint(rgb), 0, 255).astype(np.uint8).reshape(-1, 3)


def _perturb(vector: np.ndarray, rng: np.random.Generator, spread: float) -> np.ndarray:
    unit = vector / np.linalg.norm(vector)
    unit = np.abs(unit + rng.normal(0.0, spread, size=3))
    return unit / np.linalg.norm(unit)


def sample_stain(rng: np.random.Generator, variation: float = 1.0) -> Stain:
    """Per-slide stain: hue jitter of both stains, strength x0.8-1.2, glass brightness 236-244.

    ``variation`` scales the jitter (0 gives the reference stain with white-ish glass).
    """
    haematoxylin = _perturb(HAEMATOXYLIN, rng, 0.05 * variation)
    eosin = _perturb(EOSIN, rng, 0.05 * variation)
    h_strength = 1.0 + variation * rng.uniform(-0.2, 0.2)
    e_strength = 1.0 + variation * rng.uniform(-0.2, 0.2)
    glass = 240.0 + variation * rng.uniform(-4.0, 4.0)
    tint = variation * rng.uniform(-1.5, 1.5, size=3)
    return Stain(haematoxylin * h_strength, eosin * e_strength, np.clip(glass + tint, 0, 255))


def compose(
    h_codes: np.ndarray, e_codes: np.ndarray, stain: Stain, noise: np.ndarray
) -> np.ndarray:
    """RGB uint8 image from concentration maps, darkened by ``noise`` (uint8, sensor noise)."""
    index = h_codes.astype(np.uint16)
    index <<= 8
    index |= e_codes
    rgb = stain.lookup_table()[index]
    return cv2.subtract(rgb, cv2.merge([noise, noise, noise]))
