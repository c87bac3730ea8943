"""Whole-slide reading at exact µm/px through OpenSlide.

Resolution is always a physical size: a scale is a target µm/px, converted with the exact factor
``target_mpp / slide_mpp`` (never a rounded magnification bucket or a pyramid index). Reads use
the coarsest pyramid level that is still at least as fine as the target, at coordinates aligned
to that level's pixel grid, and are resized with ``cv2.INTER_AREA``.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from pathlib import Path

import cv2
import numpy as np
import openslide

# A level whose reported downsample is within this relative distance of an integer is taken to
# be that integer: scanners round level sizes, e.g. 900 px / 16 = 56 px reports 16.07.
_NOMINAL_DOWNSAMPLE_TOLERANCE = 0.01
# Relative slack when comparing a level's mpp to a target (floating point, not a policy).
_MPP_EPSILON = 1e-6
# Read a thumbnail in horizontal strips of at most this many level pixels.
_THUMBNAIL_STRIP_PIXELS = 1 << 24


class SlideError(Exception):
    """A slide that cannot be used, with a reason a person understands."""

    def __init__(self, path: str | Path, reason: str) -> None:
        super().__init__(f"{path}: {reason}")
        self.path = str(path)
        self.reason = reason


@dataclass(frozen=True)
class SlideInfo:
    """What the QC record reports about a slide."""

    vendor: str
    mpp: float
    mpp_source: str  # "metadata" | "override"
    objective_power: float
    objective_power_source: str  # "metadata" | "mpp" (derived as 10 / mpp)
    width: int
    height: int
    level_count: int
    level_downsamples: tuple[float, ...]

    def as_record(self) -> dict:
        record = asdict(self)
        record["level_downsamples"] = list(self.level_downsamples)
        return record


def _float_property(properties, key: str) -> float | None:
    value = properties.get(key)
    if value in (None, ""):
        return None
    try:
        number = float(value)
    except ValueError:
        return None
    return number if math.isfinite(number) and number > 0 else None


_TIFF_MAGIC = (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")


def _unsupported_reason(path: Path) -> str:
    with path.open("rb") as handle:
        head = handle.read(4)
    if head in _TIFF_MAGIC:
        return "TIFF file that OpenSlide cannot read: truncated or corrupt (incomplete copy?)"
    return f"not a slide file: OpenSlide does not recognise the format (starts with {head!r})"


def _nominal_downsample(reported: float) -> float:
    nearest = round(reported)
    if nearest >= 1 and abs(reported - nearest) <= _NOMINAL_DOWNSAMPLE_TOLERANCE * nearest:
        return float(nearest)
    return float(reported)


def _to_rgb(rgba: np.ndarray) -> np.ndarray:
    """RGB on a white background: transparent pixels (outside the scanned area) become white."""
    alpha = cv2.extractChannel(rgba, 3)
    if cv2.minMaxLoc(alpha)[0] == 255:
        return cv2.cvtColor(rgba, cv2.COLOR_RGBA2RGB)  # 5x faster than a numpy slice copy
    weight = alpha[..., None].astype(np.float32) / 255.0
    blended = rgba[..., :3].astype(np.float32) * weight + 255.0 * (1.0 - weight)
    return np.clip(blended + 0.5, 0, 255).astype(np.uint8)


def resize_to(image: np.ndarray, width: int, height: int) -> np.ndarray:
    """Area interpolation when shrinking, linear when (slightly) enlarging."""
    if image.shape[1] == width and image.shape[0] == height:
        return image
    shrinking = image.shape[1] >= width and image.shape[0] >= height
    interpolation = cv2.INTER_AREA if shrinking else cv2.INTER_LINEAR
    return cv2.resize(image, (width, height), interpolation=interpolation)


class Slide:
    """An open slide with a known level-0 mpp (from metadata or an override).

    Raises :class:`SlideError` for a missing, empty or unreadable file, or when neither the
    metadata nor ``mpp_override`` gives the resolution.
    """

    def __init__(self, path: str | Path, mpp_override: float | None = None) -> None:
        self.path = Path(path)
        if not self.path.exists():
            raise SlideError(path, "file not found")
        if self.path.is_dir():
            raise SlideError(path, "is a directory, not a slide file")
        if self.path.stat().st_size == 0:
            raise SlideError(path, "zero-byte file (empty or incomplete copy)")
        if mpp_override is not None and not (math.isfinite(mpp_override) and mpp_override > 0):
            raise SlideError(path, f"mpp override must be a positive number, got {mpp_override}")
        try:
            self._osr = openslide.OpenSlide(str(self.path))
        except openslide.OpenSlideUnsupportedFormatError:
            raise SlideError(path, _unsupported_reason(self.path)) from None
        except openslide.OpenSlideError as error:
            raise SlideError(path, f"corrupt or truncated slide file: {error}") from None
        properties = self._osr.properties
        metadata_mpp = _float_property(properties, openslide.PROPERTY_NAME_MPP_X)
        if mpp_override is not None:
            mpp, mpp_source = float(mpp_override), "override"
        elif metadata_mpp is not None:
            mpp_y = _float_property(properties, openslide.PROPERTY_NAME_MPP_Y) or metadata_mpp
            mpp, mpp_source = (metadata_mpp + mpp_y) / 2.0, "metadata"
        else:
            self._osr.close()
            raise SlideError(
                path,
                "no resolution: the file has no mpp metadata and the slide sheet gives no mpp "
                "override (add an 'mpp' column, µm per pixel at level 0)",
            )
        power = _float_property(properties, openslide.PROPERTY_NAME_OBJECTIVE_POWER)
        power_source = "metadata"
        if power is None:
            power, power_source = 10.0 / mpp, "mpp"  # 10x is 1.0 µm/px by convention
        width, height = self._osr.dimensions
        self.downsamples = tuple(_nominal_downsample(d) for d in self._osr.level_downsamples)
        self.info = SlideInfo(
            vendor=properties.get(openslide.PROPERTY_NAME_VENDOR) or "unknown",
            mpp=mpp,
            mpp_source=mpp_source,
            objective_power=round(power, 3),
            objective_power_source=power_source,
            width=int(width),
            height=int(height),
            level_count=int(self._osr.level_count),
            level_downsamples=self.downsamples,
        )

    def __enter__(self) -> Slide:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        self.close()

    def close(self) -> None:
        self._osr.close()

    @property
    def mpp(self) -> float:
        return self.info.mpp

    def level_dimensions(self, level: int) -> tuple[int, int]:
        return self._osr.level_dimensions[level]

    def level_mpp(self, level: int) -> float:
        return self.mpp * self.downsamples[level]

    def level_for_mpp(self, target_mpp: float, tolerance: float = 0.0) -> int:
        """The coarsest level whose mpp is <= ``target_mpp * (1 + tolerance)``.

        ``tolerance`` lets a level slightly coarser than the target be used (then enlarged a
        little) instead of a 4x larger read from the level below, e.g. 0.2527 µm/px scans
        read at 1.0 µm/px; 0 keeps the rule exact.
        """
        if not (math.isfinite(target_mpp) and target_mpp > 0):
            raise ValueError(f"target mpp must be positive, got {target_mpp}")
        limit = target_mpp * (1.0 + tolerance) * (1.0 + _MPP_EPSILON)
        candidates = [
            level for level in range(self.info.level_count) if self.level_mpp(level) <= limit
        ]
        return max(candidates, key=self.level_mpp) if candidates else 0

    def read_level(self, level: int, x: int, y: int, width: int, height: int) -> np.ndarray:
        """``(height, width, 3)`` RGB pixels of ``level`` at level pixel ``(x, y)``.

        The request is given in the level's own pixels, so it is always aligned to its grid.
        """
        downsample = self.downsamples[level]
        location = (round(x * downsample), round(y * downsample))
        try:
            region = self._osr.read_region(location, level, (int(width), int(height)))
        except openslide.OpenSlideError as error:
            raise SlideError(
                self.path, f"read failed at level {level} ({x}, {y}): {error} (truncated file?)"
            ) from None
        return _to_rgb(np.asarray(region))

    def thumbnail(self, target_mpp: float) -> np.ndarray:
        """The whole slide as RGB at ``target_mpp`` (size = level-0 size * mpp / target)."""
        level = self.level_for_mpp(target_mpp)
        scale = self.level_mpp(level) / target_mpp
        level_width, level_height = self.level_dimensions(level)
        out_width = max(1, round(self.info.width * self.mpp / target_mpp))
        out_height = max(1, round(self.info.height * self.mpp / target_mpp))
        rows_per_strip = max(1, _THUMBNAIL_STRIP_PIXELS // max(level_width, 1))
        out_rows_per_strip = max(1, math.floor(rows_per_strip * scale))
        strips = []
        for out_top in range(0, out_height, out_rows_per_strip):
            out_bottom = min(out_height, out_top + out_rows_per_strip)
            top = min(level_height - 1, math.floor(out_top / scale))
            bottom = min(level_height, max(top + 1, math.ceil(out_bottom / scale)))
            strip = self.read_level(level, 0, top, level_width, bottom - top)
            strips.append(resize_to(strip, out_width, out_bottom - out_top))
        return np.concatenate(strips, axis=0)
