"""Whole-slide reading at exact µm/px through OpenSlide.

Resolution is always a physical size: a scale is a target µm/px, converted with the exact factor
``target_mpp / slide_mpp`` (never a rounded magnification bucket or a pyramid index). Reads use
the coarsest pyramid level that is still at least as fine as the target, at coordinates aligned
to that level's pixel grid, and are resized with ``cv2.INTER_AREA``.

Resolution sanity: a target finer than level 0 by more than :data:`UPSAMPLE_TOLERANCE` is
refused (:meth:`Slide.check_scale`), never upsampled, and thumbnails are never finer than level
0. :func:`check_mpp` refuses a level-0 mpp that only a TIFF resolution tag at a screen or print
resolution gives, or one outside a plausible microscope range, unless told to trust it.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import xml.etree.ElementTree as ElementTree
from dataclasses import asdict, dataclass
from pathlib import Path

import cv2
import imagecodecs
import numpy as np
import openslide
import tifffile

# A level whose reported downsample is within this relative distance of an integer is taken to
# be that integer: scanners round level sizes, e.g. 900 px / 16 = 56 px reports 16.07.
_NOMINAL_DOWNSAMPLE_TOLERANCE = 0.01
# Relative slack when comparing a level's mpp to a target (floating point, not a policy).
_MPP_EPSILON = 1e-6
# Read a thumbnail in horizontal strips of at most this many level pixels.
_THUMBNAIL_STRIP_PIXELS = 1 << 24
# Vendors whose levels OpenSlide reads straight from top-level TIFF tiles, so decoding those
# tiles ourselves gives its pixels (others have overlaps, offsets or their own JPEG layout).
_RAW_TILE_VENDORS = ("aperio", "generic-tiff")
_TIFF_JPEG = 7  # Compression tag value of "new-style" JPEG
# A scale may be this much finer than level 0 (relative), e.g. 0.5 µm/px read from a 0.526 µm/px
# 20x scan; anything finer is refused instead of upsampled.
UPSAMPLE_TOLERANCE = 0.1
# Pixel densities of screens and printers: a drawing or photo saved at one of these has a TIFF
# resolution tag, which OpenSlide turns into a (meaningless) mpp.
SCREEN_DPI = (72, 96, 300)
_PHOTOMETRIC_COLORSPACE = {2: "RGB", 6: "YCBCR"}  # how OpenSlide sets jpeg_color_space
_JPEG_SOI = b"\xff\xd8"
_JPEG_EOI = b"\xff\xd9"
# APP14 "Adobe", version 100, flags 0 and 0, transform 0: the components are RGB, not YCbCr.
_ADOBE_RGB = b"\xff\xee\x00\x0eAdobe\x00\x64\x00\x00\x00\x00\x00"


class SlideError(Exception):
    """A slide that cannot be used, with a reason a person understands.

    ``facts`` holds the QC fields that could still be read (vendor, size, mpp, ...), so the QC
    row of a refused slide is not blank where the file told something.
    """

    def __init__(self, path: str | Path, reason: str, facts: dict | None = None) -> None:
        super().__init__(f"{path}: {reason}")
        self.path = str(path)
        self.reason = reason
        self.facts = dict(facts or {})


@dataclass(frozen=True)
class SlideInfo:
    """What the QC record reports about a slide."""

    vendor: str
    mpp: float
    # "override" (slide sheet), "metadata" (the vendor's own field), "ome-xml" (an OME-TIFF's
    # PhysicalSizeX/Y), or "tiff-resolution-<unit>" (OpenSlide derived it from the TIFF
    # resolution tags, unit "centimeter" or "inch")
    mpp_source: str
    objective_power: float
    objective_power_source: str  # "metadata" | "mpp" (derived as 10 / mpp)
    width: int
    height: int
    level_count: int
    level_downsamples: tuple[float, ...]
    # Level-0 top-left of the scanned region (OpenSlide's bounds-x/y, 0 when the format has
    # none): viewers that crop to it, such as QuPath, draw level-0 (x, y) at (x - x0, y - y0).
    bounds_x: int = 0
    bounds_y: int = 0

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


def _tiff_facts(path: Path) -> tuple[dict, int | None, str | None]:
    """(QC fields, bytes the tiles need, parse error) from the TIFF structure, OpenSlide aside.

    The fields are those OpenSlide would report had it opened the file: its vendor guess, the
    largest tiled page's size, the number of tiled pages and the mpp of the resolution tags;
    ``tiled`` says whether any page is tiled.
    """
    facts: dict = {}
    with contextlib.suppress(openslide.OpenSlideError):
        facts["vendor"] = openslide.OpenSlide.detect_format(str(path)) or None
    log = logging.getLogger("tifffile")
    level = log.level
    log.setLevel(logging.CRITICAL)  # a broken file is expected here: the reason says why
    try:
        with tifffile.TiffFile(path) as tif:
            pages = [p for p in tif.pages if isinstance(p, tifffile.TiffPage)]
            end = max(
                (
                    int(np.max(np.add(p.dataoffsets, p.databytecounts, dtype=np.int64)))
                    for p in pages
                    if len(p.dataoffsets)
                ),
                default=0,
            )
            tiled = [p for p in pages if p.is_tiled]
            facts["tiled"] = bool(tiled)
            first = max(tiled or pages, key=lambda p: p.imagewidth * p.imagelength)
            facts.update(width=int(first.imagewidth), height=int(first.imagelength))
            facts["level_count"] = len(tiled or pages)
            unit = {2: "inch", 3: "centimeter"}.get(int(first.tags.valueof(296, 2)))
            resolution = first.tags.valueof(282)
            if unit and resolution and resolution[0] > 0 and resolution[1] > 0:
                per_unit = resolution[0] / resolution[1]
                facts["mpp"] = (25400.0 if unit == "inch" else 10000.0) / per_unit
                facts["mpp_source"] = f"tiff-resolution-{unit}"
            return facts, end, None
    except (tifffile.TiffFileError, OSError, ValueError, KeyError, IndexError) as error:
        return facts, None, str(error) or type(error).__name__
    finally:
        log.setLevel(level)


def _truncation(path: Path, needed: int | None) -> str | None:
    """Reason when the file is shorter than its TIFF structure says (None: it is not)."""
    size = path.stat().st_size
    if needed is not None and size < needed:
        return (
            f"truncated file: {size} bytes, but its tiles reach byte {needed} "
            "(incomplete copy? copy the file again)"
        )
    return None


def _unsupported_reason(path: Path) -> tuple[str, dict]:
    """Why OpenSlide does not recognise the file, and what could still be read from it."""
    try:
        with path.open("rb") as handle:
            head = handle.read(4)
    except OSError as error:
        return f"cannot be read: {error.strerror}", {}
    if head not in _TIFF_MAGIC:
        return (
            f"not a slide file: OpenSlide does not recognise the format (starts with {head!r})",
            {},
        )
    facts, needed, parse_error = _tiff_facts(path)
    truncated = _truncation(path, needed)
    if truncated:
        return truncated, facts
    if parse_error is not None:
        return (
            f"truncated or corrupt TIFF file: its structure cannot be parsed ({parse_error})",
            facts,
        )
    return (
        "not a slide file: a TIFF image without tiles (a picture; OpenSlide reads tiled "
        "pyramidal slides)",
        facts,
    )


def _open_error_reason(path: Path, error: openslide.OpenSlideError) -> tuple[str, dict]:
    """Reason for an OpenSlide open failure: unsupported compression, truncated or corrupt."""
    facts, needed, _ = _tiff_facts(path)
    message = str(error)
    if message.startswith("Unsupported TIFF compression"):
        code = message.rsplit(":", 1)[-1].strip()
        try:
            name = tifffile.COMPRESSION(int(code)).name
        except ValueError:
            name = "unknown"
        return (
            f"unsupported TIFF compression {code} ({name}): OpenSlide cannot decode its tiles; "
            "re-save the slide with JPEG, LZW or Deflate compression",
            facts,
        )
    truncated = _truncation(path, needed)
    if truncated:
        return truncated, facts
    return f"corrupt slide file: OpenSlide cannot open it ({message})", facts


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


class JpegTiles:
    """Raw JPEG tiles of one TIFF pyramid level, read with ``pread`` and decoded directly.

    OpenSlide decodes these tiles with libjpeg-turbo, taking the JPEG colour space from the
    TIFF photometric tag; so does this class (imagecodecs), so pixels agree with
    :meth:`Slide.read_level` (bit for bit at level 0 and at levels whose downsample is exact;
    OpenSlide resamples by a fraction of a pixel where a level's size was rounded). Thread-safe:
    reads use ``os.pread`` on a shared descriptor and keep no state.
    """

    def __init__(self, fd: int, page: tifffile.TiffPage) -> None:
        self._fd = fd
        self.width, self.height = int(page.imagewidth), int(page.imagelength)
        self.tile_width, self.tile_height = int(page.tilewidth), int(page.tilelength)
        self.tiles_across = -(-self.width // self.tile_width)
        self.tiles_down = -(-self.height // self.tile_height)
        self._offsets = np.asarray(page.dataoffsets, dtype=np.int64)
        self._counts = np.asarray(page.databytecounts, dtype=np.int64)
        self._tables = page.jpegtables or None
        self._colorspace = _PHOTOMETRIC_COLORSPACE[int(page.photometric)]
        self.page_index = int(page.index)

    def data(self, column: int, row: int) -> bytes | None:
        """The tile's bytes as stored (abbreviated when the level has JPEGTables); None when
        the tile is absent (a tile the scanner skipped: OpenSlide draws it transparent) or does
        not end in EOI (cut short: libjpeg would fill it in grey where OpenSlide reports it)."""
        index = row * self.tiles_across + column
        count = int(self._counts[index])
        if count == 0:
            return None
        data = os.pread(self._fd, count, int(self._offsets[index]))
        return data if len(data) == count and data.endswith(_JPEG_EOI) else None

    def standalone_jpeg(self, column: int, row: int) -> bytes | None:
        """The tile as a complete JPEG file that any decoder reads as OpenSlide does.

        The level's shared JPEGTables (quantisation and Huffman tables) are spliced in after
        SOI, and RGB-coded tiles get an Adobe APP14 marker (transform 0) so that decoders do
        not take them for YCbCr. Bytes are copied, never re-encoded.
        """
        data = self.data(column, row)
        if data is None or data[:2] != _JPEG_SOI:
            return None
        head = _JPEG_SOI
        if self._tables:
            head += self._tables[2:-2]  # tables without their own SOI and EOI
        if self._colorspace == "RGB":
            head += _ADOBE_RGB
        return head + data[2:]

    def tile(self, column: int, row: int, out: np.ndarray | None = None) -> np.ndarray | None:
        """``(tile_height, tile_width, 3)`` RGB of one tile; None when absent or undecodable.

        ``out`` (C-contiguous, the tile's shape) receives the pixels: decoding into reused
        memory measured about 20 % faster than into a new array per tile.
        """
        data = self.data(column, row)
        if data is None:
            return None
        try:
            pixels = imagecodecs.jpeg8_decode(
                data,
                tables=self._tables,
                colorspace=self._colorspace,
                outcolorspace="RGB",
                out=out,
            )
        except (imagecodecs.Jpeg8Error, ValueError):  # ValueError: not the tile's size
            return None
        if pixels.shape != (self.tile_height, self.tile_width, 3):
            return None
        return pixels

    def region(
        self, x: int, y: int, width: int, height: int, cache: dict | None = None
    ) -> np.ndarray | None:
        """``(height, width, 3)`` RGB at level pixel ``(x, y)``, assembled from tiles.

        None when the region leaves the level or a tile cannot be decoded (the caller then
        asks OpenSlide, which draws or reports the problem its own way). ``cache`` maps
        ``(column, row)`` to decoded tiles, so neighbouring regions decode a tile once.
        """
        if x < 0 or y < 0 or x + width > self.width or y + height > self.height:
            return None
        tw, th = self.tile_width, self.tile_height
        first_column, last_column = x // tw, (x + width - 1) // tw
        first_row, last_row = y // th, (y + height - 1) // th
        single = first_column == last_column and first_row == last_row
        out = None if single else np.empty((height, width, 3), dtype=np.uint8)
        for row in range(first_row, last_row + 1):
            for column in range(first_column, last_column + 1):
                key = (column, row)
                pixels = None if cache is None else cache.get(key)
                if pixels is None:
                    pixels = self.tile(column, row)
                    if pixels is None:
                        return None
                    if cache is not None:
                        cache[key] = pixels
                left, top = column * tw, row * th
                x0, y0 = max(x, left), max(y, top)
                x1, y1 = min(x + width, left + tw), min(y + height, top + th)
                part = pixels[y0 - top : y1 - top, x0 - left : x1 - left]
                if single:
                    return part if part.flags.c_contiguous else np.ascontiguousarray(part)
                out[y0 - y : y1 - y, x0 - x : x1 - x] = part
        return out


def _jpeg_tile_page(page: tifffile.TiffPage) -> str | None:
    """Why a tiled TIFF page cannot be read as raw JPEG tiles (None: it can)."""
    if int(page.compression) != _TIFF_JPEG:
        return f"compression {int(page.compression)} is not JPEG"
    if int(page.photometric) not in _PHOTOMETRIC_COLORSPACE:
        return f"photometric {int(page.photometric)} is not RGB or YCbCr"
    if (
        int(page.planarconfig) != 1
        or int(page.samplesperpixel) != 3
        or page.extrasamples
        or int(page.bitspersample) != 8
        or int(page.imagedepth) != 1
    ):
        return "not 8-bit interleaved RGB"
    return None


DICOM_SUFFIX = ".dcm"


def dicom_series_file(folder: Path) -> Path:
    """The file to open for a DICOM WSI series stored as a folder of ``.dcm`` files (one per
    pyramid level or frame group): OpenSlide takes any file of the series and finds the others
    in its folder. Any other folder is refused."""
    members = sorted(p for p in folder.iterdir() if p.suffix.lower() == DICOM_SUFFIX)
    if not members:
        raise SlideError(
            folder, "is a directory, not a slide file (a DICOM series folder holds .dcm files)"
        )
    return members[0]


# OME-XML length units (the micro sign or the Greek mu) in µm; µm is the default unit.
_OME_UNITS_UM = {"nm": 1e-3, "\u00b5m": 1.0, "\u03bcm": 1.0, "um": 1.0, "mm": 1e3, "cm": 1e4}


def ome_xml_mpp(description: str) -> float | None:
    """Level-0 µm/px from an OME-TIFF's OME-XML (``Pixels`` ``PhysicalSizeX``/``Y`` and their
    units, µm when absent), None when the description is not OME-XML or gives no size.

    OpenSlide opens an OME-TIFF as a generic tiled TIFF and knows only its resolution tags,
    which OME writers often leave out or set to a screen density."""
    if "<OME" not in description[:4096]:
        return None
    try:
        root = ElementTree.fromstring(description)
    except ElementTree.ParseError:
        return None
    pixels = next((e for e in root.iter() if e.tag.rsplit("}", 1)[-1] == "Pixels"), None)
    if pixels is None:
        return None
    sizes = []
    for axis in ("X", "Y"):
        value = _float_property(pixels.attrib, f"PhysicalSize{axis}")
        factor = _OME_UNITS_UM.get(pixels.attrib.get(f"PhysicalSize{axis}Unit", "um"))
        if value is None or factor is None:
            return None
        sizes.append(value * factor)
    return (sizes[0] + sizes[1]) / 2.0


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
            self.path = dicom_series_file(self.path)
        if not os.access(self.path, os.R_OK):
            raise SlideError(path, "permission denied: the file cannot be read (check its mode)")
        if self.path.stat().st_size == 0:
            raise SlideError(path, "zero-byte file (empty or incomplete copy)")
        if mpp_override is not None and not (math.isfinite(mpp_override) and mpp_override > 0):
            raise SlideError(path, f"mpp override must be a positive number, got {mpp_override}")
        try:
            self._osr = openslide.OpenSlide(str(self.path))
        except openslide.OpenSlideUnsupportedFormatError:
            raise SlideError(path, *_unsupported_reason(self.path)) from None
        except openslide.OpenSlideError as error:
            raise SlideError(path, *_open_error_reason(self.path, error)) from None
        properties = self._osr.properties
        vendor = properties.get(openslide.PROPERTY_NAME_VENDOR) or "unknown"
        width, height = self._osr.dimensions
        self.downsamples = tuple(_nominal_downsample(d) for d in self._osr.level_downsamples)
        known = {
            "vendor": vendor,
            "width": int(width),
            "height": int(height),
            "level_count": int(self._osr.level_count),
        }
        metadata_mpp = _float_property(properties, openslide.PROPERTY_NAME_MPP_X)
        ome_mpp = ome_xml_mpp(properties.get("tiff.ImageDescription", ""))
        if mpp_override is not None:
            mpp, mpp_source = float(mpp_override), "override"
        elif ome_mpp is not None:  # OME's physical size beats the TIFF tags OpenSlide reads
            mpp, mpp_source = ome_mpp, "ome-xml"
        elif metadata_mpp is not None:
            mpp_y = _float_property(properties, openslide.PROPERTY_NAME_MPP_Y) or metadata_mpp
            mpp, mpp_source = (metadata_mpp + mpp_y) / 2.0, "metadata"
            if vendor == "generic-tiff":  # its only mpp source is the TIFF resolution tags
                mpp_source = f"tiff-resolution-{properties.get('tiff.ResolutionUnit', 'unknown')}"
        else:
            self._osr.close()
            raise SlideError(
                path,
                "no resolution: the file has no mpp metadata and the slide sheet gives no mpp "
                "override (add an 'mpp' column, µm per pixel at level 0)",
                known,
            )
        power = _float_property(properties, openslide.PROPERTY_NAME_OBJECTIVE_POWER)
        power_source = "metadata"
        if power is None:
            power, power_source = 10.0 / mpp, "mpp"  # 10x is 1.0 µm/px by convention
        self._jpeg_tiles: dict[int, JpegTiles | None] | None = None
        self._jpeg_reasons: dict[int, str] = {}
        self._fd: int | None = None
        self._data_end: int | None = None
        self.info = SlideInfo(
            bounds_x=int(_float_property(properties, openslide.PROPERTY_NAME_BOUNDS_X) or 0),
            bounds_y=int(_float_property(properties, openslide.PROPERTY_NAME_BOUNDS_Y) or 0),
            mpp=mpp,
            mpp_source=mpp_source,
            objective_power=round(power, 3),
            objective_power_source=power_source,
            level_downsamples=self.downsamples,
            **known,
        )

    def __enter__(self) -> Slide:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        self.close()

    def close(self) -> None:
        self._osr.close()
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def _find_jpeg_tiles(self) -> None:
        self._jpeg_tiles = dict.fromkeys(range(self.info.level_count))
        if self.info.vendor not in _RAW_TILE_VENDORS:
            self._jpeg_reasons = dict.fromkeys(
                self._jpeg_tiles, f"vendor {self.info.vendor} is not read from raw TIFF tiles"
            )
            return
        try:
            with tifffile.TiffFile(self.path) as tif:
                # OpenSlide's levels are the tiled top-level directories (stripped ones are
                # associated images such as an aperio thumbnail, which may share a level's size)
                tiled = [p for p in tif.pages if isinstance(p, tifffile.TiffPage) and p.is_tiled]
                for level in self._jpeg_tiles:
                    size = tuple(self.level_dimensions(level))
                    same = [p for p in tiled if (p.imagewidth, p.imagelength) == size]
                    reason = (
                        _jpeg_tile_page(same[0]) if len(same) == 1 else f"{len(same)} tiled pages"
                    )
                    if reason is None:
                        if self._fd is None:
                            self._fd = os.open(self.path, os.O_RDONLY)
                        self._jpeg_tiles[level] = JpegTiles(self._fd, same[0])
                    else:
                        self._jpeg_reasons[level] = reason
        except (tifffile.TiffFileError, OSError, ValueError, KeyError) as error:
            self._jpeg_tiles = dict.fromkeys(range(self.info.level_count))
            self._jpeg_reasons = dict.fromkeys(self._jpeg_tiles, f"TIFF not parsed: {error}")

    def jpeg_tiles(self, level: int) -> JpegTiles | None:
        """Raw JPEG tile reader of ``level``, or None (see :meth:`jpeg_tiles_reason`)."""
        if self._jpeg_tiles is None:
            self._find_jpeg_tiles()
        return self._jpeg_tiles[level]

    def jpeg_tiles_reason(self, level: int) -> str:
        """Why ``level`` has no raw JPEG tile reader ('' when it has one)."""
        if self.jpeg_tiles(level) is not None:
            return ""
        return self._jpeg_reasons.get(level, "unknown")

    @property
    def mpp(self) -> float:
        return self.info.mpp

    def level_dimensions(self, level: int) -> tuple[int, int]:
        return self._osr.level_dimensions[level]

    def level_mpp(self, level: int) -> float:
        return self.mpp * self.downsamples[level]

    def check_scale(self, target_mpp: float, what: str = "resolution") -> None:
        """Raise :class:`SlideError` when ``target_mpp`` is finer than level 0 by more than
        :data:`UPSAMPLE_TOLERANCE`: the pixels would be invented by upsampling."""
        factor = self.mpp / target_mpp
        if factor > 1.0 + UPSAMPLE_TOLERANCE:
            raise SlideError(
                self.path,
                f"{what} {target_mpp:g} µm/px is finer than the slide's level 0 ({self.mpp:g} "
                f"µm/px, from {self.info.mpp_source}); it would be upsampled {factor:.3g}x. If "
                "the file's resolution is wrong, set 'mpp' in the slide sheet; otherwise use a "
                "coarser scale",
                self.info.as_record(),
            )

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
            raise SlideError(self.path, self._read_error_reason(level, x, y, error)) from None
        return _to_rgb(np.asarray(region))

    def _read_error_reason(self, level: int, x: int, y: int, error: Exception) -> str:
        """A truncated file (shorter than its TIFF says) or one damaged tile in a whole file."""
        if self._data_end is None:
            self._data_end = _tiff_facts(self.path)[1] or 0
        truncated = _truncation(self.path, self._data_end or None)
        if truncated:
            return truncated
        where = f"level {level} near ({x}, {y})"
        if self._data_end:
            return (
                f"unreadable tile at {where}: {error} (the file is complete, so the tile's data "
                "is damaged; rescan or re-export the slide)"
            )
        return f"read failed at {where}: {error}"

    def view_size(self, target_mpp: float) -> tuple[int, int, int]:
        """``(level, width, height)`` of :meth:`thumbnail` at ``target_mpp``: the level read and
        the output size (never finer than level 0)."""
        target_mpp = max(target_mpp, self.mpp)
        out_width = max(1, round(self.info.width * self.mpp / target_mpp))
        out_height = max(1, round(self.info.height * self.mpp / target_mpp))
        return self.level_for_mpp(target_mpp), out_width, out_height

    def thumbnail(self, target_mpp: float) -> np.ndarray:
        """The whole slide as RGB at ``max(target_mpp, mpp)`` (size = level-0 size * mpp /
        target), read in strips of at most 16 M level pixels (never upsampled), from the raw
        JPEG tiles where the level has them (about 4x less CPU than OpenSlide's read)."""
        level, out_width, out_height = self.view_size(target_mpp)
        tiles = self.jpeg_tiles(level)
        scale = self.level_mpp(level) / max(target_mpp, self.mpp)
        level_width, level_height = self.level_dimensions(level)
        rows_per_strip = max(1, _THUMBNAIL_STRIP_PIXELS // max(level_width, 1))
        out_rows_per_strip = max(1, math.floor(rows_per_strip * scale))
        out = np.empty((out_height, out_width, 3), dtype=np.uint8)
        for out_top in range(0, out_height, out_rows_per_strip):
            out_bottom = min(out_height, out_top + out_rows_per_strip)
            top = min(level_height - 1, math.floor(out_top / scale))
            bottom = min(level_height, max(top + 1, math.ceil(out_bottom / scale)))
            strip = None if tiles is None else tiles.region(0, top, level_width, bottom - top)
            if strip is None:  # no raw tiles, or a missing or corrupt one: OpenSlide's turn
                strip = self.read_level(level, 0, top, level_width, bottom - top)
            out[out_top:out_bottom] = resize_to(strip, out_width, out_bottom - out_top)
        return out


def check_mpp(
    slide: Slide,
    plausible_mpp: tuple[float, float],
    trust_file_mpp: bool,
) -> None:
    """Raise :class:`SlideError` when the file's level-0 mpp is not believable.

    A slide-sheet override is always believed; so is the file when ``trust_file_mpp``. Else the
    mpp is refused when it comes only from a TIFF resolution tag in inches at a screen or print
    density (:data:`SCREEN_DPI`), or lies outside ``plausible_mpp``.
    """
    info = slide.info
    if info.mpp_source == "override" or trust_file_mpp:
        return
    fix = (
        "if it is a microscope slide, set 'mpp' (µm per pixel at level 0) in the slide sheet, "
        "or set segmentation.trust_file_mpp to accept the file's value"
    )
    if info.mpp_source == "tiff-resolution-inch":
        dpi = 25400.0 / info.mpp
        if any(abs(dpi - screen) <= 0.01 * screen for screen in SCREEN_DPI):
            raise SlideError(
                slide.path,
                f"implausible resolution: the only one is the TIFF resolution tag, {dpi:.4g} "
                f"dpi (a screen or print density, {info.mpp:.4g} µm/px), so this is probably a "
                f"drawing or photo, not a scan; {fix}",
                info.as_record(),
            )
    low, high = plausible_mpp
    if not low <= info.mpp <= high:
        raise SlideError(
            slide.path,
            f"implausible resolution: level 0 is {info.mpp:.4g} µm/px (from {info.mpp_source}), "
            f"outside the {low:g}-{high:g} µm/px of microscope scans; {fix}",
            info.as_record(),
        )
