"""Writers of the small raster and picture files the fixture generators lay out."""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import rasterio
import rasterio.errors
from affine import Affine
from PIL import Image
from rasterio.enums import ColorInterp


def write_geotiff(
    path: Path,
    values: np.ndarray,
    crs: str | None = None,
    transform: Affine | None = None,
    photometric: str | None = None,
    colorinterp: Sequence[ColorInterp] | None = None,
) -> Path:
    """Write ``values`` (bands, rows, cols) as a GeoTIFF, creating its folder.

    Args:
        path: the file.
        values: the pixels, in the dtype to store.
        crs: the CRS; with ``transform`` None too, the TIFF has no georeference.
        transform: the grid's affine transform.
        photometric: GDAL's PHOTOMETRIC creation option; GDAL's default where None.
        colorinterp: the bands' colour interpretation, where not GDAL's default.

    Returns:
        ``path``.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    count, height, width = values.shape
    options = {"photometric": photometric} if photometric else {}
    georeference = {"crs": crs, "transform": transform} if crs else {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", rasterio.errors.NotGeoreferencedWarning)
        with rasterio.open(
            path,
            "w",
            driver="GTiff",
            width=width,
            height=height,
            count=count,
            dtype=values.dtype,
            **georeference,
            **options,
        ) as dst:
            if colorinterp:  # before the pixels: GDAL cannot change it once they are written
                dst.colorinterp = colorinterp
            dst.write(values)
    return path


def write_picture(
    path: Path,
    rng: np.random.Generator,
    size: tuple[int, int],
    mode: str = "RGB",
    image_format: str | None = None,
) -> Path:
    """Write a random picture of ``size`` (width, height) and PIL ``mode`` with PIL, creating its
    folder; in ``image_format``, or where None the format the suffix names.

    Returns:
        ``path``.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    bands = len(mode)
    pixels = rng.integers(0, 256, (size[1], size[0], bands), dtype=np.uint8)
    Image.fromarray(pixels.squeeze(axis=2) if bands == 1 else pixels, mode).save(
        path, format=image_format
    )
    return path
