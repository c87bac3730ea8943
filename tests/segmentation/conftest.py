"""Drawn slides for segmentation tests: tissue with holes, ink, debris and black fill."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from abmilx.cohort.slidefile import write_slide
from abmilx.config import schema_defaults

MPP = 0.5
HEIGHT, WIDTH = 900, 1200


def paint_tissue(image: np.ndarray, region: np.ndarray, rng: np.random.Generator) -> None:
    """H&E-like texture (pink stroma, purple nuclei) inside ``region``."""
    pink = np.array([222, 150, 192], dtype=np.float32)
    purple = np.array([150, 92, 182], dtype=np.float32)
    mix = cv2.GaussianBlur(rng.random(image.shape[:2]).astype(np.float32), (0, 0), 6)
    mix = (mix - mix.min()) / (np.ptp(mix) + 1e-6)
    colour = pink * (1 - mix[..., None]) + purple * mix[..., None]
    colour += rng.normal(0, 6, size=colour.shape)
    image[region] = np.clip(colour[region], 0, 255).astype(np.uint8)
    nuclei = (rng.random(image.shape[:2]) < 0.004) & region
    nuclei = cv2.dilate(nuclei.astype(np.uint8), np.ones((5, 5), np.uint8)) > 0
    image[nuclei & region] = (105, 62, 150)


def draw_slide_image(seed: int = 0) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Image and boolean masks: ``tissue`` (truth), ``pen``, ``debris``, ``specks``, ``black``."""
    rng = np.random.default_rng(seed)
    image = np.clip(rng.normal(236, 3, size=(HEIGHT, WIDTH, 3)), 0, 255).astype(np.uint8)
    tissue = np.zeros((HEIGHT, WIDTH), np.uint8)
    cv2.ellipse(tissue, (340, 430), (230, 170), 15, 0, 360, 1, -1)
    cv2.circle(tissue, (290, 400), 42, 0, -1)  # holes, 1385 µm² each
    cv2.circle(tissue, (430, 470), 42, 0, -1)
    cv2.ellipse(tissue, (880, 330), (150, 190), -20, 0, 360, 1, -1)
    tissue = tissue.astype(bool)
    paint_tissue(image, tissue, rng)
    small = np.zeros_like(tissue, np.uint8)
    cv2.circle(small, (650, 820), 14, 1, -1)  # 154 µm²: below the minimum tissue area
    paint_tissue(image, small.astype(bool), rng)
    masks = {"tissue": tissue}
    layers = {
        "pen": lambda m: (
            cv2.line(m, (80, 840), (1150, 640), 1, 16),
            cv2.line(m, (60, 60), (500, 110), 1, 14),
        ),
        "debris": lambda m: cv2.circle(m, (620, 140), 40, 1, -1),  # 1257 µm², brown, dark
        "specks": lambda m: [cv2.circle(m, c, 9, 1, -1) for c in ((700, 560), (560, 700))],
        "black": lambda m: cv2.rectangle(m, (1100, 0), (1199, 120), 1, -1),
    }
    for name, draw in layers.items():
        layer = np.zeros_like(tissue, np.uint8)
        draw(layer)
        masks[name] = layer.astype(bool)
    pen_colours = np.zeros_like(image)
    pen_colours[:450] = (40, 70, 200)  # blue ink in the top half
    pen_colours[450:] = (40, 160, 70)  # green ink in the bottom half
    image[masks["pen"]] = pen_colours[masks["pen"]]
    image[masks["debris"]] = (92, 62, 40)
    image[masks["specks"]] = (14, 12, 12)
    image[masks["black"]] = rng.integers(0, 14, size=(int(masks["black"].sum()), 3))  # noisy fill
    return image, masks


# The config's segmentation block: the schema's defaults (SEGMENTATION), tuned for small drawings.
SEGMENTATION = schema_defaults("segmentation")
SEGMENT_SETTINGS = SEGMENTATION | {
    "working_mpp": 4.0,
    "saturation_threshold": 20,
    "median_kernel": 3,
    "closing_um": 8.0,
    "min_tissue_area_um2": 1000.0,
    "min_hole_area_um2": 500.0,
    "pen_margin_um": 4.0,
}


@pytest.fixture(scope="session")
def drawn_slide(tmp_path_factory):
    """(slide path, masks) of the drawn aperio slide at 0.5 µm/px."""
    image, masks = draw_slide_image()
    path = write_slide(
        tmp_path_factory.mktemp("slides") / "drawn.svs", image, mpp=MPP, slide_format="aperio"
    )
    return path, masks
