"""The scanline fill behind tissue fractions and masks, against a point-by-point count."""

import numpy as np
import pytest

from abmilx.geometry import grid_points_inside, rasterize_polygons


def crossings_inside(rings: list[np.ndarray], height: int, width: int) -> np.ndarray:
    """Pixel centre ``(j, i)`` is inside when an odd number of ring edges cross row ``i``
    (edges half-open: ``low <= i < high``) at ``x <= j``: the rule the scanline fill states."""
    inside = np.zeros((height, width), dtype=bool)
    columns = np.arange(width)
    for ring in rings:
        for (x0, y0), (x1, y1) in zip(ring, np.roll(ring, -1, axis=0), strict=True):
            for i in range(height):
                if min(y0, y1) <= i < max(y0, y1):
                    x = x0 + (i - y0) * (x1 - x0) / (y1 - y0)
                    inside[i] ^= columns >= x
    return inside


def random_ring(rng, centre, radius, vertices, on_grid):
    angles = np.sort(rng.uniform(0, 2 * np.pi, vertices))
    radii = rng.uniform(0.3, 1.0, vertices) * radius
    ring = np.stack([centre[0] + radii * np.cos(angles), centre[1] + radii * np.sin(angles)], 1)
    return np.round(ring) if on_grid else ring  # on the grid: crossings exactly on centres


@pytest.mark.parametrize("on_grid", [False, True])
def test_fill_equals_the_crossing_count_on_random_rings(on_grid):
    rng = np.random.default_rng(7 + on_grid)
    for _ in range(40):
        height, width = rng.integers(5, 40, 2)
        outer = random_ring(rng, rng.uniform(-5, [width + 5, height + 5]), 25, 12, on_grid)
        hole = random_ring(rng, outer.mean(axis=0), 6, 6, on_grid)
        spike = np.array([[3.0, 2.0], [3.0, 9.0], [3.0, 2.0]])  # zero-width: fills nothing
        for rings in ([outer], [outer, hole], [outer, spike]):
            # grid_points_inside fills one ring at unit spacing from the origin: the fill itself
            for ring in rings:
                assert np.array_equal(
                    grid_points_inside(ring, (0.0, 0.0), 1.0, height, width),
                    crossings_inside([ring], height, width),
                )
            # rasterize_polygons: one sample at each cell's centre, all rings of the polygon, in
            # the outer ring's box (no centre outside it is inside the outer ring)
            found = rasterize_polygons([[r + 0.5 for r in rings]], width, height, (1.0, 1.0))
            low, high = outer.min(axis=0), outer.max(axis=0)
            box = np.zeros((height, width), dtype=bool)
            box[
                max(0, int(np.ceil(low[1]))) : int(np.floor(high[1])) + 1,
                max(0, int(np.ceil(low[0]))) : int(np.floor(high[0])) + 1,
            ] = True
            assert np.array_equal(found > 0, crossings_inside(rings, height, width) & box)
