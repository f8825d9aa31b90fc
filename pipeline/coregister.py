"""Co-registration: the sensors of one location warped onto one reference grid and cut into chips.

The reference grid (the finest raster of the reference sensor) is processed in blocks of about
``block_px`` square, each a whole number of chip strides: every sensor is read onto each block
through the reading layer (:mod:`catalogs.scene_reading`: windowed reads warped with the
registry's resampling rule, so memory depends on the block size, not on the scene size); the
block's chips are cut, kept where every sensor has data, and handed on (to the chip file writer,
which encodes them at once). ``read_whole`` reads every raster whole first: the same chips, the
memory of a whole-scene read (the bench's baseline). Across CRSs the block layout is part of
what the chips are (GDAL approximates the reprojection per block). What a header declares is
checked before anything is allocated for it: a raster or picture of more than ``max_raster_px``
pixels, or a grid giving more than ``MAX_CHIPS_PER_ITEM`` chip windows, fails the item. The
reading layer's errors become the pipeline's ItemErrors with the same item, file and reason.

The QA measures each secondary's residual shift in the central window of the grid
(``qa_window_px``): the shift of a pair is one number for the scene, and a window keeps its
cost fixed however large the scene. Items without georeference (pictures) become one
centre-cropped, resized chip.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, UnidentifiedImageError
from rasterio.crs import CRS
from rasterio.warp import transform_bounds
from rasterio.windows import Window
from rasterio.windows import bounds as window_bounds
from rasterio.windows import transform as window_transform

from catalogs.grid import Grid
from catalogs.item_assets import ItemReadError, SensorAsset, iso_datetime, sensor_assets
from catalogs.scene_reading import (
    ReadLog,
    SensorBlock,
    check_layout,
    check_size,
    open_raster,
    raster_sensors,
    sensor_blocks,
)
from pipeline.chips import ChipFileWriter, LocationChips, LocationWriter
from pipeline.failures import ItemError
from pipeline.pairing import PAIR
from pipeline.params import CoregisterParams, PairSource, PipelineParams, SourceGrid
from pipeline.qa import residual_shift

LONLAT = CRS.from_epsg(4326)
PARTNER_ITEMS = "msgfm:partner_items"  # a pair's reference item: its partner items (whole)
NODATA_REASON = "nodata"  # key of LocationChips.dropped for chips with too much nodata
PICTURE_RESAMPLING = Image.Resampling.LANCZOS
# Chip windows listed per item at most: a stride far too short for the grid (1 px on a
# Sentinel-2 tile: 120 million windows) is refused before the list is made.
MAX_CHIPS_PER_ITEM = 1_000_000
MAX_RASTER_PX_NAME = "pipeline.coregister.max_raster_px"  # errors name the parameter


ChipSink = Callable[[list[int], dict[str, np.ndarray]], None]  # a block's chips and indexes
ChipLayout = dict[str, tuple[tuple[int, int, int], np.dtype]]  # sensor -> chip shape, dtype


@contextmanager
def _item_errors() -> Iterator[None]:
    """The reading layer's errors (catalogs' ItemReadError) as ItemErrors: same item, file, reason.

    Also a decorator: a function's own ItemReadErrors as ItemErrors.
    """
    try:
        yield
    except ItemReadError as error:
        raise ItemError(error.item_id, error.href, error.reason) from error


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


@_item_errors()
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
    reference = raster_sensors(item)
    if not reference:
        raise ItemError(item["id"], None, "no sensor asset to take the grid from")
    by_sensor = dict(reference)
    partner_ids: dict[str, list[str]] = {}
    for partner in partners:
        when = _item_datetime(partner)
        for sensor_name, assets in raster_sensors(partner).items():
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


@_item_errors()
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
        name: [
            open_raster(
                item_id,
                asset,
                max_raster_px=params.max_raster_px,
                block_px=params.block_px,
                read_whole=read_whole,
                limit_name=MAX_RASTER_PX_NAME,
            )
            for asset in assets
        ]
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
    reads = ReadLog()
    kept: list[int] = []
    shifts: list[dict[str, object]] | None = None
    for block, indexes in chip_blocks(windows, grid.shape, stride_px, params.block_px):
        sensors = sensor_blocks(item_id, rasters, grid, block, reads)
        local = [_within(windows[i], block) for i in indexes]
        keep = [
            (i, w)
            for i, w in zip(indexes, local, strict=True)
            if _nodata_share(sensors, w) <= params.max_nodata_share
        ]
        sink(
            [i for i, _ in keep],
            {s.sensor.name: _cut(s.data, [w for _, w in keep], chip_px) for s in sensors},
        )
        kept.extend(i for i, _ in keep)
        if shifts is None and _contains(block, qa_window):
            shifts = _shift_records(sensors, _within(qa_window, block), params.shift_flag_px)
    reads.check(item_id)
    if shifts is None:  # the QA window straddles blocks: warp it on its own
        sensors = sensor_blocks(item_id, rasters, grid, qa_window)
        shifts = _shift_records(
            sensors, Window(0, 0, qa_window.width, qa_window.height), params.shift_flag_px
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


@_item_errors()
def _sensor_assets(item: dict[str, Any], reference: str) -> dict[str, list[SensorAsset]]:
    """The item's raster assets by registry sensor, masks left out.

    The reference sensor first (``reference`` names an asset key or a registry sensor), the others
    by name; within a sensor, the reference asset first.
    """
    by_sensor = sensor_assets(item)
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
    rasters = raster_sensors(item)
    order = sorted(rasters, key=lambda name: (name != reference_sensor.name, name))
    return {name: sorted(rasters[name], key=lambda a: a.key != reference_key) for name in order}


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


def _nodata_share(sensors: list[SensorBlock], window: Window) -> float:
    """The largest share of pixels without data of any sensor inside ``window``."""
    rows, cols = window.toslices()
    return max(float(np.count_nonzero(s.invalid[rows, cols])) for s in sensors) / (
        window.height * window.width
    )


def _cut(data: np.ndarray, windows: list[Window], chip_px: int) -> np.ndarray:
    """(K, bands, chip_px, chip_px) chips of a (bands, rows, cols) block."""
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


def _shift_records(
    sensors: list[SensorBlock], window: Window, flag_px: float
) -> list[dict[str, object]]:
    """QA rows: the residual shift of each secondary sensor against the first (the reference).

    Measured inside ``window``; flagged above ``flag_px``.
    """
    reference, *secondaries = sensors
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


def _structure(sensor: SensorBlock, window: Window) -> np.ndarray:
    """One (rows, cols) image of a sensor inside ``window`` for the QA.

    The mean of its bands, NaN without data.
    """
    rows, cols = window.toslices()
    image = sensor.data[:, rows, cols].mean(axis=0, dtype=np.float32)
    image[sensor.invalid[rows, cols]] = np.nan
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


@_item_errors()
def _picture_asset(item: dict[str, Any]) -> SensorAsset:
    """The one picture asset of an unpaired item."""
    pictures = [
        asset
        for assets in sensor_assets(item).values()
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
            with _item_errors():  # an ItemError: not caught below as a ValueError
                check_size(item_id, asset.href, *image.size, max_px, MAX_RASTER_PX_NAME)
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
    with _item_errors():
        check_layout(
            item_id,
            asset,
            len(decoded.getbands()),
            np.asarray(decoded.crop((0, 0, 1, 1)).getchannel(0)).dtype,
        )
    return decoded
