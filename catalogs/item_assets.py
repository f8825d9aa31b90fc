"""Any STAC item -> registry sensors: which sensor and bands each asset holds.

Also the radiometry that takes each asset's pixels to the registry's storage.

Items come two ways. Our builders tag each asset with ``msgfm:sensor`` and write the registry's
storage values. Public APIs (Earth Search, Planetary Computer, CDSE) publish one sensor per
collection with standard metadata only: the sensor is found by the registry's STAC match rules,
each asset band by its ``name``, ``common_name`` or centre wavelength (``eo:bands`` of STAC 1.0
or ``bands`` of STAC 1.1), and the radiometry from ``raster:bands`` (or STAC 1.1 band fields)
plus the publishers' known quirks (:func:`sentinel2_offset`). Non-data assets (thumbnails,
previews, metadata, tiles, quality masks) are left out. Both pipeline/ and model/ read items
through this module.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import numpy as np
from pyproj import CRS
from pyproj.exceptions import CRSError

from catalogs.sensors import Band, Sensor, registry
from catalogs.stac import SENSOR_FIELD

# Assets that are never pixels of a sensor, whatever their roles say (Planetary Computer gives
# its 8-bit true-colour ``visual`` the role "data").
NON_DATA_KEYS = frozenset(
    {"visual", "thumbnail", "preview", "rendered_preview", "tilejson", "overview"}
)
NON_DATA_ROLES = frozenset({"visual", "thumbnail", "overview", "metadata", "tiles"})
NOT_GEOCODED = "not geocoded: use a terrain-corrected product such as sentinel-1-rtc"
S2_BASELINE_WITH_OFFSET = 4.0  # processing baseline 04.00 added BOA/RADIO_ADD_OFFSET = -1000 DN
S2_ADD_OFFSET_DN = -1000.0
# Item properties saying the publisher already subtracted the Sentinel-2 offset from the pixels.
S2_OFFSET_APPLIED = ("earthsearch:boa_offset_applied",)


class ItemReadError(ValueError):
    """An item cannot be read as registry sensors: names the item, the href (if one) and why."""

    def __init__(self, item_id: str, href: str | None, reason: str) -> None:
        """Initialize a new ItemReadError instance.

        Args:
            item_id: the item's id.
            href: the file that cannot be read; None for the item itself.
            reason: why the item cannot be read.
        """
        where = f"item {item_id!r}" + (f", {href}" if href else "")
        super().__init__(f"{where}: {reason}")
        self.item_id = item_id
        self.href = href
        self.reason = reason


@dataclass(frozen=True)
class Radiometry:
    """How an asset's pixel values become the sensor's physical unit.

    ``value * scale + offset``, in linear power (converted to dB) when ``linear_power``; ``nodata``
    marks pixels without data.
    """

    scale: float
    offset: float
    nodata: float | None
    linear_power: bool = False


@dataclass(frozen=True)
class SensorAsset:
    """One asset of an item as the registry sees it.

    ``band_names`` are the registry bands the asset holds, in the order ``indexes`` (1-based
    file bands) reads them; ``indexes`` is None when the file holds exactly those bands.
    ``radiometry`` is None when the file already holds the registry's storage values.
    """

    key: str
    href: str
    sensor: Sensor
    band_names: tuple[str, ...]
    indexes: tuple[int, ...] | None
    radiometry: Radiometry | None
    datetime: str | None
    media_type: str | None = None


def sensor_assets(item: dict[str, Any]) -> dict[str, list[SensorAsset]]:
    """The item's assets by registry sensor name (masks included).

    Tagged assets in item order, published ones in the order of the registry bands they hold.

    Raises:
        ItemReadError: an unknown ``msgfm:sensor``; an item that matches no sensor of the
            registry or several; a SAR product that is not geocoded; assets whose bands do
            not cover their sensor's registry bands exactly once.
    """
    tagged = [key for key, asset in item.get("assets", {}).items() if SENSOR_FIELD in asset]
    if tagged:
        assets = [_tagged_asset(item, key) for key in tagged]
    else:
        assets = _published_assets(item, match_sensor(item))
    by_sensor: dict[str, list[SensorAsset]] = {}
    for asset in assets:
        by_sensor.setdefault(asset.sensor.name, []).append(asset)
    return by_sensor


def match_sensor(item: dict[str, Any], sensors: Mapping[str, Sensor] | None = None) -> Sensor:
    """The one registry sensor whose STAC match rules accept ``item``.

    Raises:
        ItemReadError: naming what the item says about itself, when no sensor or several match.
    """
    sensors = registry() if sensors is None else sensors
    matched = [s for s in sensors.values() if any(r.matches(item) for r in s.stac_rules)]
    if len(matched) == 1:
        return matched[0]
    properties = item.get("properties") or {}
    said = {
        "collection": item.get("collection"),
        **{
            k: properties[k]
            for k in (
                "constellation",
                "platform",
                "instruments",
                "processing:level",
                "s2:product_type",
            )
            if properties.get(k)
        },
    }
    if not matched:
        raise ItemReadError(
            item.get("id", "?"),
            None,
            f"matches no sensor of the registry ({said}); add a stac rule to catalogs/sensors.yaml",
        )
    raise ItemReadError(
        item.get("id", "?"), None, f"matches several sensors {[s.name for s in matched]} ({said})"
    )


def _tagged_asset(item: dict[str, Any], key: str) -> SensorAsset:
    """An asset our builders wrote.

    Its sensor named, its bands (if listed) by registry name, its pixels in the registry's storage.
    """
    asset = item["assets"][key]
    sensors = registry()
    if asset[SENSOR_FIELD] not in sensors:
        raise ItemReadError(
            item["id"], asset["href"], f"sensor {asset[SENSOR_FIELD]!r} is not in the registry"
        )
    sensor = sensors[asset[SENSOR_FIELD]]
    bands = asset.get("bands")  # a list, or an array where the item came through geoparquet
    names = tuple(band["name"] for band in bands) if bands is not None else ()
    names = names or sensor.band_names
    unknown = [name for name in names if name not in sensor.band_names]
    if unknown:
        raise ItemReadError(
            item["id"], asset["href"], f"bands {unknown} are not in the registry's {sensor.name}"
        )
    return SensorAsset(
        key,
        asset["href"],
        sensor,
        names,
        None,
        None,
        iso_datetime(asset.get("datetime")),
        asset.get("type"),
    )


def _published_assets(item: dict[str, Any], sensor: Sensor) -> list[SensorAsset]:
    """The data assets of an item as a public API publishes it, one per registry band held."""
    if sensor.kind == "sar" and not _projected(item):
        raise ItemReadError(item["id"], None, NOT_GEOCODED)
    linear_power = next(r for r in sensor.stac_rules if r.matches(item)).values == "linear_power"
    candidates = []
    for key, asset in item.get("assets", {}).items():
        resolved = _published_asset(item, key, asset, sensor, linear_power)
        if resolved is not None:
            shape = asset.get("proj:shape") or (0, 0)
            candidates.append((resolved, _gsd(asset), int(shape[0]) * int(shape[1])))
    chosen = _one_asset_per_band(item["id"], sensor, candidates)
    held = {name for asset in chosen for name in asset.band_names}
    missing = [name for name in sensor.band_names if name not in held]
    if missing:
        raise ItemReadError(
            item["id"], None, f"no asset holds the registry's {sensor.name} bands {missing}"
        )
    return chosen


def _published_asset(
    item: dict[str, Any], key: str, asset: dict[str, Any], sensor: Sensor, linear_power: bool
) -> SensorAsset | None:
    """One asset of a published item with the registry bands it holds.

    None when it is not a data asset of ``sensor``; ``linear_power``: the item's rule says its
    pixels are.
    """
    roles = set(asset.get("roles") or ())
    if key in NON_DATA_KEYS or roles & NON_DATA_ROLES or (roles and "data" not in roles):
        return None
    eo_bands = list(asset.get("bands") or asset.get("eo:bands") or ())
    raster_bands = list(asset.get("raster:bands") or ())
    count = max(len(eo_bands), len(raster_bands), 1)
    names = [
        _registry_band(sensor, key, asset, eo_bands[i] if i < len(eo_bands) else None, count)
        for i in range(count)
    ]
    if not any(names):
        return None
    indexes = tuple(i + 1 for i, name in enumerate(names) if name)
    band_names = tuple(name for name in names if name)
    fields = [_band_fields(asset, eo_bands, raster_bands, i - 1) for i in indexes]
    if any(f != fields[0] for f in fields):
        raise ItemReadError(
            item["id"],
            asset["href"],
            f"bands {band_names} declare different scale/offset/nodata {fields}",
        )
    declared_scale, offset, nodata = fields[0]
    scale = sensor.scale if declared_scale is None else declared_scale
    radiometry = Radiometry(
        scale=scale,
        offset=sentinel2_offset(item, sensor, sensor.offset if offset is None else offset, scale),
        nodata=sensor.nodata if nodata is None else nodata,
        linear_power=linear_power,
    )
    return SensorAsset(
        key,
        asset["href"],
        sensor,
        band_names,
        None if indexes == tuple(range(1, count + 1)) else indexes,
        None if _as_registry(radiometry, sensor) else radiometry,
        iso_datetime(asset.get("datetime")),
        asset.get("type"),
    )


def _registry_band(
    sensor: Sensor, key: str, asset: dict[str, Any], eo_band: dict[str, Any] | None, count: int
) -> str | None:
    """The registry band one file band holds.

    By name, else a unique common name, else the band whose width holds the centre wavelength; SAR
    by polarisation; a single-band sensor's band for a single-band asset without band metadata.
    """
    if eo_band is not None:
        name = str(eo_band.get("name") or "").lower()
        for band in sensor.bands:
            if band.name.lower() == name:
                return band.name
        common = eo_band.get("common_name") or eo_band.get("eo:common_name")
        by_common = [b for b in sensor.bands if common and b.common_name == common]
        if len(by_common) == 1:
            return by_common[0].name
        wavelength = eo_band.get("center_wavelength") or eo_band.get("eo:center_wavelength")
        return _band_at(sensor.bands, wavelength)
    if sensor.kind == "sar":
        polarizations = asset.get("sar:polarizations") or [key]
        if len(polarizations) == 1:
            wanted = str(polarizations[0]).upper()
            return next((b.name for b in sensor.bands if b.polarization == wanted), None)
        return None
    return sensor.bands[0].name if sensor.num_bands == 1 and count == 1 else None


def _band_at(bands: tuple[Band, ...], wavelength_um: float | None) -> str | None:
    """The band whose width (centre +- FWHM / 2) holds ``wavelength_um``, nearest centre."""
    if wavelength_um is None:
        return None
    nm = float(wavelength_um) * 1000.0
    inside = [
        b
        for b in bands
        if b.center_wavelength_nm is not None
        and b.full_width_half_max_nm is not None
        and abs(nm - b.center_wavelength_nm) <= b.full_width_half_max_nm / 2
    ]
    return min(inside, key=lambda b: abs(nm - b.center_wavelength_nm)).name if inside else None


def _band_fields(
    asset: dict[str, Any],
    eo_bands: list[dict[str, Any]],
    raster_bands: list[dict[str, Any]],
    i: int,
) -> tuple[float | None, float | None, float | None]:
    """(scale, offset, nodata) a file band declares.

    From ``raster:bands`` (STAC 1.0), the band's own fields (STAC 1.1), the asset's fields; None
    where nothing is declared.
    """
    sources = [
        raster_bands[i] if i < len(raster_bands) else {},
        eo_bands[i] if i < len(eo_bands) else {},
        asset,
    ]
    found: list[float | None] = []
    for names in (("scale", "raster:scale"), ("offset", "raster:offset"), ("nodata",)):
        value = next(
            (source[name] for source in sources for name in names if source.get(name) is not None),
            None,
        )
        found.append(None if value is None else float(value))
    return found[0], found[1], found[2]


def sentinel2_offset(item: dict[str, Any], sensor: Sensor, declared: float, scale: float) -> float:
    """The offset of a Sentinel-2 MSI asset, whatever the publisher declares.

    Processing baseline 04.00 shifted the DNs by BOA_ADD_OFFSET (L2A) / RADIO_ADD_OFFSET (L1C)
    = -1000. Planetary Computer does not declare it; Earth Search declares -0.1 also on pixels
    it has already shifted (``earthsearch:boa_offset_applied: true``). The offset is applied
    once: -1000 DN for baseline >= 04.00 unless already applied, else 0. Other sensors, and
    items that give no baseline, keep ``declared``.
    """
    properties = item.get("properties") or {}
    baseline = properties.get("s2:processing_baseline") or properties.get("processing:version")
    if sensor.instrument != "msi" or baseline is None:
        return declared
    try:
        version = float(baseline)
    except ValueError as error:
        raise ItemReadError(
            item.get("id", "?"), None, f"processing baseline {baseline!r} is not a number"
        ) from error
    applied = any(properties.get(flag) is True for flag in S2_OFFSET_APPLIED)
    return S2_ADD_OFFSET_DN * scale if version >= S2_BASELINE_WITH_OFFSET and not applied else 0.0


def _one_asset_per_band(
    item_id: str, sensor: Sensor, candidates: list[tuple[SensorAsset, float, int]]
) -> list[SensorAsset]:
    """The assets to read a sensor's bands from: one per band.

    Where several assets hold a band (Earth Search's COG and JP2 copies, CDSE's 10/20/60 m
    versions), the finest (declared GSD, then the most pixels: CDSE's 60 m B07 declares 20 m), then
    a GeoTIFF over other formats; a tie is ambiguous.
    """

    def preference(candidate: tuple[SensorAsset, float, int]) -> tuple[float, int, bool]:
        asset, gsd, pixels = candidate
        return gsd, -pixels, "tiff" not in (asset.media_type or "")

    chosen: list[SensorAsset] = []
    for band in sensor.band_names:
        holders = sorted((c for c in candidates if band in c[0].band_names), key=preference)
        if len(holders) > 1 and preference(holders[0]) == preference(holders[1]):
            raise ItemReadError(
                item_id,
                None,
                f"assets {[h[0].key for h in holders]} all hold {sensor.name} band {band}",
            )
        if holders and holders[0][0] not in chosen:
            chosen.append(holders[0][0])
    duplicated = [b for b in sensor.band_names if sum(b in a.band_names for a in chosen) > 1]
    if duplicated:
        raise ItemReadError(
            item_id,
            None,
            f"bands {duplicated} are held by several of the "
            f"chosen assets {[a.key for a in chosen]}",
        )
    return chosen


def _gsd(asset: dict[str, Any]) -> float:
    """An asset's ground sample distance as declared.

    From ``gsd``, raster spatial resolution, the transform's pixel width; infinity when unknown.
    """
    raster = (asset.get("raster:bands") or [{}])[0]
    transform = asset.get("proj:transform")
    for value in (
        asset.get("gsd"),
        raster.get("spatial_resolution"),
        abs(transform[0]) if transform else None,
    ):
        if value is not None:
            return float(value)
    return math.inf


def declared_crs(item: dict[str, Any], asset: dict[str, Any] | None = None) -> CRS | None:
    """The CRS an asset (else its item) declares.

    ``proj:code``, ``proj:epsg``, ``proj:wkt2`` or ``proj:projjson``; None when none is given.
    """
    for source in (asset or {}, item.get("properties") or {}):
        code = source.get("proj:code")
        if code is None and source.get("proj:epsg") is not None:
            code = f"EPSG:{source['proj:epsg']}"
        for value in (code, source.get("proj:wkt2"), source.get("proj:projjson")):
            if value is not None:
                try:
                    return CRS.from_user_input(value)
                except CRSError as error:
                    raise ItemReadError(
                        item.get("id", "?"), None, f"projection {value!r} is not a CRS"
                    ) from error
    return None


def _projected(item: dict[str, Any]) -> bool:
    """Whether the item's rasters lie on a projected (map) grid.

    Not the case for GRD scenes in radar geometry (no projection, or lon/lat with a transform
    derived from the bbox).
    """
    crses = [declared_crs(item, asset) for asset in item.get("assets", {}).values()]
    return bool(crses) and all(crs is not None and crs.is_projected for crs in crses)


def _as_registry(radiometry: Radiometry, sensor: Sensor) -> bool:
    """Whether pixels under ``radiometry`` are already the registry's storage values."""
    return (
        not radiometry.linear_power
        and radiometry.scale == sensor.scale
        and radiometry.offset == sensor.offset
        and _same_nodata(radiometry.nodata, sensor.nodata)
    )


def _same_nodata(a: float | None, b: float | None) -> bool:
    if a is None or b is None:
        return a is b
    return a == b or (math.isnan(a) and math.isnan(b))


def to_storage(
    values: np.ndarray, radiometry: Radiometry | None, sensor: Sensor
) -> tuple[np.ndarray, np.ndarray]:
    """An asset's pixels in the registry's storage, and its mask of pixels without data.

    The pixels as (bands, rows, cols), the mask as (rows, cols).

    Physical value = ``value * scale + offset`` (linear power converted to dB, where zero or
    negative power has no data), stored = ``(physical - registry offset) / registry scale``,
    rounded and clipped to the storage dtype for integers; a valid pixel never takes the
    registry's nodata value (it is moved one step), so nothing is lost to the mask silently.
    A non-finite value (NaN, +-Inf, in the file or from the conversion) is never data: its
    pixel has no data and, in float storage, holds the registry's nodata value.
    """
    if radiometry is None:
        stored = values.astype(sensor.dtype, copy=False)
        invalid = nodata_mask(values, sensor.nodata)
        if stored.dtype.kind == "f" and sensor.nodata is not None:
            # NaN holes of a float DSM and infinities: the registry's one nodata value.
            holes = (np.isinf(stored) if math.isnan(sensor.nodata) else ~np.isfinite(stored)).any(
                axis=0
            )
            if holes.any():
                stored = stored.copy()
                stored[:, holes] = sensor.nodata
        return stored, invalid
    invalid = nodata_mask(values, radiometry.nodata)
    dtype = np.dtype(sensor.dtype)
    shift = _whole_step_shift(values.dtype, radiometry, sensor)
    if shift is not None:  # e.g. Sentinel-2 DN - 1000: integers all the way, no float64
        info = np.iinfo(dtype)
        stored = np.clip(values.astype(np.int64) + shift, info.min, info.max)
        if sensor.nodata is not None and not math.isnan(sensor.nodata):
            step = 1 if sensor.nodata < info.max else -1
            stored[stored == sensor.nodata] += step
            stored[:, invalid] = sensor.nodata
        return stored.astype(dtype), invalid
    stored = np.empty(values.shape, dtype=dtype)
    for band, source in enumerate(values):  # band by band: one float64 band in memory
        physical = source.astype(np.float64) * radiometry.scale + radiometry.offset
        if radiometry.linear_power:
            invalid |= ~(physical > 0)
            with np.errstate(divide="ignore", invalid="ignore"):
                physical = 10.0 * np.log10(physical)
        level = (physical - sensor.offset) / sensor.scale
        if dtype.kind in "iu":
            info = np.iinfo(dtype)
            level = np.clip(np.rint(level), info.min, info.max)
            if sensor.nodata is not None and not math.isnan(sensor.nodata):
                step = 1 if sensor.nodata < info.max else -1
                level[level == sensor.nodata] += step
        with np.errstate(over="ignore"):  # beyond float32, a finite value becomes infinite:
            stored[band] = level
        if dtype.kind == "f":  # no data, as below
            invalid |= ~np.isfinite(stored[band])
    if sensor.nodata is not None:
        stored[:, invalid] = sensor.nodata
    return stored, invalid


def _whole_step_shift(source: np.dtype, radiometry: Radiometry, sensor: Sensor) -> int | None:
    """The integer ``k`` with stored = value + k, or None.

    Defined where integer pixels reach integer storage by a whole number of steps (same scale,
    offsets a whole number of steps apart, no linear power); None otherwise. It gives the values the
    float path gives, exactly.
    """
    if (
        radiometry.linear_power
        or source.kind not in "iu"
        or np.dtype(sensor.dtype).kind not in "iu"
        or radiometry.scale != sensor.scale
    ):
        return None
    steps = (radiometry.offset - sensor.offset) / sensor.scale
    return round(steps) if abs(steps - round(steps)) < 1e-9 else None


def nodata_mask(values: np.ndarray, nodata: float | None) -> np.ndarray:
    """(rows, cols) mask of pixels where any band is ``nodata`` or not finite (NaN, +-Inf)."""
    invalid = np.zeros(values.shape[1:], dtype=bool)
    if nodata is not None and not math.isnan(nodata):
        invalid |= (values == nodata).any(axis=0)
    if values.dtype.kind == "f":
        invalid |= ~np.isfinite(values).all(axis=0)
    return invalid


def iso_datetime(value: str | datetime | None) -> str | None:
    """An ISO 8601 string of a STAC datetime field (string or datetime), None if absent."""
    return value.isoformat() if isinstance(value, datetime) else value
