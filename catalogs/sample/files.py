"""Writing the sample world's files: Cloud-Optimized GeoTIFFs and plain pictures."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import rasterio
from PIL import Image

from catalogs.grid import Grid

COG_BLOCK_PX = 128  # tiles of 128 px, so even a 256 px patch gets tiles and one overview level


def write_cog(
    path: Path,
    data: np.ndarray,
    grid: Grid | None,
    nodata: float | None = None,
    resampling: str = "average",
    tags: dict[str, str] | None = None,
) -> Path:
    """Write (bands, rows, cols) ``data`` as a tiled, deflate-compressed COG with overviews.

    ``grid`` None writes a GeoTIFF without georeference (as some official datasets ship).
    Integer data gets the horizontal predictor, floats the floating-point one.
    """
    if data.ndim == 2:
        data = data[None]
    path.parent.mkdir(parents=True, exist_ok=True)
    is_float = np.issubdtype(data.dtype, np.floating)
    profile = {
        "driver": "COG",
        "count": data.shape[0],
        "height": data.shape[1],
        "width": data.shape[2],
        "dtype": data.dtype.name,
        "compress": "deflate",
        "predictor": 3 if is_float else 2,
        "blocksize": COG_BLOCK_PX,
        "overview_resampling": resampling,
        "nodata": nodata,
    }
    if grid is not None:
        if grid.shape != data.shape[1:]:
            raise ValueError(f"{path}: data shape {data.shape[1:]} is not the grid's {grid.shape}")
        profile.update(crs=grid.crs, transform=grid.transform)
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(data)
        if tags:
            dst.update_tags(**tags)
    return path


def write_picture(path: Path, rgb: np.ndarray, quality: int = 90) -> Path:
    """Write (3, rows, cols) uint8 ``rgb`` as a JPEG or PNG (by suffix), without georeference."""
    path.parent.mkdir(parents=True, exist_ok=True)
    image = Image.fromarray(np.moveaxis(rgb, 0, -1))
    if path.suffix.lower() in (".jpg", ".jpeg"):
        image.save(path, quality=quality)
    else:
        image.save(path, optimize=False)
    return path
