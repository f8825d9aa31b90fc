"""Where the sample's products lie: pixel grids in the world and in other CRSs over it."""

from __future__ import annotations

import math

import numpy as np
from affine import Affine
from pyproj import Transformer

from catalogs.grid import Grid
from catalogs.sample.render import sample_points
from catalogs.sample.world import WORLD_BOUNDS, WORLD_CRS, World


def world_grid(
    center: tuple[float, float], shape: tuple[int, int], gsd: float, crs: str = WORLD_CRS
) -> Grid:
    """A north-up grid of ``shape`` pixels of ``gsd`` centred near ``center`` (world CRS).

    Expressed in ``crs``, its origin snapped to whole multiples of ``gsd``.
    """
    cx, cy = center
    if crs != WORLD_CRS:
        cx, cy = Transformer.from_crs(WORLD_CRS, crs, always_xy=True).transform(cx, cy)
    rows, cols = shape
    left = math.floor((cx - cols * gsd / 2) / gsd) * gsd
    top = math.ceil((cy + rows * gsd / 2) / gsd) * gsd
    return Grid(crs, Affine(gsd, 0.0, left, 0.0, -gsd, top), shape)


def covering_grid(
    grid: Grid, crs: str, gsd: float, margin: float, origin_shift: tuple[float, float] = (0.0, 0.0)
) -> Grid:
    """A north-up grid in ``crs`` that covers ``grid``'s footprint plus ``margin`` on every side.

    Its pixel size is ``gsd``, in that CRS's units, its origin on a lattice of ``gsd`` moved by
    ``origin_shift``: a different sensor's product over the same ground.
    """
    to_crs = Transformer.from_crs(grid.crs, crs, always_xy=True)
    left, bottom, right, top = to_crs.transform_bounds(*grid.bounds, densify_pts=21)
    sx, sy = origin_shift
    left = math.floor((left - margin - sx) / gsd) * gsd + sx
    top = math.ceil((top + margin - sy) / gsd) * gsd + sy
    cols = math.ceil((right + margin - left) / gsd)
    rows = math.ceil((top - (bottom - margin)) / gsd)
    return Grid(crs, Affine(gsd, 0.0, left, 0.0, -gsd, top), (rows, cols))


def find_sites(
    world: World,
    landcover_class: int,
    count: int,
    min_separation_m: float,
    rng: np.random.Generator,
    window_m: float = 600.0,
) -> list[tuple[float, float]]:
    """Centres (world CRS) of ``count`` windows rich in ``landcover_class``.

    At least ``min_separation_m`` apart, richest first among a shuffled set of candidates.
    """
    step = window_m / 3.0
    left, bottom, right, top = WORLD_BOUNDS
    cols = int((right - left - window_m) // step)
    rows = int((top - bottom - window_m) // step)
    coarse = Grid(WORLD_CRS, Affine(step, 0.0, left, 0.0, -step, top), (rows + 3, cols + 3))
    hits = (world.landcover(*sample_points(coarse, 1)) == landcover_class).astype(float)
    # Share of the class in each 3 x 3 block of coarse cells (one window).
    share = sum(hits[i : i + rows, j : j + cols] for i in range(3) for j in range(3)) / 9.0
    order = rng.permutation(share.size)
    order = order[np.argsort(-share.ravel()[order], kind="stable")]
    chosen: list[tuple[float, float]] = []
    for flat in order:
        r, c = divmod(int(flat), cols)
        center = (left + (c + 1.5) * step, top - (r + 1.5) * step)
        if all(math.dist(center, other) >= min_separation_m for other in chosen):
            chosen.append(center)
        if len(chosen) == count:
            return chosen
    raise ValueError(f"the world has fewer than {count} sites of class {landcover_class}")


def random_centers(
    count: int, rng: np.random.Generator, margin_m: float = 3000.0
) -> list[tuple[float, float]]:
    """``count`` uniformly random centres inside the world, ``margin_m`` from its edges."""
    left, bottom, right, top = WORLD_BOUNDS
    xs = rng.uniform(left + margin_m, right - margin_m, count)
    ys = rng.uniform(bottom + margin_m, top - margin_m, count)
    return [(float(x), float(y)) for x, y in zip(xs, ys, strict=True)]
