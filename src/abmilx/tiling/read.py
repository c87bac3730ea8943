"""Patch reads of one scale: raw JPEG tiles of the level when possible, OpenSlide otherwise.

OpenSlide's ``read_region`` costs several times the JPEG decode of the tiles it reads (ARGB
conversion, copies), so for aperio / generic-tiff JPEG levels the patches are assembled from
the level's tiles decoded directly (:class:`abmilx.slides.JpegTiles`), with the same pixels.
Patches are read in work units that decode each tile once: a unit holds the patches whose
top-left corner lies in one band of tile rows and a run of tile columns. Any patch that the
tiles cannot give (a missing or corrupt tile) is read through OpenSlide, which reports it.
"""

from __future__ import annotations

import numpy as np

from abmilx.slides import Slide, resize_to
from abmilx.tiling.grid import ScalePlan

# Patches per work unit (at least; a unit never splits the patches of one tile column).
UNIT_PATCHES = 32


class PatchReader:
    """Reads the ``patch_size`` RGB patches of one scale plan; thread-safe."""

    def __init__(self, slide: Slide, plan: ScalePlan, fast: bool = True) -> None:
        self.slide = slide
        self.plan = plan
        self.tiles = slide.jpeg_tiles(plan.level) if fast else None
        if self.tiles is not None:
            self.method, self.reason = "jpeg_tiles", ""
        else:
            reason = slide.jpeg_tiles_reason(plan.level) if fast else "fast_read is off"
            self.method, self.reason = "openslide", reason

    def units(self, positions: np.ndarray) -> list[np.ndarray]:
        """Indices into row-major ``positions`` grouped into work units (each in read order)."""
        n = len(positions)
        if self.tiles is None or n == 0:
            return [np.arange(s, min(n, s + UNIT_PATCHES)) for s in range(0, n, UNIT_PATCHES)]
        columns = positions[:, 0] // self.tiles.tile_width
        bands = positions[:, 1] // self.tiles.tile_height
        units: list[np.ndarray] = []
        # row-major positions: each band of tile rows is a contiguous run
        starts = np.flatnonzero(np.diff(bands, prepend=bands[0] - 1))
        for start, stop in zip(starts, [*starts[1:], n], strict=True):
            index = np.arange(start, stop)
            order = index[np.argsort(columns[start:stop], kind="stable")]
            sorted_columns = columns[order]
            # cut between tile columns once a unit holds enough patches
            cuts = np.flatnonzero(np.diff(sorted_columns)) + 1
            first = 0
            for cut in [*cuts.tolist(), len(order)]:
                if cut - first >= UNIT_PATCHES or cut == len(order):
                    units.append(order[first:cut])
                    first = cut
        return units

    def read_unit(self, positions: np.ndarray) -> list[np.ndarray]:
        """Patches at level-pixel ``positions`` (one work unit, in the given order)."""
        size = self.plan.read_size
        patches = []
        cache: dict = {}
        for x, y in positions.tolist():
            region = None
            if self.tiles is not None:
                region = self.tiles.region(x, y, size, size, cache)
                # units run left to right: tiles left of this patch are not needed again
                left = x // self.tiles.tile_width
                for key in [k for k in cache if k[0] < left]:
                    del cache[key]
            if region is None:
                region = self.slide.read_level(self.plan.level, x, y, size, size)
            patches.append(resize_to(region, self.plan.patch_size, self.plan.patch_size))
        return patches
