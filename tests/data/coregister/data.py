"""Generate tiny co-registration worlds: known features rendered onto different pixel grids.

A feature (a sharp-edged square) is defined in the reference CRS; each sensor's raster holds
the share of each of its pixels the square covers (``supersample`` ^ 2 points per pixel, each
transformed into the reference CRS), so every grid sees the same ground, edges and all.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
from affine import Affine
from PIL import Image
from pyproj import Transformer
from rasterio.errors import NotGeoreferencedWarning
from rasterio.warp import transform_bounds

SEED = 0
REFERENCE_CRS = "EPSG:32632"
# UTM 33N, whose grid lies ~2 degrees rotated against UTM 32N at 12 degrees East.
SECONDARY_CRS = "EPSG:32633"
REFERENCE_TRANSFORM = Affine(10.0, 0.0, 730000.0, 0.0, -10.0, 5363000.0)
REFERENCE_PX = 64
# The square in the reference CRS: left, bottom, right, top; in reference pixels its columns
# run from 17.3 to 44.6 and its rows from 15.8 to 47.2 (no edge on a pixel boundary).
SQUARE = (730173.0, 5362528.0, 730446.0, 5362842.0)
S2_BANDS = ("B01", "B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B09", "B11", "B12")

Inside = Callable[[np.ndarray, np.ndarray], np.ndarray]


def square(shift_m: tuple[float, float] = (0.0, 0.0)) -> Inside:
    """Indicator of ``SQUARE`` moved by ``shift_m`` (east, north) metres, in reference CRS."""
    left, bottom, right, top = SQUARE
    east, north = shift_m

    def inside(x: np.ndarray, y: np.ndarray) -> np.ndarray:
        return (x >= left + east) & (x < right + east) & (y >= bottom + north) & (y < top + north)

    return inside


def coverage(
    inside: Inside, crs: str, transform: Affine, shape: tuple[int, int], supersample: int = 8
) -> np.ndarray:
    """Share of each pixel of a grid that ``inside`` (reference CRS) covers, (rows, cols)."""
    rows, cols = shape
    steps_r = (np.arange(rows * supersample) + 0.5) / supersample
    steps_c = (np.arange(cols * supersample) + 0.5) / supersample
    cc, rr = np.meshgrid(steps_c, steps_r)
    x, y = transform @ (cc, rr)
    if crs != REFERENCE_CRS:
        x, y = Transformer.from_crs(crs, REFERENCE_CRS, always_xy=True).transform(x, y)
    hits = inside(x, y).astype(np.float64)
    return hits.reshape(rows, supersample, cols, supersample).mean(axis=(1, 3))


def covering_transform(
    crs: str,
    gsd_m: float,
    margin_m: float,
    origin_shift_m: tuple[float, float],
    extent_px: int = REFERENCE_PX,
) -> tuple[Affine, tuple[int, int]]:
    """A north-up grid of ``gsd_m`` in ``crs`` covering ``extent_px`` square of the reference
    grid plus ``margin_m``, its origin moved off the ``gsd_m`` lattice by
    ``origin_shift_m``: (transform, shape)."""
    ref_right = REFERENCE_TRANSFORM.c + extent_px * REFERENCE_TRANSFORM.a
    ref_bottom = REFERENCE_TRANSFORM.f + extent_px * REFERENCE_TRANSFORM.e
    left, bottom, right, top = transform_bounds(
        REFERENCE_CRS, crs, REFERENCE_TRANSFORM.c, ref_bottom, ref_right, REFERENCE_TRANSFORM.f
    )
    sx, sy = origin_shift_m
    left = math.floor((left - margin_m) / gsd_m) * gsd_m + sx
    top = math.ceil((top + margin_m) / gsd_m) * gsd_m + sy
    cols = math.ceil((right + margin_m - left) / gsd_m)
    rows = math.ceil((top - bottom + margin_m) / gsd_m)
    return Affine(gsd_m, 0.0, left, 0.0, -gsd_m, top), (rows, cols)


def write_raster(
    path: Path,
    data: np.ndarray,
    crs: str | None,
    transform: Affine | None,
    nodata: float | None = None,
) -> Path:
    """Write (bands, rows, cols) ``data`` as a tiled, deflate-compressed GeoTIFF; ``crs`` or
    ``transform`` None leaves that part of the georeference out."""
    path.parent.mkdir(parents=True, exist_ok=True)
    count, rows, cols = data.shape
    profile: dict[str, Any] = {
        "driver": "GTiff",
        "count": count,
        "height": rows,
        "width": cols,
        "dtype": data.dtype.name,
        "nodata": nodata,
        "compress": "deflate",
        "tiled": True,
        "blockxsize": 16,
        "blockysize": 16,
    }
    if crs is not None:
        profile["crs"] = crs
    if transform is not None:
        profile["transform"] = transform
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        with rasterio.open(path, "w", **profile) as dst:
            dst.write(data)
    return path


def s2_square(
    inside: Inside,
    transform: Affine = REFERENCE_TRANSFORM,
    shape: tuple[int, int] = (REFERENCE_PX, REFERENCE_PX),
) -> np.ndarray:
    """Sentinel-2 L2A reflectance * 10000 (uint16): 1000 outside the square, 4000 inside,
    band ``i`` offset by ``10 * i``, on the reference CRS."""
    share = coverage(inside, REFERENCE_CRS, transform, shape)
    offsets = 10 * np.arange(len(S2_BANDS))[:, None, None]
    return np.rint(1000 + 3000 * share + offsets).astype(np.uint16)


def dsm_square(inside: Inside, crs: str, transform: Affine, shape: tuple[int, int]) -> np.ndarray:
    """Heights (float32, m): 50 outside the square, 80 on it."""
    return (50.0 + 30.0 * coverage(inside, crs, transform, shape))[None].astype(np.float32)


def s1_square(
    inside: Inside,
    crs: str,
    transform: Affine,
    shape: tuple[int, int],
    outside_db: float = -20.0,
    inside_db: float = -5.0,
) -> np.ndarray:
    """Backscatter in dB (float32, VV and VH): each pixel the mean linear power of the
    ground it covers, ``outside_db`` off the square and ``inside_db`` on it."""
    share = coverage(inside, crs, transform, shape)
    power = 10 ** (outside_db / 10) + share * (10 ** (inside_db / 10) - 10 ** (outside_db / 10))
    return np.stack([10 * np.log10(power)] * 2).astype(np.float32)


def checkerboard_db(shape: tuple[int, int], low_db: float, high_db: float) -> np.ndarray:
    """(2, rows, cols) float32 dB: a one-pixel checkerboard of ``low_db`` and ``high_db``."""
    rows, cols = np.indices(shape)
    return np.stack([np.where((rows + cols) % 2 == 0, high_db, low_db)] * 2).astype(np.float32)


def raster_asset(
    path: Path, sensor: str, bands: tuple[str, ...] | None = None, datetime: str | None = None
) -> dict[str, Any]:
    """A STAC asset dict as the pipeline sees it (absolute local href)."""
    asset: dict[str, Any] = {"href": str(path), "msgfm:sensor": sensor, "roles": ["data"]}
    if bands is not None:
        asset["bands"] = [{"name": name} for name in bands]
    if datetime is not None:
        asset["datetime"] = datetime
    return asset


def stac_item(
    item_id: str,
    collection: str,
    assets: dict[str, dict[str, Any]],
    datetime: str | None = "2020-06-01T10:00:00Z",
    start_datetime: str | None = None,
) -> dict[str, Any]:
    """A STAC item dict with ``assets``."""
    properties: dict[str, Any] = {"datetime": datetime}
    if start_datetime is not None:
        properties["start_datetime"] = start_datetime
    return {
        "type": "Feature",
        "id": item_id,
        "collection": collection,
        "properties": properties,
        "assets": assets,
    }


def write_picture(path: Path, pixels: np.ndarray) -> Path:
    """Write (rows, cols, channels) uint8 ``pixels`` with PIL (format by suffix)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path)
    return path


def shapes(
    shape: tuple[int, int], dy: float, dx: float, supersample: int = 8, count: int = 12
) -> np.ndarray:
    """A (rows, cols) float64 image of ``count`` random discs and rectangles (fixed seed),
    anti-aliased, every feature moved by (``dy``, ``dx``) pixels."""
    rng = np.random.default_rng(SEED)
    rows, cols = shape
    y = (np.arange(rows * supersample) + 0.5) / supersample - dy
    x = (np.arange(cols * supersample) + 0.5) / supersample - dx
    yy, xx = np.meshgrid(y, x, indexing="ij")
    image = np.zeros_like(yy)
    for _ in range(count):
        cy, cx = rng.uniform(0, rows), rng.uniform(0, cols)
        radius, value = rng.uniform(rows / 25, rows / 5), rng.uniform(-1.0, 1.0)
        if rng.random() < 0.5:
            image += value * ((yy - cy) ** 2 + (xx - cx) ** 2 < radius**2)
        else:
            image += value * ((abs(yy - cy) < radius) & (abs(xx - cx) < 0.7 * radius))
    return image.reshape(rows, supersample, cols, supersample).mean(axis=(1, 3))
