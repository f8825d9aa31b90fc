"""Co-registration: the sensors of one location warped onto one reference grid and cut into chips.

The reference grid (the finest raster of the reference sensor) is processed in blocks of about
``block_px`` square, each a whole number of chip strides: for each block, every raster's window
that covers it (plus the margin the resampling kernel needs) is read, converted to the
registry's storage, and warped by GDAL (through rasterio) onto the block with the registry's
resampling rule of its sensor; the block's chips are cut, kept where every sensor has data, and
handed on (to the chip file writer, which encodes them at once). Memory therefore depends on
the block size, not on the scene size. ``read_whole`` reads every raster whole first and cuts
the same windows from memory: the same chips, the memory of a whole-scene read (the bench's
baseline). GDAL's warper approximates the reprojection per destination window (rasterio's
0.125 px tolerance), so across CRSs the block layout is part of what the chips are. What a
header declares is checked before anything is allocated for it: a raster or picture of more
than ``max_raster_px`` pixels, or a grid giving more than ``MAX_CHIPS_PER_ITEM`` chip windows,
fails the item.

The QA measures each secondary's residual shift in the central window of the grid
(``qa_window_px``): the shift of a pair is one number for the scene, and a window keeps its
cost fixed however large the scene. Items without georeference (pictures) become one
centre-cropped, resized chip.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
from affine import Affine
from PIL import Image, UnidentifiedImageError
from rasterio.crs import CRS
from rasterio.enums import Resampling
from rasterio.errors import NotGeoreferencedWarning, RasterioError
from rasterio.transform import array_bounds
from rasterio.warp import reproject, transform_bounds
from rasterio.windows import Window
from rasterio.windows import bounds as window_bounds
from rasterio.windows import transform as window_transform

from catalogs.grid import Grid
from catalogs.item_assets import (
    ItemReadError,
    SensorAsset,
    iso_datetime,
    nodata_mask,
    sensor_assets,
    to_storage,
)
from catalogs.sensors import Sensor
from pipeline.chips import ChipFileWriter, LocationChips, LocationWriter
from pipeline.failures import ItemError
from pipeline.pairing import PAIR
from pipeline.params import CoregisterParams, PairSource, PipelineParams, SourceGrid
from pipeline.qa import residual_shift

LONLAT = CRS.from_epsg(4326)
PARTNER_ITEMS = "msgfm:partner_items"  # a pair's reference item: its partner items (whole)
NODATA_REASON = "nodata"  # key of LocationChips.dropped for chips with too much nodata
DB_TO_LN = np.float32(math.log(10.0) / 10.0)  # 10 ** (dB / 10) == exp(dB * DB_TO_LN)
PICTURE_RESAMPLING = Image.Resampling.LANCZOS
# Chip windows listed per item at most: a stride far too short for the grid (1 px on a
# Sentinel-2 tile: 120 million windows) is refused before the list is made.
MAX_CHIPS_PER_ITEM = 1_000_000
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
class Scene:
    """One sensor on (a block of) the reference grid.

    All its registry bands and the pixels without data.
    """

    sensor: Sensor
    data: np.ndarray
    invalid: np.ndarray
    datetime: str | None


ChipSink = Callable[[list[int], dict[str, np.ndarray]], None]  # a block's chips and indexes
ChipLayout = dict[str, tuple[tuple[int, int, int], np.dtype]]  # sensor -> chip shape, dtype


def coregister_item(
    item: dict[str, Any], params: PipelineParams, read_whole: bool = False
) -> LocationChips:
    """The chips of one catalog item, in memory.

    Every sensor on one grid, or one picture chip (:func:`write_item_chips` writes them without
    holding them all).

    Args:
        item: STAC item dict; ``collection`` is the source id, each asset has an absolute
            local ``href``. A reference item of a pair across collections (``msgfm:pair``)
            carries its partner items under :data:`PARTNER_ITEMS`.
        params: pipeline parameters (``coregister`` for paired sources, ``pictures`` else).
        read_whole: read every raster whole first (the same chips; see the module doc).

    Returns:
        The location's chips, ``sensors`` keyed reference sensor first.

    Raises:
        ItemError: naming the item, the file and the reason, for input that cannot be used.
    """
    batches: list[tuple[list[int], dict[str, np.ndarray]]] = []
    location, layout = _chips(item, params, read_whole, lambda i, chips: batches.append((i, chips)))
    if layout is None:  # a picture
        return location
    order = np.argsort([i for indexes, _ in batches for i in indexes], kind="stable")
    location.sensors = {
        name: np.concatenate(
            [np.empty((0, *shape), dtype)] + [chips[name] for _, chips in batches]
        )[order]
        for name, (shape, dtype) in layout.items()
    }
    return location


def write_item_chips(
    item: dict[str, Any], params: PipelineParams, path: Path, read_whole: bool = False
) -> Path:
    """Co-register one item into its own chip file ``path`` (:func:`add_item_chips`)."""
    with ChipFileWriter(path) as writer:
        add_item_chips(item, params, writer, read_whole)
    return path


def add_item_chips(
    item: dict[str, Any], params: PipelineParams, writer: ChipFileWriter, read_whole: bool = False
) -> None:
    """Co-register one item into the next location of ``writer``, block by block.

    See the module doc. An item that fails leaves nothing of it in the writer.
    """
    location_writer: LocationWriter | None = None

    def write(indexes: list[int], chips: dict[str, np.ndarray]) -> None:
        nonlocal location_writer
        if location_writer is None:
            location_writer = writer.open_location(
                {name: (c.shape[1:], c.dtype) for name, c in chips.items()}
            )
        location_writer.add(indexes, chips)

    try:
        location, layout = _chips(item, params, read_whole, write)
    except BaseException:
        if location_writer is not None:
            location_writer.abort()
        raise
    if layout is None:  # a picture
        writer.add(location)
        return
    location_writer = location_writer or writer.open_location(layout)
    location_writer.finish(
        location.header_fields(), location.transforms, location.bounds_lonlat, location.item_ids
    )


def _chips(
    item: dict[str, Any], params: PipelineParams, read_whole: bool, sink: ChipSink
) -> tuple[LocationChips, ChipLayout | None]:
    """Dispatch one item: a pair across collections, a paired source, or a picture.

    The chips of a pair or a paired source go to ``sink`` and the layout of their chips comes back;
    a picture's one chip is held.
    """
    pair_name = (item.get("properties") or {}).get(PAIR)
    if pair_name is not None:
        pair = params.coregister.pairs.get(pair_name)
        if pair is None:
            raise ItemError(
                item["id"], None, f"pair {pair_name!r} is not declared in pipeline.coregister.pairs"
            )
        return pair_chips(
            item,
            item.get(PARTNER_ITEMS) or [],
            pair_name,
            pair,
            params.coregister,
            read_whole,
            sink,
        )
    source_grid = params.coregister.sources.get(item["collection"])
    if source_grid is None:
        return picture_chips(item, params.pictures.chip_px, params.coregister.max_raster_px), None
    by_sensor = _sensor_assets(item, source_grid.reference)
    return _location_chips(
        item, by_sensor, source_grid, params.coregister, item["collection"], {}, read_whole, sink
    )


def pair_chips(
    item: dict[str, Any],
    partners: list[dict[str, Any]],
    name: str,
    pair: PairSource,
    params: CoregisterParams,
    read_whole: bool,
    sink: ChipSink,
) -> tuple[LocationChips, ChipLayout]:
    """A reference item and its partner items (pipeline/pairing.py) on the reference item's grid.

    The grid is the reference item's own; the partner items of one collection are mosaicked; the
    chips carry the partners' ids and acquisition times.
    """
    reference = _raster_sensors(item)
    if not reference:
        raise ItemError(item["id"], None, "no sensor asset to take the grid from")
    by_sensor = dict(reference)
    partner_ids: dict[str, list[str]] = {}
    for partner in partners:
        when = _item_datetime(partner)
        for sensor_name, assets in _raster_sensors(partner).items():
            if sensor_name in reference:
                raise ItemError(
                    item["id"],
                    None,
                    f"partner {partner['id']} holds the reference sensor {sensor_name}",
                )
            by_sensor.setdefault(sensor_name, []).extend(
                replace(a, datetime=a.datetime or when) for a in assets
            )
            partner_ids.setdefault(sensor_name, []).append(partner["id"])
    missing = [c for c in pair.partners if c not in {p["collection"] for p in partners}]
    if missing:
        raise ItemError(item["id"], None, f"no partner item of {missing} was fetched")
    grid = SourceGrid(
        reference=next(iter(reference)), chip_px=pair.chip_px, stride_px=pair.stride_px
    )
    return _location_chips(
        item,
        by_sensor,
        grid,
        params,
        name,
        {s: "+".join(ids) for s, ids in partner_ids.items()},
        read_whole,
        sink,
    )


def _location_chips(
    item: dict[str, Any],
    by_sensor: dict[str, list[SensorAsset]],
    source_grid: SourceGrid,
    params: CoregisterParams,
    source: str,
    item_ids: dict[str, str],
    read_whole: bool,
    sink: ChipSink,
) -> tuple[LocationChips, ChipLayout]:
    """Open every sensor's rasters and process the finest reference raster's grid by blocks.

    The reference sensor's rasters are opened first; the grid is processed block by block (module
    doc): each block's kept chips go to ``sink`` with their indexes among the grid's chip windows.
    Returns everything about the location but the chips (``sensors`` empty), and the chips' layout
    per sensor.
    """
    item_id = item["id"]
    rasters = {
        name: [_open_raster(item_id, asset, read_whole, params) for asset in assets]
        for name, assets in by_sensor.items()
    }
    reference_rasters = next(iter(rasters.values()))
    grid = min((r.grid for r in reference_rasters), key=lambda g: g.pixel_area)
    chip_px, stride_px = source_grid.chip_px, source_grid.stride_px
    count = math.prod(max(0, (n - chip_px) // stride_px + 1) for n in grid.shape)
    if count > MAX_CHIPS_PER_ITEM:
        raise ItemError(
            item_id,
            reference_rasters[0].asset.href,
            f"grid of {grid.shape[0]}x{grid.shape[1]} px cut into {chip_px} px chips "
            f"every {stride_px} px gives {count:,} chips, more than "
            f"{MAX_CHIPS_PER_ITEM:,} per item",
        )
    windows = chip_windows(grid.shape, chip_px, stride_px)
    if not windows:
        raise ItemError(
            item_id,
            reference_rasters[0].asset.href,
            f"grid of {grid.shape[0]}x{grid.shape[1]} px is smaller than one {chip_px} px chip",
        )
    qa_window = central_window(grid.shape, params.qa_window_px)
    reads = _Reads()
    kept: list[int] = []
    shifts: list[dict[str, object]] | None = None
    for block, indexes in chip_blocks(windows, grid.shape, stride_px, params.block_px):
        scenes = _block_scenes(item_id, rasters, grid, block, reads)
        local = [_within(windows[i], block) for i in indexes]
        keep = [
            (i, w)
            for i, w in zip(indexes, local, strict=True)
            if _nodata_share(scenes, w) <= params.max_nodata_share
        ]
        sink(
            [i for i, _ in keep],
            {s.sensor.name: _cut(s.data, [w for _, w in keep], chip_px) for s in scenes},
        )
        kept.extend(i for i, _ in keep)
        if shifts is None and _contains(block, qa_window):
            shifts = _shift_records(scenes, _within(qa_window, block), params.shift_flag_px)
    reads.check(item_id)
    if shifts is None:  # the QA window straddles blocks: warp it on its own
        scenes = _block_scenes(item_id, rasters, grid, qa_window, _Reads())
        shifts = _shift_records(
            scenes, Window(0, 0, qa_window.width, qa_window.height), params.shift_flag_px
        )
    kept.sort()
    transforms, bounds_lonlat = chip_georeference(grid, [windows[i] for i in kept])
    location = LocationChips(
        source=source,
        item_id=item_id,
        sensors={},
        crs=_crs_code(grid.crs),
        transforms=transforms,
        bounds_lonlat=bounds_lonlat,
        datetimes={
            name: rs[0].asset.datetime or _item_datetime(item) for name, rs in rasters.items()
        },
        dropped={NODATA_REASON: len(windows) - len(kept)},
        shifts=shifts,
        item_ids=item_ids,
    )
    return location, {
        name: ((rs[0].asset.sensor.num_bands, chip_px, chip_px), np.dtype(rs[0].asset.sensor.dtype))
        for name, rs in rasters.items()
    }


def chip_blocks(
    windows: list[Window], shape: tuple[int, int], stride_px: int, block_px: int
) -> list[tuple[Window, list[int]]]:
    """The chip windows of a grid of ``shape`` grouped into blocks.

    For each block: the indexes of its windows (row-major within it), and the window that holds them
    all. A block spans as many chip strides per side as fit in ``block_px`` (at least one chip);
    when every chip fits in one block (or ``block_px`` is 0), that block is the whole grid.
    """
    chip_px = windows[0].height
    per_side = max(1, (block_px - chip_px) // stride_px + 1)
    groups: dict[tuple[int, int], list[int]] = {}
    for index, window in enumerate(windows):
        key = (window.row_off // stride_px // per_side, window.col_off // stride_px // per_side)
        groups.setdefault(key, []).append(index)
    if block_px <= 0 or len(groups) == 1:
        return [(Window(0, 0, shape[1], shape[0]), list(range(len(windows))))]
    return [
        (_union([windows[i] for i in indexes]), indexes) for _, indexes in sorted(groups.items())
    ]


def _union(windows: list[Window]) -> Window:
    rows = min(w.row_off for w in windows), max(w.row_off + w.height for w in windows)
    cols = min(w.col_off for w in windows), max(w.col_off + w.width for w in windows)
    return Window(cols[0], rows[0], cols[1] - cols[0], rows[1] - rows[0])


def _within(window: Window, block: Window) -> Window:
    """``window`` (on the grid) relative to ``block``."""
    return Window(
        window.col_off - block.col_off, window.row_off - block.row_off, window.width, window.height
    )


def _contains(block: Window, window: Window) -> bool:
    return (
        block.col_off <= window.col_off
        and window.col_off + window.width <= block.col_off + block.width
        and block.row_off <= window.row_off
        and window.row_off + window.height <= block.row_off + block.height
    )


def _sensor_assets(item: dict[str, Any], reference: str) -> dict[str, list[SensorAsset]]:
    """The item's raster assets by registry sensor, masks left out.

    The reference sensor first (``reference`` names an asset key or a registry sensor), the others
    by name; within a sensor, the reference asset first.
    """
    by_sensor = _item_sensors(item)
    assets = {asset.key: asset for held in by_sensor.values() for asset in held}
    if reference in assets:
        reference_sensor, reference_key = assets[reference].sensor, reference
    elif reference in by_sensor:
        reference_sensor, reference_key = by_sensor[reference][0].sensor, None
    else:
        raise ItemError(
            item["id"],
            None,
            f"no reference asset {reference!r} (nor a sensor of "
            f"that name: the item holds {sorted(by_sensor)} in "
            f"assets {sorted(assets)})",
        )
    if reference_sensor.kind == "mask":
        what = "asset" if reference_key else "sensor"
        raise ItemError(
            item["id"],
            assets[reference].href if reference_key else None,
            f"reference {what} {reference!r} is a mask",
        )
    rasters = _raster_sensors(item)
    order = sorted(rasters, key=lambda name: (name != reference_sensor.name, name))
    return {name: sorted(rasters[name], key=lambda a: a.key != reference_key) for name in order}


def _raster_sensors(item: dict[str, Any]) -> dict[str, list[SensorAsset]]:
    """The item's assets by registry sensor, masks left out.

    Each sensor's assets are checked to hold each of its registry bands exactly once.
    """
    rasters = {
        name: assets
        for name, assets in _item_sensors(item).items()
        if assets[0].sensor.kind != "mask"
    }
    for name, assets in rasters.items():
        _check_band_cover(item["id"], name, assets)
    return rasters


def _item_sensors(item: dict[str, Any]) -> dict[str, list[SensorAsset]]:
    """:func:`catalogs.item_assets.sensor_assets` with its errors as ItemErrors."""
    try:
        return sensor_assets(item)
    except ItemReadError as error:
        raise ItemError(error.item_id, error.href, error.reason) from error


def _check_band_cover(item_id: str, sensor_name: str, assets: list[SensorAsset]) -> None:
    """The assets of one sensor must hold each of its registry bands exactly once."""
    held = sorted(name for asset in assets for name in asset.band_names)
    expected = sorted(assets[0].sensor.band_names)
    if held != expected:
        raise ItemError(
            item_id,
            None,
            f"the {sensor_name} assets hold bands {held}, the registry has {expected}",
        )


def _open_raster(
    item_id: str, asset: SensorAsset, read_whole: bool, params: CoregisterParams
) -> Raster:
    """Open a raster and check it against the registry and ``params.max_raster_px``.

    Read it whole if asked, or if it is no larger than a block (``params.block_px`` a side; 0: any
    raster).

    Raises:
        ItemError: unreadable (corrupt, truncated, missing) file, no CRS, no geotransform,
            band count or dtype unlike the asset and registry, more pixels than the limit;
            read whole, every pixel nodata.
    """
    whole = None
    with _opened(item_id, asset.href) as src:
        _check_header(item_id, asset, src)
        _check_size(item_id, asset.href, src.width, src.height, params.max_raster_px)
        grid = Grid(src.crs, src.transform, (src.height, src.width))
        small = read_once(src.height, src.width, params.block_px)
        if read_whole or small:
            whole = to_storage(src.read(_indexes(asset)), asset.radiometry, asset.sensor)
    if whole is not None and whole[1].all():
        raise ItemError(item_id, asset.href, "all pixels are nodata")
    return Raster(asset, grid, whole, small)


@contextmanager
def _opened(item_id: str, href: str) -> Iterator[rasterio.DatasetReader]:
    """The raster at ``href``, open.

    A GDAL error while it is used (corrupt, truncated, missing file) raises an ItemError naming the
    file.
    """
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", NotGeoreferencedWarning)
            with rasterio.open(href) as src:
                yield src
    except RasterioError as error:
        raise ItemError(
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


class _Reads:
    """What the blocks read of each raster.

    Whether its windows held data, whether any of it landed on the grid, and the extent read (to
    tell "all pixels are nodata" from "no data on the reference grid").
    """

    def __init__(self) -> None:
        self._rasters: dict[int, Raster] = {}
        self._source: dict[int, bool] = {}
        self._on_grid: dict[int, bool] = {}
        self._extent: dict[int, tuple[int, int, int, int]] = {}

    def record(
        self, raster: Raster, window: Window | None, source_data: bool, on_grid: bool
    ) -> None:
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
        """Raises ItemError for the first raster that had no data on the grid in any block."""
        for key, raster in self._rasters.items():
            if not self._on_grid[key]:
                whole = self._extent.get(key) == (0, 0, *raster.grid.shape)
                raise ItemError(
                    item_id,
                    raster.asset.href,
                    "all pixels are nodata"
                    if whole and not self._source[key]
                    else "no data on the reference grid",
                )


def _check_header(item_id: str, asset: SensorAsset, src: rasterio.DatasetReader) -> None:
    """Georeference, band count and dtype of an open raster against the asset and registry."""
    if src.crs is None:
        raise ItemError(item_id, asset.href, "no CRS")
    if src.transform == Affine.identity():
        raise ItemError(item_id, asset.href, "no geotransform")
    _check_layout(item_id, asset, src.count, np.dtype(src.dtypes[0]))


def _check_size(item_id: str, href: str, width: int, height: int, max_px: int) -> None:
    """A file's declared size (from its header, before any read) against the limit.

    A few bytes can declare a raster that no memory holds.
    """
    if width * height > max_px:
        raise ItemError(
            item_id,
            href,
            f"declares {width} x {height} px ({width * height:,}), "
            f"more than pipeline.coregister.max_raster_px "
            f"({max_px:,})",
        )


def _check_layout(item_id: str, asset: SensorAsset, count: int, dtype: np.dtype) -> None:
    """A file's band count and dtype against its asset and the registry.

    The band count must be the number of bands its asset names (all of the sensor's registry bands
    when it names none) or hold the bands it reads; a file already in the registry's storage must
    have a dtype that converts to it without loss.
    """
    sensor = asset.sensor
    if asset.indexes is not None:
        if max(asset.indexes) > count:
            raise ItemError(
                item_id, asset.href, f"{count} bands, the asset reads bands {list(asset.indexes)}"
            )
    elif count != len(asset.band_names):
        expected = (
            f"the registry's {sensor.name} has {sensor.num_bands}"
            if asset.band_names == sensor.band_names
            else f"the asset names {len(asset.band_names)} of the registry's {sensor.name}"
        )
        raise ItemError(item_id, asset.href, f"{count} bands, {expected}")
    if dtype.kind not in "iuf" or (
        asset.radiometry is None and not np.can_cast(dtype, sensor.dtype, "safe")
    ):
        raise ItemError(
            item_id,
            asset.href,
            f"dtype {dtype}, the registry's {sensor.name} stores {sensor.dtype}",
        )


def invalid_pixels(data: np.ndarray, sensor: Sensor) -> np.ndarray:
    """(rows, cols) mask of pixels where any band is the sensor's nodata value or not finite."""
    return nodata_mask(data, sensor.nodata)


def _block_scenes(
    item_id: str, rasters: dict[str, list[Raster]], grid: Grid, block: Window, reads: _Reads
) -> list[Scene]:
    """Every sensor on ``block`` of ``grid``, reference sensor first."""
    block_grid = Grid(
        grid.crs, window_transform(block, grid.transform), (int(block.height), int(block.width))
    )
    return [
        _scene(item_id, sensor_rasters, grid, block, block_grid, reads)
        for sensor_rasters in rasters.values()
    ]


def _scene(
    item_id: str, rasters: list[Raster], grid: Grid, block: Window, block_grid: Grid, reads: _Reads
) -> Scene:
    """All registry bands of one sensor on ``block_grid``, stacked in registry order.

    Rasters already on the grid are used as read, the others warped. Several rasters holding the
    same bands (partner items of one acquisition) are mosaicked: each pixel from the first raster,
    in order, with data there.
    """
    sensor = rasters[0].asset.sensor
    layers = [_on_block(item_id, raster, grid, block, block_grid, reads) for raster in rasters]
    if len(rasters) == 1 and rasters[0].asset.band_names == sensor.band_names:
        return Scene(sensor, *layers[0], rasters[0].asset.datetime)
    if sum(len(r.asset.band_names) for r in rasters) == sensor.num_bands:  # bands held once
        data = np.empty((sensor.num_bands, *block_grid.shape), dtype=sensor.dtype)
        for raster, (values, _) in zip(rasters, layers, strict=True):
            data[[sensor.band_names.index(name) for name in raster.asset.band_names]] = values
        invalid = np.logical_or.reduce([mask for _, mask in layers])
        return Scene(sensor, data, invalid, rasters[0].asset.datetime)
    data = _nodata_filled(sensor, (sensor.num_bands, *block_grid.shape))
    filled = np.zeros(data.shape, dtype=bool)
    for raster, (values, invalid) in zip(rasters, layers, strict=True):
        for layer, name in zip(values, raster.asset.band_names, strict=True):
            band = sensor.band_names.index(name)
            take = ~invalid & ~filled[band]
            data[band][take] = layer[take]
            filled[band] |= take
    return Scene(sensor, data, ~filled.all(axis=0), rasters[0].asset.datetime)


def _nodata_filled(sensor: Sensor, shape: tuple[int, ...]) -> np.ndarray:
    """An array of ``shape`` in the sensor's storage dtype holding its nodata value.

    A sensor without one gets 0.
    """
    return np.full(shape, 0 if sensor.nodata is None else sensor.nodata, dtype=sensor.dtype)


def _on_block(
    item_id: str, raster: Raster, grid: Grid, block: Window, block_grid: Grid, reads: _Reads
) -> tuple[np.ndarray, np.ndarray]:
    """A raster's bands on ``block_grid`` (``block`` of ``grid``) and its pixels without data there.

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
        window = source_window(
            raster.grid, block_grid, source_margin_px(raster.grid, block_grid, sensor)
        )
    values, invalid = (None, None) if window is None else _read_window(item_id, raster, window)
    if values is None or invalid.all():
        reads.record(raster, window, False, False)
        empty = _nodata_filled(sensor, (len(raster.asset.band_names), *block_grid.shape))
        return empty, np.ones(block_grid.shape, dtype=bool)
    window_grid = Grid(
        raster.grid.crs,
        window_transform(window, raster.grid.transform),
        (int(window.height), int(window.width)),
    )
    data, warped_invalid = warp(
        values, window_grid, block_grid, sensor, has_nodata=bool(invalid.any())
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


def chip_windows(shape: tuple[int, int], chip_px: int, stride_px: int) -> list[Window]:
    """Windows of ``chip_px`` every ``stride_px`` over a grid of ``shape``, row by row.

    Only windows that fit inside the grid.
    """
    rows, cols = shape
    return [
        Window(col, row, chip_px, chip_px)
        for row in range(0, rows - chip_px + 1, stride_px)
        for col in range(0, cols - chip_px + 1, stride_px)
    ]


def _nodata_share(scenes: list[Scene], window: Window) -> float:
    """The largest share of pixels without data of any sensor inside ``window``."""
    rows, cols = window.toslices()
    return max(float(np.count_nonzero(s.invalid[rows, cols])) for s in scenes) / (
        window.height * window.width
    )


def _cut(data: np.ndarray, windows: list[Window], chip_px: int) -> np.ndarray:
    """(K, bands, chip_px, chip_px) chips of a (bands, rows, cols) scene."""
    if not windows:
        return np.empty((0, data.shape[0], chip_px, chip_px), dtype=data.dtype)
    return np.stack([data[(slice(None), *w.toslices())] for w in windows])


def chip_georeference(grid: Grid, windows: list[Window]) -> tuple[np.ndarray, np.ndarray]:
    """The (K, 6) affine coefficients and (K, 4) lon/lat bounds of each window of ``grid``.

    The bounds are (west, south, east, north).
    """
    transforms = np.array(
        [tuple(window_transform(w, grid.transform))[:6] for w in windows], dtype=np.float64
    ).reshape(-1, 6)
    bounds = np.array(
        [transform_bounds(grid.crs, LONLAT, *window_bounds(w, grid.transform)) for w in windows],
        dtype=np.float64,
    ).reshape(-1, 4)
    return transforms, bounds


def _crs_code(crs: CRS) -> str:
    """``EPSG:<code>`` of ``crs``, or its WKT where it has no EPSG code."""
    code = crs.to_epsg()
    return f"EPSG:{code}" if code is not None else crs.to_wkt()


def central_window(shape: tuple[int, int], size_px: int) -> Window:
    """The window of at most ``size_px`` x ``size_px`` in the middle of a grid of ``shape``."""
    rows, cols = (min(n, size_px) for n in shape)
    return Window((shape[1] - cols) // 2, (shape[0] - rows) // 2, cols, rows)


def _shift_records(scenes: list[Scene], window: Window, flag_px: float) -> list[dict[str, object]]:
    """QA rows: the residual shift of each secondary scene against the first (the reference).

    Measured inside ``window``; flagged above ``flag_px``.
    """
    reference, *secondaries = scenes
    reference_image = _structure(reference, window)
    records = []
    for secondary in secondaries:
        dy, dx = residual_shift(reference_image, _structure(secondary, window))
        shift = math.hypot(dy, dx)
        records.append(
            {
                "reference": reference.sensor.name,
                "secondary": secondary.sensor.name,
                "dy_px": dy,
                "dx_px": dx,
                "shift_px": shift,
                "flagged": shift > flag_px,
            }
        )
    return records


def _structure(scene: Scene, window: Window) -> np.ndarray:
    """One (rows, cols) image of a scene inside ``window`` for the QA.

    The mean of its bands, NaN without data.
    """
    rows, cols = window.toslices()
    image = scene.data[:, rows, cols].mean(axis=0, dtype=np.float32)
    image[scene.invalid[rows, cols]] = np.nan
    return image


def _item_datetime(item: dict[str, Any]) -> str | None:
    """The item's ``datetime``, else its ``start_datetime``, else None."""
    properties = item.get("properties", {})
    return iso_datetime(properties.get("datetime")) or iso_datetime(
        properties.get("start_datetime")
    )


def picture_chips(item: dict[str, Any], chip_px: int, max_px: int) -> LocationChips:
    """One chip of a picture without georeference.

    The picture is centre-cropped to a square and resized to ``chip_px`` (Lanczos); pictures of more
    than ``max_px`` pixels are refused before they are decoded. A JPEG at least twice the chip's
    size is decoded at a reduced size (the codec's own 1/2, 1/4 or 1/8 scaling, in the DCT) no
    smaller than the chip: a fraction of the work of a full decode, and a better downsampling than
    Lanczos over the skipped pixels.
    """
    asset = _picture_asset(item)
    image = _read_picture(item["id"], asset, max_px, chip_px)
    side = min(image.size)
    if image.width != image.height:
        left, top = (image.width - side) // 2, (image.height - side) // 2
        image = image.crop((left, top, left + side, top + side))
    if image.mode in ("L", "RGB"):  # resized all bands at once: the same values as one by one
        chip = np.asarray(_resized(image, chip_px))
        # Bands first in memory too: encoding and statistics then read the chip as it is
        # (they copied a strided chip's bands first, 0.1 ms a picture).
        chip = chip[None] if chip.ndim == 2 else np.ascontiguousarray(chip.transpose(2, 0, 1))
    else:  # band by band, so that no band is taken for alpha
        chip = np.stack([np.asarray(_resized(band, chip_px)) for band in image.split()])
    return LocationChips(
        source=item["collection"],
        item_id=item["id"],
        sensors={asset.sensor.name: chip[None]},
        crs=None,
        transforms=np.full((1, 6), np.nan),
        bounds_lonlat=np.full((1, 4), np.nan),
        datetimes={asset.sensor.name: asset.datetime or _item_datetime(item)},
        dropped={NODATA_REASON: 0},
    )


def _resized(square: Image.Image, chip_px: int) -> Image.Image:
    """A square picture resized to ``chip_px`` a side (Lanczos).

    One of that size already is returned as it is (half the pictures once decoded at a reduced size;
    Pillow would copy it).
    """
    if square.size == (chip_px, chip_px):
        return square
    return square.resize((chip_px, chip_px), PICTURE_RESAMPLING)


def _picture_asset(item: dict[str, Any]) -> SensorAsset:
    """The one picture asset of an unpaired item."""
    pictures = [
        asset
        for assets in _item_sensors(item).values()
        for asset in assets
        if asset.sensor.kind != "mask"
    ]
    if len(pictures) != 1:
        raise ItemError(
            item["id"],
            None,
            f"{len(pictures)} picture assets {[a.key for a in pictures]}, expected 1",
        )
    return pictures[0]


def _read_picture(item_id: str, asset: SensorAsset, max_px: int, chip_px: int) -> Image.Image:
    """A picture file decoded (a palette turned into its colours), checked against the registry.

    A JPEG is decoded at a reduced size whose short side is still ``chip_px`` or more.

    Raises:
        ItemError: unreadable (corrupt, truncated, missing) file, more pixels than ``max_px``
            or than PIL decodes (its decompression-bomb limit), or band count or dtype unlike
            the registry.
    """
    try:
        with Image.open(asset.href) as image:
            _check_size(item_id, asset.href, *image.size, max_px)
            scale = chip_px / min(image.size)
            image.draft(
                image.mode, (math.ceil(image.width * scale), math.ceil(image.height * scale))
            )
            image.load()
            # A palette is an encoding of colours, not a band: decode it. (The pixels are
            # loaded: they outlive the file, which is all that leaving the block closes.)
            decoded = image.convert("RGB") if image.mode == "P" else image
    except Image.DecompressionBombError as error:
        raise ItemError(item_id, asset.href, f"picture too large to decode ({error})") from error
    except (OSError, UnidentifiedImageError, ValueError) as error:
        raise ItemError(item_id, asset.href, f"unreadable picture ({error})") from error
    # The dtype numpy reads a band in, from one pixel (not a copy of a whole band).
    _check_layout(
        item_id,
        asset,
        len(decoded.getbands()),
        np.asarray(decoded.crop((0, 0, 1, 1)).getchannel(0)).dtype,
    )
    return decoded
