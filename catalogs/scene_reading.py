"""Reading any sensor onto any target grid, one block of the grid at a time.

The reading layer below the pipeline's coregister stage (which cuts chips of what it reads) and
the model's scene inference (``model.predict``, which reads windows of a scene for tiled
inference): both read through it, so the same scene gives the same pixels to either. An item's
raster assets by registry sensor (:func:`raster_sensors`) are opened and checked against the
registry (:func:`open_raster`: a header is checked before anything is allocated for it, and a
raster holds no open file, so it can be sent to worker processes); then for each block of the
target grid (:func:`sensor_block`, :func:`sensor_blocks`), every raster's window that covers it
(plus the margin the resampling kernel needs) is read, converted to the registry's storage, and
warped by GDAL (through rasterio) onto the block with the registry's resampling rule of its
sensor. Memory therefore depends on the block size, never on the scene size. A raster no larger
than a block is read once, whole, and warped whole onto every block; ``read_whole`` reads every
raster whole first and cuts the same windows from memory (the same pixels, the memory of a
whole-scene read). GDAL's warper approximates the reprojection per destination window
(rasterio's 0.125 px tolerance), so across CRSs the block layout is part of what the pixels are.

Errors are :class:`catalogs.item_assets.ItemReadError` naming the item, the file and the reason.
"""

from __future__ import annotations

import math
import os
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np
import rasterio
from affine import Affine
from rasterio.enums import Resampling
from rasterio.errors import NotGeoreferencedWarning, RasterioError
from rasterio.transform import array_bounds
from rasterio.warp import reproject, transform_bounds
from rasterio.windows import Window
from rasterio.windows import transform as window_transform

from catalogs.grid import Grid
from catalogs.item_assets import ItemReadError, SensorAsset, nodata_mask, sensor_assets, to_storage
from catalogs.sensors import Sensor

DB_TO_LN = np.float32(math.log(10.0) / 10.0)  # 10 ** (dB / 10) == exp(dB * DB_TO_LN)
# GDAL resampling methods whose every output lies within the range of the source values used.
CONVEX_METHODS = frozenset({"nearest", "bilinear", "average", "mode", "min", "max", "med"})


@dataclass(frozen=True)
class Raster:
    """A raster asset, opened and checked against the registry.

    Its grid, and, when read whole, its (bands, rows, cols) pixels in the sensor's storage dtype
    with the (rows, cols) mask of its pixels without data.
    """

    asset: SensorAsset
    grid: Grid
    whole: tuple[np.ndarray, np.ndarray] | None = None
    small: bool = False  # no larger than a block: read once, whole, and warped whole


@dataclass(frozen=True)
class SensorBlock:
    """One sensor on (a block of) a target grid.

    All its registry bands, stacked in registry order, and the mask of its pixels without data.
    """

    sensor: Sensor
    data: np.ndarray
    invalid: np.ndarray
    datetime: str | None


def raster_sensors(item: dict[str, Any]) -> dict[str, list[SensorAsset]]:
    """The item's raster assets by registry sensor, masks left out.

    Args:
        item: STAC item dict (see :func:`catalogs.item_assets.sensor_assets`).

    Returns:
        Each registry sensor's assets, in the order :func:`~catalogs.item_assets.sensor_assets`
        gives them.

    Raises:
        ItemReadError: an asset that is no registry sensor's, or a sensor whose assets do not hold
            each of its registry bands exactly once.
    """
    rasters = {
        name: assets
        for name, assets in sensor_assets(item).items()
        if assets[0].sensor.kind != "mask"
    }
    for name, assets in rasters.items():
        _check_band_cover(item["id"], name, assets)
    return rasters


def _check_band_cover(item_id: str, sensor_name: str, assets: list[SensorAsset]) -> None:
    """The assets of one sensor must hold each of its registry bands exactly once."""
    held = sorted(name for asset in assets for name in asset.band_names)
    expected = sorted(assets[0].sensor.band_names)
    if held != expected:
        raise ItemReadError(
            item_id,
            None,
            f"the {sensor_name} assets hold bands {held}, the registry has {expected}",
        )


def open_raster(
    item_id: str,
    asset: SensorAsset,
    *,
    max_raster_px: int,
    block_px: int,
    read_whole: bool = False,
    limit_name: str = "max_raster_px",
) -> Raster:
    """Open a raster and check it against the registry and the size limit.

    The file is closed again: the raster holds no open file (each read opens it), so it can be
    pickled or forked to worker processes.

    Args:
        item_id: the item's id, for errors.
        asset: the raster asset.
        max_raster_px: the most pixels a raster may declare.
        block_px: the side of the blocks it will be read in; a raster no larger is read whole
            now (0: any raster).
        read_whole: read it whole now whatever its size.
        limit_name: what errors call ``max_raster_px`` (the caller's parameter).

    Returns:
        The raster: its grid, and its pixels if read whole.

    Raises:
        ItemReadError: unreadable (corrupt, truncated, missing) file, no CRS, no geotransform,
            band count or dtype unlike the asset and registry, more pixels than the limit;
            read whole, every pixel nodata.
    """
    whole = None
    with _opened(item_id, asset.href) as src:
        _check_header(item_id, asset, src)
        check_size(item_id, asset.href, src.width, src.height, max_raster_px, limit_name)
        grid = Grid(src.crs, src.transform, (src.height, src.width))
        small = read_once(src.height, src.width, block_px)
        if read_whole or small:
            whole = to_storage(src.read(_indexes(asset)), asset.radiometry, asset.sensor)
    if whole is not None and whole[1].all():
        raise ItemReadError(item_id, asset.href, "all pixels are nodata")
    return Raster(asset, grid, whole, small)


class _OpenRasters:
    """The rasters kept open by :func:`kept_open` in this process: href -> open dataset."""

    def __init__(self) -> None:
        self.depth = 0  # kept_open() blocks entered; 0: every read opens and closes its file
        self.pid = os.getpid()
        self.datasets: dict[str, rasterio.DatasetReader] = {}

    def get(self, href: str) -> rasterio.DatasetReader:
        if self.pid != os.getpid():  # a forked child: its parent's handles are not its own
            self.pid, self.datasets = os.getpid(), {}
        if href not in self.datasets:
            self.datasets[href] = rasterio.open(href)
        return self.datasets[href]

    def close(self) -> None:
        if self.pid == os.getpid():
            for dataset in self.datasets.values():
                dataset.close()
        self.datasets = {}


_OPEN = _OpenRasters()


@contextmanager
def kept_open() -> Iterator[None]:
    """Within the block, a raster opened for a read stays open for this process's next reads.

    Tiled inference reads many small, overlapping windows of the same files: keeping them open
    saves the open (about 1.5 ms a file) and keeps GDAL's cache of decoded blocks, which
    neighbouring windows share. A process forked inside the block opens its own. The rasters
    are closed when the outermost block ends (a process that never leaves it, a DataLoader
    worker, closes them at exit).
    """
    _OPEN.depth += 1
    try:
        yield
    finally:
        _OPEN.depth -= 1
        if _OPEN.depth == 0:
            _OPEN.close()


@contextmanager
def _opened(item_id: str, href: str) -> Iterator[rasterio.DatasetReader]:
    """The raster at ``href``, open (kept open within :func:`kept_open`).

    A GDAL error while it is used (corrupt, truncated, missing file) raises an ItemReadError naming
    the file.
    """
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", NotGeoreferencedWarning)
            if _OPEN.depth:
                yield _OPEN.get(href)
            else:
                with rasterio.open(href) as src:
                    yield src
    except RasterioError as error:
        raise ItemReadError(
            item_id, href, f"unreadable GeoTIFF ({error.__cause__ or error})"
        ) from error


def read_once(height: int, width: int, block_px: int) -> bool:
    """Whether a raster of ``height`` x ``width`` is no larger than a block.

    Such a raster is read once, whole, and warped whole onto every block (``block_px`` 0: every
    raster).
    """
    return block_px <= 0 or max(height, width) <= block_px


def _indexes(asset: SensorAsset) -> list[int] | None:
    return list(asset.indexes) if asset.indexes else None


def _read_window(item_id: str, raster: Raster, window: Window) -> tuple[np.ndarray, np.ndarray]:
    """A raster's pixels inside ``window`` (within the raster) in the registry's storage.

    They come with the mask of those without data.
    """
    rows, cols = window.toslices()
    if raster.whole is not None:
        data, invalid = raster.whole
        return data[:, rows, cols], invalid[rows, cols]
    with _opened(item_id, raster.asset.href) as src:
        data = src.read(_indexes(raster.asset), window=window)
    return to_storage(data, raster.asset.radiometry, raster.asset.sensor)


class ReadLog:
    """What the blocks read of each raster.

    Whether its windows held data, whether any of it landed on the grid, and the extent read (to
    tell "all pixels are nodata" from "no data on the reference grid").
    """

    def __init__(self) -> None:
        """An empty log."""
        self._rasters: dict[int, Raster] = {}
        self._source: dict[int, bool] = {}
        self._on_grid: dict[int, bool] = {}
        self._extent: dict[int, tuple[int, int, int, int]] = {}

    def record(
        self, raster: Raster, window: Window | None, source_data: bool, on_grid: bool
    ) -> None:
        """Note a read of ``window`` of ``raster`` (None: none overlaps the block).

        ``source_data``: whether the window held data; ``on_grid``: whether any landed on the
        block.
        """
        key = id(raster)
        self._rasters[key] = raster
        self._source[key] = self._source.get(key, False) or source_data
        self._on_grid[key] = self._on_grid.get(key, False) or on_grid
        if window is not None:
            row0, col0, row1, col1 = self._extent.get(
                key, (window.row_off, window.col_off, window.row_off, window.col_off)
            )
            self._extent[key] = (
                min(row0, window.row_off),
                min(col0, window.col_off),
                max(row1, window.row_off + window.height),
                max(col1, window.col_off + window.width),
            )

    def check(self, item_id: str) -> None:
        """Raises ItemReadError for the first raster that had no data on the grid in any block."""
        for key, raster in self._rasters.items():
            if not self._on_grid[key]:
                whole = self._extent.get(key) == (0, 0, *raster.grid.shape)
                raise ItemReadError(
                    item_id,
                    raster.asset.href,
                    "all pixels are nodata"
                    if whole and not self._source[key]
                    else "no data on the reference grid",
                )


def _check_header(item_id: str, asset: SensorAsset, src: rasterio.DatasetReader) -> None:
    """Georeference, band count and dtype of an open raster against the asset and registry."""
    if src.crs is None:
        raise ItemReadError(item_id, asset.href, "no CRS")
    if src.transform == Affine.identity():
        raise ItemReadError(item_id, asset.href, "no geotransform")
    check_layout(item_id, asset, src.count, np.dtype(src.dtypes[0]))


def check_size(
    item_id: str, href: str, width: int, height: int, max_px: int, limit_name: str
) -> None:
    """A file's declared size (from its header, before any read) against the limit.

    A few bytes can declare a raster that no memory holds.

    Raises:
        ItemReadError: more than ``max_px`` pixels (the limit named ``limit_name``).
    """
    if width * height > max_px:
        raise ItemReadError(
            item_id,
            href,
            f"declares {width} x {height} px ({width * height:,}), "
            f"more than {limit_name} ({max_px:,})",
        )


def check_layout(item_id: str, asset: SensorAsset, count: int, dtype: np.dtype) -> None:
    """A file's band count and dtype against its asset and the registry.

    The band count must be the number of bands its asset names (all of the sensor's registry bands
    when it names none) or hold the bands it reads; a file already in the registry's storage must
    have a dtype that converts to it without loss.

    Raises:
        ItemReadError: a band count or dtype unlike that.
    """
    sensor = asset.sensor
    if asset.indexes is not None:
        if max(asset.indexes) > count:
            raise ItemReadError(
                item_id, asset.href, f"{count} bands, the asset reads bands {list(asset.indexes)}"
            )
    elif count != len(asset.band_names):
        expected = (
            f"the registry's {sensor.name} has {sensor.num_bands}"
            if asset.band_names == sensor.band_names
            else f"the asset names {len(asset.band_names)} of the registry's {sensor.name}"
        )
        raise ItemReadError(item_id, asset.href, f"{count} bands, {expected}")
    if dtype.kind not in "iuf" or (
        asset.radiometry is None and not np.can_cast(dtype, sensor.dtype, "safe")
    ):
        raise ItemReadError(
            item_id,
            asset.href,
            f"dtype {dtype}, the registry's {sensor.name} stores {sensor.dtype}",
        )


def invalid_pixels(data: np.ndarray, sensor: Sensor) -> np.ndarray:
    """(rows, cols) mask of pixels where any band is the sensor's nodata value or not finite."""
    return nodata_mask(data, sensor.nodata)


def block_grid(grid: Grid, block: Window) -> Grid:
    """The grid of the pixels of ``block`` (a window of ``grid``)."""
    return Grid(
        grid.crs, window_transform(block, grid.transform), (int(block.height), int(block.width))
    )


def sensor_blocks(
    item_id: str,
    rasters: dict[str, list[Raster]],
    grid: Grid,
    block: Window,
    reads: ReadLog | None = None,
) -> list[SensorBlock]:
    """Every sensor on ``block`` of ``grid`` (:func:`sensor_block`), in the order of ``rasters``."""
    return [
        sensor_block(item_id, sensor_rasters, grid, block, reads)
        for sensor_rasters in rasters.values()
    ]


def sensor_block(
    item_id: str,
    rasters: list[Raster],
    grid: Grid,
    block: Window,
    reads: ReadLog | None = None,
) -> SensorBlock:
    """All registry bands of one sensor on ``block`` of ``grid``, stacked in registry order.

    Rasters already on the grid are used as read, the others warped. Several rasters holding the
    same bands (partner items of one acquisition) are mosaicked: each pixel from the first raster,
    in order, with data there.

    Args:
        item_id: the item's id, for errors.
        rasters: the sensor's rasters (:func:`open_raster`), together holding each of its
            registry bands (:func:`raster_sensors`).
        grid: the target grid.
        block: the window of ``grid`` to read.
        reads: where to note what was read (:meth:`ReadLog.check` after the last block); None:
            nowhere.

    Returns:
        The sensor's bands and pixels without data on the block, and its first raster's
        acquisition time.

    Raises:
        ItemReadError: a file that cannot be read.
    """
    reads = ReadLog() if reads is None else reads
    target = block_grid(grid, block)
    sensor = rasters[0].asset.sensor
    layers = [_on_block(item_id, raster, grid, block, target, reads) for raster in rasters]
    if len(rasters) == 1 and rasters[0].asset.band_names == sensor.band_names:
        return SensorBlock(sensor, *layers[0], rasters[0].asset.datetime)
    if sum(len(r.asset.band_names) for r in rasters) == sensor.num_bands:  # bands held once
        data = np.empty((sensor.num_bands, *target.shape), dtype=sensor.dtype)
        for raster, (values, _) in zip(rasters, layers, strict=True):
            data[[sensor.band_names.index(name) for name in raster.asset.band_names]] = values
        invalid = np.logical_or.reduce([mask for _, mask in layers])
        return SensorBlock(sensor, data, invalid, rasters[0].asset.datetime)
    data = nodata_filled(sensor, (sensor.num_bands, *target.shape))
    filled = np.zeros(data.shape, dtype=bool)
    for raster, (values, invalid) in zip(rasters, layers, strict=True):
        for layer, name in zip(values, raster.asset.band_names, strict=True):
            band = sensor.band_names.index(name)
            take = ~invalid & ~filled[band]
            data[band][take] = layer[take]
            filled[band] |= take
    return SensorBlock(sensor, data, ~filled.all(axis=0), rasters[0].asset.datetime)


def nodata_filled(sensor: Sensor, shape: tuple[int, ...]) -> np.ndarray:
    """An array of ``shape`` in the sensor's storage dtype holding its nodata value.

    A sensor without one gets 0.
    """
    return np.full(shape, 0 if sensor.nodata is None else sensor.nodata, dtype=sensor.dtype)


def _on_block(
    item_id: str, raster: Raster, grid: Grid, block: Window, target: Grid, reads: ReadLog
) -> tuple[np.ndarray, np.ndarray]:
    """A raster's bands on ``target`` (``block`` of ``grid``) and its pixels without data there.

    A raster on the grid gives the window of the block itself; any other gives the window that
    covers the block (with the kernel's margin), warped.
    """
    sensor = raster.asset.sensor
    if raster.grid == grid:
        values, invalid = _read_window(item_id, raster, block)
        reads.record(raster, block, not invalid.all(), not invalid.all())
        return values, invalid
    if raster.small:  # warped whole, as one block of the whole grid would warp it
        window: Window | None = Window(0, 0, raster.grid.shape[1], raster.grid.shape[0])
    else:
        window = source_window(raster.grid, target, source_margin_px(raster.grid, target, sensor))
    values, invalid = (None, None) if window is None else _read_window(item_id, raster, window)
    if values is None or invalid.all():
        reads.record(raster, window, False, False)
        empty = nodata_filled(sensor, (len(raster.asset.band_names), *target.shape))
        return empty, np.ones(target.shape, dtype=bool)
    data, warped_invalid = warp(
        values, block_grid(raster.grid, window), target, sensor, has_nodata=bool(invalid.any())
    )
    reads.record(raster, window, True, not warped_invalid.all())
    return data, warped_invalid


# Source pixels either side of a destination pixel that GDAL's kernels may read, per method.
KERNEL_RADIUS_PX = {
    "nearest": 1,
    "bilinear": 1,
    "average": 1,
    "mode": 1,
    "cubic": 2,
    "cubic_spline": 2,
    "lanczos": 3,
}
WINDOW_MARGIN_PX = 8  # on top of the kernel: rounding of the transformed block bounds


def source_margin_px(src_grid: Grid, dst_grid: Grid, sensor: Sensor) -> int:
    """Source pixels to read around a block: the kernel's reach.

    The reach is widened where a destination pixel spans several source pixels (averaging,
    downsampling).
    """
    ratio = (
        math.sqrt(dst_grid.pixel_area / src_grid.pixel_area)
        if src_grid.crs == dst_grid.crs
        else 2.0
    )  # across CRSs, units differ: be generous
    return WINDOW_MARGIN_PX + math.ceil(
        KERNEL_RADIUS_PX[sensor.resampling.method] * max(1.0, ratio)
    )


def source_window(src_grid: Grid, block_grid: Grid, margin_px: int) -> Window | None:
    """The window of ``src_grid`` that covers ``block_grid`` plus ``margin_px`` on each side.

    Clipped to the raster; None when they do not overlap.
    """
    bounds = array_bounds(*block_grid.shape, block_grid.transform)
    west, south, east, north = (
        bounds
        if src_grid.crs == block_grid.crs
        else transform_bounds(block_grid.crs, src_grid.crs, *bounds, densify_pts=21)
    )
    inverse = ~src_grid.transform
    corners = [inverse @ (x, y) for x in (west, east) for y in (south, north)]
    col0 = max(math.floor(min(c for c, _ in corners)) - margin_px, 0)
    row0 = max(math.floor(min(r for _, r in corners)) - margin_px, 0)
    col1 = min(math.ceil(max(c for c, _ in corners)) + margin_px, src_grid.shape[1])
    row1 = min(math.ceil(max(r for _, r in corners)) + margin_px, src_grid.shape[0])
    if col1 <= col0 or row1 <= row0:
        return None
    return Window(col0, row0, col1 - col0, row1 - row0)


def warp(
    data: np.ndarray, src_grid: Grid, dst_grid: Grid, sensor: Sensor, has_nodata: bool = True
) -> tuple[np.ndarray, np.ndarray]:
    """Warp (bands, rows, cols) ``data`` onto ``dst_grid`` with the sensor's resampling rule.

    Destination pixels the source does not cover get the sensor's nodata value; a sensor
    without one gets its coverage from an alpha band GDAL computes in the same pass. In the
    ``linear_power`` domain, stored dB values are resampled as linear power
    (10 ** (dB / 10)) and converted back to dB; NaN is their nodata.

    Args:
        data: the raster in the sensor's storage dtype.
        src_grid: the raster's grid.
        dst_grid: the grid to warp onto.
        sensor: the raster's registry sensor (resampling rule, nodata, dtype).
        has_nodata: whether any pixel of ``data`` is nodata; False lets GDAL use its kernels
            without source masks (see :func:`gdal_reproject`).

    Returns:
        (bands, rows, cols) array in the storage dtype, and the (rows, cols) mask of its
        pixels without data (not covered by the source, or nodata in a band).
    """
    power = sensor.resampling.domain == "linear_power"
    if power and sensor.nodata is not None and not math.isnan(sensor.nodata):
        raise ValueError(f"{sensor.name}: linear_power resampling needs NaN as nodata")
    source = data
    if power:  # 10 ** (dB / 10) as exp(dB * ln(10) / 10): faster; in place, one temporary
        source = data * DB_TO_LN
        np.exp(source, out=source)
    count = data.shape[0]
    out = gdal_reproject(source, src_grid, dst_grid, sensor, has_nodata)
    values = out[:count]
    if power:
        with np.errstate(divide="ignore"):
            np.log(values, out=values)
        values /= DB_TO_LN
        values[np.isinf(values)] = np.nan  # no power: no data (-Inf dB is never data)
    values = values.astype(sensor.dtype, copy=False)
    invalid = invalid_pixels(values, sensor)
    if len(out) > count:
        invalid |= out[count] == 0
    return values, invalid


def gdal_reproject(
    source: np.ndarray, src_grid: Grid, dst_grid: Grid, sensor: Sensor, has_nodata: bool
) -> np.ndarray:
    """GDAL's part of :func:`warp`: ``source`` reprojected onto ``dst_grid``.

    It uses the sensor's resampling method and one thread, and adds an alpha band (0 where
    uncovered) for a sensor without nodata.

    The source nodata value is given to GDAL unless the source has no nodata pixel and the
    method only averages source values (:data:`CONVEX_METHODS`): with it, GDAL runs its
    general kernel, which checks a validity mask for every source pixel it reads (2.5-3x
    slower for 16-bit bilinear); without, its specialised kernels. On such a source both
    give the same coverage and pixels (within 1 of an integer unit: rounding), which a test
    checks; uncovered pixels get the nodata value either way. Methods that overshoot (cubic,
    Lanczos) keep the general kernel, which never turns a valid pixel into the nodata value.
    """
    if not has_nodata and sensor.resampling.method not in CONVEX_METHODS:
        has_nodata = True
    count = source.shape[0]
    alpha_band = count + 1 if sensor.nodata is None else 0  # 0: none
    out = np.empty((max(count, alpha_band), *dst_grid.shape), dtype=source.dtype)
    reproject(
        source,
        out,
        src_transform=src_grid.transform,
        src_crs=src_grid.crs,
        dst_transform=dst_grid.transform,
        dst_crs=dst_grid.crs,
        resampling=Resampling[sensor.resampling.method],
        src_nodata=sensor.nodata if has_nodata else None,
        dst_nodata=sensor.nodata,
        dst_alpha=alpha_band,
        num_threads=1,
    )
    return out
