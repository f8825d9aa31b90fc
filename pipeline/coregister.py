"""Co-registration: the sensors of one location warped onto one reference grid and cut into chips.

Each raster is read once, whole (so a truncated file fails here, not in a later chip); each
secondary is warped once per location by GDAL (through rasterio) onto the reference sensor's
grid with the registry's resampling rule of that secondary; chips are slices of those scenes.
The QA measures each secondary's residual shift in the central window of the grid
(``qa_window_px``): the shift of a pair is one number for the scene, and a window keeps its
cost fixed however large the scene. Items without georeference (pictures) become one
centre-cropped, resized chip.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import rasterio
from affine import Affine
from PIL import Image, UnidentifiedImageError
from rasterio.crs import CRS
from rasterio.enums import Resampling
from rasterio.errors import NotGeoreferencedWarning, RasterioError
from rasterio.warp import reproject, transform_bounds
from rasterio.windows import Window
from rasterio.windows import bounds as window_bounds
from rasterio.windows import transform as window_transform

from catalogs.item_assets import (
    ItemReadError,
    SensorAsset,
    iso_datetime,
    nodata_mask,
    sensor_assets,
    to_storage,
)
from catalogs.sensors import Sensor
from pipeline.chips import LocationChips
from pipeline.failures import ItemError
from pipeline.pairing import PAIR
from pipeline.params import CoregisterParams, PairSource, PipelineParams, SourceGrid
from pipeline.qa import residual_shift

LONLAT = CRS.from_epsg(4326)
PARTNER_ITEMS = "msgfm:partner_items"  # a pair's reference item: its partner items (whole)
NODATA_REASON = "nodata"  # key of LocationChips.dropped for chips with too much nodata
DB_TO_LN = np.float32(math.log(10.0) / 10.0)  # 10 ** (dB / 10) == exp(dB * DB_TO_LN)
PICTURE_RESAMPLING = Image.Resampling.LANCZOS
# GDAL resampling methods whose every output lies within the range of the source values used.
CONVEX_METHODS = frozenset({"nearest", "bilinear", "average", "mode", "min", "max", "med"})


@dataclass(frozen=True)
class Grid:
    """A pixel grid: CRS, affine transform (pixel corner -> map) and (rows, cols)."""

    crs: CRS
    transform: Affine
    shape: tuple[int, int]

    @property
    def pixel_area(self) -> float:
        """Area of one pixel in CRS units squared (smaller is finer)."""
        return abs(self.transform.determinant)


@dataclass(frozen=True)
class Raster:
    """A raster asset read into memory: (bands, rows, cols) in the sensor's storage dtype, and
    the (rows, cols) mask of its pixels without data."""

    asset: SensorAsset
    data: np.ndarray
    grid: Grid
    invalid: np.ndarray


@dataclass(frozen=True)
class Scene:
    """One sensor on the reference grid: all its registry bands and the pixels without data."""

    sensor: Sensor
    data: np.ndarray
    invalid: np.ndarray
    datetime: str | None


def coregister_item(item: dict[str, Any], params: PipelineParams) -> LocationChips:
    """The chips of one catalog item: every sensor on one grid, or one picture chip.

    Args:
        item: STAC item dict; ``collection`` is the source id, each asset has an absolute
            local ``href``. A reference item of a pair across collections (``msgfm:pair``)
            carries its partner items under :data:`PARTNER_ITEMS`.
        params: pipeline parameters (``coregister`` for paired sources, ``pictures`` else).

    Returns:
        The location's chips, ``sensors`` keyed reference sensor first.

    Raises:
        ItemError: naming the item, the file and the reason, for input that cannot be used.
    """
    pair_name = (item.get("properties") or {}).get(PAIR)
    if pair_name is not None:
        pair = params.coregister.pairs.get(pair_name)
        if pair is None:
            raise ItemError(item["id"], None, f"pair {pair_name!r} is not declared in "
                                              "pipeline.coregister.pairs")
        return pair_chips(item, item.get(PARTNER_ITEMS) or [], pair_name, pair,
                          params.coregister)
    source_grid = params.coregister.sources.get(item["collection"])
    if source_grid is None:
        return picture_chips(item, params.pictures.chip_px)
    return paired_chips(item, source_grid, params.coregister)


def paired_chips(item: dict[str, Any], source_grid: SourceGrid,
                 params: CoregisterParams) -> LocationChips:
    """Warp every sensor of ``item`` onto its reference grid and cut chips (see module doc)."""
    by_sensor = _sensor_assets(item, source_grid.reference)
    return _location_chips(item, by_sensor, source_grid, params, item["collection"], {})


def pair_chips(item: dict[str, Any], partners: list[dict[str, Any]], name: str,
               pair: PairSource, params: CoregisterParams) -> LocationChips:
    """A reference item and its partner items (pipeline/pairing.py) on the reference item's
    own grid: the partner items of one collection are mosaicked, the chips carry the
    partners' ids and acquisition times."""
    reference = {n: a for n, a in _item_sensors(item).items() if a[0].sensor.kind != "mask"}
    if not reference:
        raise ItemError(item["id"], None, "no sensor asset to take the grid from")
    for sensor_name, assets in reference.items():
        _check_band_cover(item["id"], sensor_name, assets)
    by_sensor = dict(reference)
    partner_ids: dict[str, list[str]] = {}
    for partner in partners:
        when = _item_datetime(partner)
        for sensor_name, assets in _item_sensors(partner).items():
            if assets[0].sensor.kind == "mask":
                continue
            if sensor_name in reference:
                raise ItemError(item["id"], None, f"partner {partner['id']} holds the "
                                                  f"reference sensor {sensor_name}")
            _check_band_cover(partner["id"], sensor_name, assets)
            by_sensor.setdefault(sensor_name, []).extend(
                replace(a, datetime=a.datetime or when) for a in assets)
            partner_ids.setdefault(sensor_name, []).append(partner["id"])
    missing = [c for c in pair.partners if c not in {p["collection"] for p in partners}]
    if missing:
        raise ItemError(item["id"], None, f"no partner item of {missing} was fetched")
    grid = SourceGrid(reference=next(iter(reference)), chip_px=pair.chip_px,
                      stride_px=pair.stride_px)
    return _location_chips(item, by_sensor, grid, params, name,
                           {s: "+".join(ids) for s, ids in partner_ids.items()})


def _location_chips(item: dict[str, Any], by_sensor: dict[str, list[SensorAsset]],
                    source_grid: SourceGrid, params: CoregisterParams, source: str,
                    item_ids: dict[str, str]) -> LocationChips:
    """Read every sensor's assets (reference sensor first), put them on the finest reference
    raster's grid, keep the chips where every sensor has data, measure the shifts."""
    rasters = {name: [_read_raster(item["id"], asset) for asset in assets]
               for name, assets in by_sensor.items()}
    reference_rasters = next(iter(rasters.values()))
    grid = min((r.grid for r in reference_rasters), key=lambda g: g.pixel_area)
    windows = chip_windows(grid.shape, source_grid.chip_px, source_grid.stride_px)
    if not windows:
        raise ItemError(item["id"], reference_rasters[0].asset.href,
                        f"grid of {grid.shape[0]}x{grid.shape[1]} px is smaller than one "
                        f"{source_grid.chip_px} px chip")
    reference, *secondaries = [_scene(item["id"], sensor_rasters, grid)
                               for sensor_rasters in rasters.values()]
    scenes = [reference, *secondaries]
    kept = [w for w in windows if _nodata_share(scenes, w) <= params.max_nodata_share]
    transforms, bounds_lonlat = chip_georeference(grid, kept)
    qa_window = central_window(grid.shape, params.qa_window_px)
    reference_image = _structure(reference, qa_window)
    return LocationChips(
        source=source, item_id=item["id"],
        sensors={s.sensor.name: _cut(s.data, kept, source_grid.chip_px) for s in scenes},
        crs=_crs_code(grid.crs), transforms=transforms, bounds_lonlat=bounds_lonlat,
        datetimes={s.sensor.name: s.datetime or _item_datetime(item) for s in scenes},
        dropped={NODATA_REASON: len(windows) - len(kept)},
        shifts=[_shift_record(reference.sensor.name, reference_image, s, qa_window,
                              params.shift_flag_px) for s in secondaries],
        item_ids=item_ids)


def _sensor_assets(item: dict[str, Any], reference: str) -> dict[str, list[SensorAsset]]:
    """The item's raster assets by registry sensor, masks left out: the reference sensor
    first (``reference`` names an asset key or a registry sensor), the others by name; within
    a sensor, the reference asset first."""
    by_sensor = _item_sensors(item)
    assets = {asset.key: asset for held in by_sensor.values() for asset in held}
    if reference in assets:
        reference_sensor, reference_key = assets[reference].sensor, reference
    elif reference in by_sensor:
        reference_sensor, reference_key = by_sensor[reference][0].sensor, None
    else:
        raise ItemError(item["id"], None, f"no reference asset {reference!r} (nor a sensor of "
                                          f"that name: the item holds {sorted(by_sensor)} in "
                                          f"assets {sorted(assets)})")
    if reference_sensor.kind == "mask":
        what = "asset" if reference_key else "sensor"
        raise ItemError(item["id"], assets[reference].href if reference_key else None,
                        f"reference {what} {reference!r} is a mask")
    ordered = sorted(assets.values(), key=lambda a: (a.sensor.name != reference_sensor.name,
                                                      a.sensor.name, a.key != reference_key))
    rasters: dict[str, list[SensorAsset]] = {}
    for asset in ordered:
        if asset.sensor.kind != "mask":
            rasters.setdefault(asset.sensor.name, []).append(asset)
    for name, assets_of_sensor in rasters.items():
        _check_band_cover(item["id"], name, assets_of_sensor)
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
        raise ItemError(item_id, None, f"the {sensor_name} assets hold bands {held}, the "
                                       f"registry has {expected}")


def _read_raster(item_id: str, asset: SensorAsset) -> Raster:
    """Read a whole raster, checking it against the registry, in the registry's storage.

    Raises:
        ItemError: unreadable (corrupt, truncated, missing) file, no CRS, no geotransform,
            band count or dtype unlike the asset and registry, or every pixel nodata.
    """
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", NotGeoreferencedWarning)
            with rasterio.open(asset.href) as src:
                _check_header(item_id, asset, src)
                data = src.read(list(asset.indexes) if asset.indexes else None)
                grid = Grid(src.crs, src.transform, (src.height, src.width))
    except RasterioError as error:
        raise ItemError(item_id, asset.href,
                        f"unreadable GeoTIFF ({error.__cause__ or error})") from error
    data, invalid = to_storage(data, asset.radiometry, asset.sensor)
    if invalid.all():
        raise ItemError(item_id, asset.href, "all pixels are nodata")
    return Raster(asset, data, grid, invalid)


def _check_header(item_id: str, asset: SensorAsset, src: rasterio.DatasetReader) -> None:
    """Georeference, band count and dtype of an open raster against the asset and registry."""
    if src.crs is None:
        raise ItemError(item_id, asset.href, "no CRS")
    if src.transform == Affine.identity():
        raise ItemError(item_id, asset.href, "no geotransform")
    _check_layout(item_id, asset, src.count, np.dtype(src.dtypes[0]))


def _check_layout(item_id: str, asset: SensorAsset, count: int, dtype: np.dtype) -> None:
    """A file's band count must be the number of bands its asset names (all of the sensor's
    registry bands when it names none) or hold the bands it reads; a file already in the
    registry's storage must have a dtype that converts to it without loss."""
    sensor = asset.sensor
    if asset.indexes is not None:
        if max(asset.indexes) > count:
            raise ItemError(item_id, asset.href, f"{count} bands, the asset reads bands "
                                                 f"{list(asset.indexes)}")
    elif count != len(asset.band_names):
        expected = (f"the registry's {sensor.name} has {sensor.num_bands}"
                    if asset.band_names == sensor.band_names
                    else f"the asset names {len(asset.band_names)} of the registry's "
                         f"{sensor.name}")
        raise ItemError(item_id, asset.href, f"{count} bands, {expected}")
    if dtype.kind not in "iuf" or (asset.radiometry is None
                                   and not np.can_cast(dtype, sensor.dtype, "safe")):
        raise ItemError(item_id, asset.href,
                        f"dtype {dtype}, the registry's {sensor.name} stores {sensor.dtype}")


def invalid_pixels(data: np.ndarray, sensor: Sensor) -> np.ndarray:
    """(rows, cols) mask of pixels where any band is the sensor's nodata value or NaN."""
    return nodata_mask(data, sensor.nodata)


def _scene(item_id: str, rasters: list[Raster], grid: Grid) -> Scene:
    """All registry bands of one sensor on ``grid``: rasters already on it are used as read,
    the others warped; bands are stacked in registry order. Several rasters holding the same
    bands (partner items of one acquisition) are mosaicked: each pixel from the first raster,
    in order, with data there."""
    sensor = rasters[0].asset.sensor
    if sum(len(r.asset.band_names) for r in rasters) > sensor.num_bands:
        return _mosaic(item_id, rasters, grid)
    layers = [_on_grid(item_id, raster, grid) for raster in rasters]
    if len(rasters) == 1 and rasters[0].asset.band_names == sensor.band_names:
        data, invalid = layers[0]
    else:
        data = np.empty((sensor.num_bands, *grid.shape), dtype=sensor.dtype)
        for raster, (values, _) in zip(rasters, layers, strict=True):
            data[[sensor.band_names.index(name) for name in raster.asset.band_names]] = values
        invalid = np.logical_or.reduce([mask for _, mask in layers])
    return Scene(sensor, data, invalid, rasters[0].asset.datetime)


def _mosaic(item_id: str, rasters: list[Raster], grid: Grid) -> Scene:
    """One sensor's scene from rasters that overlap in bands: the first with data wins; a
    raster without data on ``grid`` adds nothing; a pixel lacking any band has no data."""
    sensor = rasters[0].asset.sensor
    data = np.full((sensor.num_bands, *grid.shape),
                   0 if sensor.nodata is None else sensor.nodata, dtype=sensor.dtype)
    filled = np.zeros(data.shape, dtype=bool)
    for raster in rasters:
        try:
            values, invalid = _on_grid(item_id, raster, grid)
        except ItemError:
            continue  # a slice beside the grid
        for layer, name in zip(values, raster.asset.band_names, strict=True):
            band = sensor.band_names.index(name)
            take = ~invalid & ~filled[band]
            data[band][take] = layer[take]
            filled[band] |= take
    invalid = ~filled.all(axis=0)
    if invalid.all():
        raise ItemError(item_id, None, f"no {sensor.name} data on the reference grid")
    return Scene(sensor, data, invalid, rasters[0].asset.datetime)


def _on_grid(item_id: str, raster: Raster, grid: Grid) -> tuple[np.ndarray, np.ndarray]:
    """A raster's bands on ``grid`` and its pixels without data there.

    Raises:
        ItemError: if the raster has no data on ``grid`` (they do not overlap).
    """
    if raster.grid == grid:
        return raster.data, raster.invalid
    data, invalid = warp(raster.data, raster.grid, grid, raster.asset.sensor,
                         has_nodata=bool(raster.invalid.any()))
    if invalid.all():
        raise ItemError(item_id, raster.asset.href, "no data on the reference grid")
    return data, invalid


def warp(data: np.ndarray, src_grid: Grid, dst_grid: Grid, sensor: Sensor,
         has_nodata: bool = True) -> tuple[np.ndarray, np.ndarray]:
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
    values = values.astype(sensor.dtype, copy=False)
    invalid = invalid_pixels(values, sensor)
    if len(out) > count:
        invalid |= out[count] == 0
    return values, invalid


def gdal_reproject(source: np.ndarray, src_grid: Grid, dst_grid: Grid, sensor: Sensor,
                   has_nodata: bool) -> np.ndarray:
    """GDAL's part of :func:`warp`: ``source`` reprojected onto ``dst_grid`` with the sensor's
    resampling method, one thread, plus an alpha band (0 where uncovered) for a sensor
    without nodata.

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
    reproject(source, out, src_transform=src_grid.transform, src_crs=src_grid.crs,
              dst_transform=dst_grid.transform, dst_crs=dst_grid.crs,
              resampling=Resampling[sensor.resampling.method],
              src_nodata=sensor.nodata if has_nodata else None, dst_nodata=sensor.nodata,
              dst_alpha=alpha_band, num_threads=1)
    return out


def chip_windows(shape: tuple[int, int], chip_px: int, stride_px: int) -> list[Window]:
    """Windows of ``chip_px`` every ``stride_px`` over a grid of ``shape``, row by row; only
    windows that fit inside the grid."""
    rows, cols = shape
    return [Window(col, row, chip_px, chip_px)
            for row in range(0, rows - chip_px + 1, stride_px)
            for col in range(0, cols - chip_px + 1, stride_px)]


def _nodata_share(scenes: list[Scene], window: Window) -> float:
    """The largest share of pixels without data of any sensor inside ``window``."""
    rows, cols = window.toslices()
    return max(float(np.count_nonzero(s.invalid[rows, cols])) for s in scenes) / (
        window.height * window.width)


def _cut(data: np.ndarray, windows: list[Window], chip_px: int) -> np.ndarray:
    """(K, bands, chip_px, chip_px) chips of a (bands, rows, cols) scene."""
    if not windows:
        return np.empty((0, data.shape[0], chip_px, chip_px), dtype=data.dtype)
    return np.stack([data[(slice(None), *w.toslices())] for w in windows])


def chip_georeference(grid: Grid, windows: list[Window]) -> tuple[np.ndarray, np.ndarray]:
    """(K, 6) affine coefficients and (K, 4) lon/lat bounds (west, south, east, north) of
    each window of ``grid``."""
    transforms = np.array([tuple(window_transform(w, grid.transform))[:6] for w in windows],
                          dtype=np.float64).reshape(-1, 6)
    bounds = np.array([transform_bounds(grid.crs, LONLAT, *window_bounds(w, grid.transform))
                       for w in windows], dtype=np.float64).reshape(-1, 4)
    return transforms, bounds


def _crs_code(crs: CRS) -> str:
    """``EPSG:<code>`` of ``crs``, or its WKT where it has no EPSG code."""
    code = crs.to_epsg()
    return f"EPSG:{code}" if code is not None else crs.to_wkt()


def central_window(shape: tuple[int, int], size_px: int) -> Window:
    """The window of at most ``size_px`` x ``size_px`` in the middle of a grid of ``shape``."""
    rows, cols = (min(n, size_px) for n in shape)
    return Window((shape[1] - cols) // 2, (shape[0] - rows) // 2, cols, rows)


def _shift_record(reference: str, reference_image: np.ndarray, secondary: Scene,
                  window: Window, flag_px: float) -> dict[str, object]:
    """QA row: the residual shift of ``secondary`` against the reference sensor inside
    ``window`` (``reference_image``, see :func:`_structure`); flagged above ``flag_px``."""
    dy, dx = residual_shift(reference_image, _structure(secondary, window))
    shift = math.hypot(dy, dx)
    return {"reference": reference, "secondary": secondary.sensor.name,
            "dy_px": dy, "dx_px": dx, "shift_px": shift, "flagged": shift > flag_px}


def _structure(scene: Scene, window: Window) -> np.ndarray:
    """One (rows, cols) image of a scene inside ``window`` for the QA: the mean of its bands,
    NaN without data."""
    rows, cols = window.toslices()
    image = scene.data[:, rows, cols].mean(axis=0, dtype=np.float32)
    image[scene.invalid[rows, cols]] = np.nan
    return image


def _item_datetime(item: dict[str, Any]) -> str | None:
    """The item's ``datetime``, else its ``start_datetime``, else None."""
    properties = item.get("properties", {})
    return (iso_datetime(properties.get("datetime"))
            or iso_datetime(properties.get("start_datetime")))


def picture_chips(item: dict[str, Any], chip_px: int) -> LocationChips:
    """One chip of a picture without georeference: centre-cropped to a square, resized to
    ``chip_px`` (Lanczos, band by band so no band is taken for alpha)."""
    asset = _picture_asset(item)
    bands = _read_picture(item["id"], asset)
    side = min(bands[0].size)
    left, top = (bands[0].width - side) // 2, (bands[0].height - side) // 2
    box = (left, top, left + side, top + side)
    chip = np.stack([np.asarray(band.crop(box).resize((chip_px, chip_px), PICTURE_RESAMPLING))
                     for band in bands])
    return LocationChips(
        source=item["collection"], item_id=item["id"], sensors={asset.sensor.name: chip[None]},
        crs=None, transforms=np.full((1, 6), np.nan), bounds_lonlat=np.full((1, 4), np.nan),
        datetimes={asset.sensor.name: asset.datetime or _item_datetime(item)},
        dropped={NODATA_REASON: 0})


def _picture_asset(item: dict[str, Any]) -> SensorAsset:
    """The one picture asset of an unpaired item."""
    pictures = [asset for assets in _item_sensors(item).values() for asset in assets
                if asset.sensor.kind != "mask"]
    if len(pictures) != 1:
        raise ItemError(item["id"], None, f"{len(pictures)} picture assets "
                                          f"{[a.key for a in pictures]}, expected 1")
    return pictures[0]


def _read_picture(item_id: str, asset: SensorAsset) -> list[Image.Image]:
    """The bands of a picture file, each a single-band PIL image, checked against the registry.

    Raises:
        ItemError: unreadable (corrupt, truncated, missing) file, or band count or dtype
            unlike the registry.
    """
    try:
        with Image.open(asset.href) as image:
            image.load()
            # A palette is an encoding of colours, not a band: decode it.
            bands = list((image.convert("RGB") if image.mode == "P" else image).split())
    except (OSError, UnidentifiedImageError, ValueError) as error:
        raise ItemError(item_id, asset.href, f"unreadable picture ({error})") from error
    _check_layout(item_id, asset, len(bands), np.asarray(bands[0]).dtype)
    return bands
