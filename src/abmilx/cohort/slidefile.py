"""Write RGB images as pyramidal slide files that OpenSlide opens like scanner output.

Formats (facts measured with openslide-bin 4.0.1.2):
- ``aperio``: tiled JPEG TIFF whose first ImageDescription starts with ``Aperio`` and carries
  ``AppMag`` and ``MPP``; OpenSlide reports vendor ``aperio`` with objective power and mpp.
- ``generic``: plain tiled TIFF with resolution tags only; OpenSlide reports ``generic-tiff``
  with mpp but no objective power.
- ``nompp``: plain tiled TIFF without resolution tags; OpenSlide knows no mpp at all (the slide
  sheet must give an override).
Every pyramid level is a top-level tiled IFD (SubIFDs are invisible to OpenSlide).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np
import tifffile

SLIDE_FORMATS = ("aperio", "generic", "nompp")
SUFFIX = {"aperio": ".svs", "generic": ".tif", "nompp": ".tif"}


def pyramid(image: np.ndarray, downsamples: Sequence[int]) -> list[np.ndarray]:
    """Levels of ``image`` at the given integer downsamples (area interpolation, like scanners)."""
    levels = []
    height, width = image.shape[:2]
    for factor in downsamples:
        if factor == 1:
            levels.append(image)
            continue
        size = (max(1, width // factor), max(1, height // factor))
        levels.append(cv2.resize(image, size, interpolation=cv2.INTER_AREA))
    return levels


def write_slide(
    path: str | Path,
    image: np.ndarray,
    *,
    mpp: float,
    slide_format: str = "aperio",
    objective_power: float | None = None,
    downsamples: Sequence[int] = (1, 4, 16),
    tile: int = 256,
    jpeg_quality: int = 90,
    thumbnail_size: int = 512,
) -> Path:
    """Write ``image`` (H x W x 3 uint8 RGB, level 0) as a pyramidal slide file.

    ``mpp`` is the level-0 resolution in µm/px; it is stored only for ``aperio`` and ``generic``.
    Returns the path written.
    """
    if slide_format not in SLIDE_FORMATS:
        raise ValueError(f"slide_format must be one of {SLIDE_FORMATS}, got {slide_format!r}")
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError("image must be an H x W x 3 uint8 RGB array")
    if downsamples[0] != 1:
        raise ValueError("the first downsample must be 1 (level 0)")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    levels = pyramid(image, downsamples)
    height, width = image.shape[:2]
    common = dict(
        photometric="rgb",
        compression="jpeg",
        compressionargs={"level": jpeg_quality},
        tile=(tile, tile),
        metadata=None,
    )
    with tifffile.TiffWriter(path, bigtiff=False) as tif:
        for index, (factor, level) in enumerate(zip(downsamples, levels, strict=True)):
            kwargs = dict(common)
            if index > 0:
                kwargs["subfiletype"] = 1  # reduced-resolution image: generic-tiff needs it
            if slide_format == "aperio" and index == 0:
                power = objective_power if objective_power is not None else round(10.0 / mpp)
                kwargs["description"] = (
                    f"Aperio Image Library v12.0.0 \r\n{width}x{height} [0,0 {width}x{height}] "
                    f"({tile}x{tile}) JPEG/RGB Q={jpeg_quality}|AppMag = {power:g}|MPP = {mpp:.6f}"
                )
            elif slide_format == "aperio":
                kwargs["description"] = (
                    f"Aperio Image Library v12.0.0 \r\n{width}x{height} -> {level.shape[1]}x{level.shape[0]}"
                )
            if slide_format in ("aperio", "generic"):
                # TIFF resolution in pixels per centimetre; OpenSlide derives mpp from it.
                pixels_per_cm = 1e4 / (mpp * factor)
                kwargs["resolution"] = (pixels_per_cm, pixels_per_cm)
                kwargs["resolutionunit"] = "CENTIMETER"
            tif.write(level, **kwargs)
            if slide_format == "aperio" and index == 0:
                # Aperio stores the thumbnail as the second IFD, stripped (an associated image).
                scale = thumbnail_size / max(height, width)
                thumb = cv2.resize(
                    image,
                    (max(1, int(width * scale)), max(1, int(height * scale))),
                    interpolation=cv2.INTER_AREA,
                )
                tif.write(
                    thumb,
                    photometric="rgb",
                    compression="jpeg",
                    metadata=None,
                    description=f"Aperio Image Library v12.0.0 \r\n{width}x{height} -> thumbnail",
                )
    return path
