"""The pixel grid of a raster: its CRS, affine transform and shape."""

from __future__ import annotations

import math
from dataclasses import dataclass

from affine import Affine
from rasterio.crs import CRS
from rasterio.transform import array_bounds


@dataclass(frozen=True)
class Grid:
    """A pixel grid: CRS, affine transform (pixel corner -> map) and (rows, cols).

    The CRS is what rasterio takes as one: a :class:`rasterio.crs.CRS` as read from a file (the
    pipeline's grids) or a string such as ``"EPSG:32632"`` (the sample world's grids, which
    its renderers cache by).
    """

    crs: CRS | str
    transform: Affine
    shape: tuple[int, int]

    @property
    def bounds(self) -> tuple[float, float, float, float]:
        """(left, bottom, right, top) in the grid's CRS."""
        return array_bounds(*self.shape, self.transform)

    def coarsened(self, factor: float) -> Grid:
        """A grid of pixels ``factor`` times larger from the same origin that covers this one.

        Its last row and column may stick out (as a Sentinel-2 tile's 60 m grid does its 10 m
        grid's, or a coarse map its scene's).
        """
        rows, cols = (math.ceil(n / factor) for n in self.shape)
        return Grid(self.crs, self.transform * Affine.scale(factor), (rows, cols))

    @property
    def pixel_area(self) -> float:
        """Area of one pixel in CRS units squared (smaller is finer)."""
        return abs(self.transform.determinant)
