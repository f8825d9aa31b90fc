"""The GeoPile-2 store format: the one contract between pipeline/ (writer) and model/ (reader).

GeoPile-2 is one Zarr v3 store (a directory, default ``data/geopile2.zarr``) laid out as::

    zarr.json                 root group; attributes below; consolidated metadata of every node
    <sensor>/                 one group per sensor, named as in the registry (sensors.yaml)
        image                 (chip, band, y, x) chips in the sensor's storage dtype
        image_crc32c          (chip,) uint32: CRC32C of chip i's stored chunk (see below)
        band                  (band,) str: the registry's band names (an xarray coordinate)
        item_id               (chip,) str: catalog item the chip was cut from
        source                (chip,) str: collection id of that item (e.g. ``sen12ms``)
        crs                   (chip,) str: ``EPSG:<code>`` of the chip's grid, "" without one
        transform             (chip, affine) float64: affine (a, b, c, d, e, f), NaN without
        datetime              (chip,) int64: microseconds since 1970-01-01T00:00:00 UTC
        bounds_lonlat         (chip, bound) float64: west, south, east, north degrees, NaN without
    pairs/                    chips of two sensors covering the same ground, one row per pair
        sensor_a, index_a     (pair,) str, int64: a sensor group and a chip index in it
        sensor_b, index_b     (pair,) str, int64: the partner (sensor_a < sensor_b by name)

``image`` is stored one chip per chunk ``(1, C, H, W)`` and ``chips_per_shard`` chips per shard
file ``(chips_per_shard, C, H, W)`` (zarr's sharding codec), each chunk compressed with Blosc LZ4
and bit-shuffle, then followed by the CRC32C of the compressed bytes (:data:`IMAGE_CODECS`:
zarr's ``crc32c`` codec, so zarr and xarray refuse a chunk with a flipped bit; the bytes of
chunks and shard files, for writers and readers that bypass zarr, are in
:mod:`catalogs.store_shards`). ``image_crc32c[i]`` repeats chip ``i``'s checksum (the chunk's
last four bytes), so a reader that compares it with the bytes it got for chip ``i`` also
detects a chunk moved to another chip's place (shard index entries swapped, whose own
checksum only shows that the index was written so). Its fill value is the
sensor's nodata (0 where the sensor has none). Every other array is one chunk: one file, none
where every value is the fill value (e.g. ``crs`` of pictures). Chip ``i`` of a sensor is row
``i`` of every array of that group. Chips are ordered by (source, item id), then by their index
in the location; chip ``k`` of two sensors of one location form a pair, for every two sensors
there.

``datetime`` carries the CF attributes ``units``, ``calendar`` and ``_FillValue`` (the int64
minimum, which numpy reads as NaT), so ``xarray.open_zarr(store, group=sensor)`` decodes it to
``datetime64`` with NaT where the acquisition time is unknown; without xarray,
:func:`decode_datetimes` does the same. Pictures without georeference (Million-AID, GeoPile) have
``crs == ""`` and NaN ``transform`` and ``bounds_lonlat``.

Root attributes: ``format`` (``"geopile2"``), ``format_version``, ``sensors`` (group names),
``chip_counts`` (sensor -> chips), ``pair_count`` and ``chips_per_shard``. Sensor group
attributes: the registry entry (``title``, ``kind``, ``dtype``, ``nodata`` (a number, ``"NaN"``
or null), ``scale`` and ``offset`` (stored * scale + offset = the physical ``unit``),
``model_unit``, ``gsd_m``, ``band_names``), ``chip_count`` and ``statistics``: per band, in band
order and in the *stored* unit, ``count`` (valid values: nodata and non-finite values excluded),
``mean``, ``std`` (population) and the percentiles ``p1``, ``p2``, ``p50``, ``p98``, ``p99``
(numpy's default linear interpolation; exact for 8- and 16-bit integers, within one histogram
bin, 2**-11 relative, otherwise); null where a band has no valid value.

Readers call :func:`open_store` (checks the format and version, reads the consolidated metadata)
or :func:`read_manifest` (the attributes as typed objects); ``xarray.open_zarr(path, group=name)``
opens each sensor group with its dimensions and the ``band`` coordinate.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import zarr
from zarr.codecs import BloscCodec, Crc32cCodec, ZstdCodec
from zarr.errors import ZarrUserWarning

from catalogs.sensors import Sensor, SensorDescription

FORMAT_NAME = "geopile2"
FORMAT_VERSION = 2  # 2: chunks end in their CRC32C; image_crc32c

# Dimension names (zarr v3 ``dimension_names``; xarray's dims).
CHIP_DIM = "chip"
BAND_DIM = "band"
Y_DIM = "y"
X_DIM = "x"
AFFINE_DIM = "affine"
BOUND_DIM = "bound"
PAIR_DIM = "pair"
IMAGE_DIMS = (CHIP_DIM, BAND_DIM, Y_DIM, X_DIM)

# Array names of a sensor group.
IMAGE = "image"
IMAGE_CRC32C = "image_crc32c"
BAND = "band"
ITEM_ID = "item_id"
SOURCE = "source"
CRS = "crs"
TRANSFORM = "transform"
DATETIME = "datetime"
BOUNDS_LONLAT = "bounds_lonlat"

# The pairs group and its arrays.
PAIRS_GROUP = "pairs"
SENSOR_A = "sensor_a"
INDEX_A = "index_a"
SENSOR_B = "sensor_b"
INDEX_B = "index_b"

AFFINE_COEFFICIENTS = ("a", "b", "c", "d", "e", "f")
BOUND_NAMES = ("west", "south", "east", "north")

NO_CRS = ""
NAT = int(np.iinfo(np.int64).min)  # numpy's NaT as int64: datetime of an unknown acquisition
DATETIME_UNITS = "microseconds since 1970-01-01T00:00:00"
DATETIME_CALENDAR = "proleptic_gregorian"
NAN_JSON = "NaN"  # how a NaN nodata is written in attributes (as zarr v3 writes fill values)

STAT_PERCENTILES = (1, 2, 50, 98, 99)

# Image chunks: decode speed first. On sample-world Sentinel-2 / Sentinel-1 chips (one thread),
# Blosc LZ4 + bit-shuffle decoded 2.7 / 3.5 GB/s at every clevel from 5 up (1-3 measured
# slower); 7-9 shrink chips by under 2 %. Blosc zstd + bit-shuffle compresses ~10 %
# smaller but decodes 1.3-2.4x slower; plain zstd (zarr's default) is both larger and ~3x slower.
IMAGE_CLEVEL = 5
IMAGE_COMPRESSOR = BloscCodec(cname="lz4", clevel=IMAGE_CLEVEL, shuffle="bitshuffle")
# The bytes-to-bytes codecs of an image chunk: compression, then a checksum of its result.
IMAGE_CODECS = (IMAGE_COMPRESSOR, Crc32cCodec())
METADATA_COMPRESSOR = ZstdCodec(level=3)


class StoreFormatError(ValueError):
    """A path is not a GeoPile-2 store this code can read; names the path and the reason."""


@dataclass(frozen=True)
class TableArray:
    """A small array stored as one chunk whose first axis counts rows (chips, pairs, bands).

    Attributes:
        name: array name in its group.
        dtype: zarr data type (``"str"`` is variable-length UTF-8).
        dimension_names: one per axis, the row axis first.
        trailing_shape: sizes of the axes after the first.
        fill_value: value of a row nothing was written to (also "none" for that field).
        attributes: array attributes (CF decoding hints, column names).
    """

    name: str
    dtype: str
    dimension_names: tuple[str, ...]
    trailing_shape: tuple[int, ...] = ()
    fill_value: Any = ""
    attributes: dict[str, Any] = field(default_factory=dict)

    def shape(self, rows: int) -> tuple[int, ...]:
        """Shape of this array with ``rows`` rows."""
        return (rows, *self.trailing_shape)


BAND_ARRAY = TableArray(BAND, "str", (BAND_DIM,))
CHIP_METADATA: tuple[TableArray, ...] = (
    TableArray(ITEM_ID, "str", (CHIP_DIM,)),
    TableArray(SOURCE, "str", (CHIP_DIM,)),
    TableArray(CRS, "str", (CHIP_DIM,), fill_value=NO_CRS),
    TableArray(
        TRANSFORM,
        "float64",
        (CHIP_DIM, AFFINE_DIM),
        (6,),
        math.nan,
        {"coefficients": list(AFFINE_COEFFICIENTS)},
    ),
    TableArray(
        DATETIME,
        "int64",
        (CHIP_DIM,),
        (),
        NAT,
        {"units": DATETIME_UNITS, "calendar": DATETIME_CALENDAR, "_FillValue": NAT},
    ),
    TableArray(
        BOUNDS_LONLAT,
        "float64",
        (CHIP_DIM, BOUND_DIM),
        (4,),
        math.nan,
        {"bounds": list(BOUND_NAMES)},
    ),
    TableArray(IMAGE_CRC32C, "uint32", (CHIP_DIM,), fill_value=0),
)
PAIR_ARRAYS: tuple[TableArray, ...] = (
    TableArray(SENSOR_A, "str", (PAIR_DIM,)),
    TableArray(INDEX_A, "int64", (PAIR_DIM,), fill_value=-1),
    TableArray(SENSOR_B, "str", (PAIR_DIM,)),
    TableArray(INDEX_B, "int64", (PAIR_DIM,), fill_value=-1),
)


def image_fill_value(nodata: float | None) -> float:
    """Fill value of a sensor's ``image``: its nodata, 0 where it has none."""
    return 0 if nodata is None else nodata


def image_layout(
    chip_shape: tuple[int, int, int], chips_per_shard: int
) -> dict[str, tuple[int, ...]]:
    """``chunks`` (one chip) and ``shards`` (``chips_per_shard`` chips) of an ``image`` array."""
    return {"chunks": (1, *chip_shape), "shards": (chips_per_shard, *chip_shape)}


def encode_nodata(nodata: float | None) -> float | str | None:
    """A nodata value as JSON: the number, :data:`NAN_JSON` for NaN, None for none."""
    if nodata is not None and math.isnan(nodata):
        return NAN_JSON
    return nodata


def decode_nodata(value: float | str | None) -> float | None:
    """Inverse of :func:`encode_nodata`."""
    return math.nan if value == NAN_JSON else value


def encode_datetime(value: str | None) -> int:
    """An ISO 8601 time as stored in ``datetime``; naive times are taken as UTC.

    Raises:
        ValueError: naming the value, when it is not ISO 8601.
    """
    if value is None:
        return NAT
    try:
        moment = datetime.fromisoformat(value)
    except ValueError as error:
        raise ValueError(f"datetime {value!r} is not ISO 8601: {error}") from error
    if moment.tzinfo is not None:
        moment = moment.astimezone(UTC).replace(tzinfo=None)
    return int(np.datetime64(moment, "us").astype(np.int64))


def decode_datetimes(values: np.ndarray) -> np.ndarray:
    """Stored ``datetime`` values -> ``datetime64[us]`` (NaT where unknown)."""
    return np.asarray(values, dtype=np.int64).astype("datetime64[us]")


@dataclass(frozen=True)
class BandStatistics:
    """Per-band statistics of one sensor, in the stored unit; index ``i`` is band ``i``.

    Attributes:
        count: valid values per band (nodata and non-finite values excluded).
        mean: mean per band (None where count is 0).
        std: population standard deviation per band.
        percentiles: percentile (one of :data:`STAT_PERCENTILES`) -> value per band.
    """

    count: tuple[int, ...]
    mean: tuple[float | None, ...]
    std: tuple[float | None, ...]
    percentiles: dict[int, tuple[float | None, ...]]

    def to_attrs(self) -> dict[str, list[Any]]:
        """As the ``statistics`` attribute of a sensor group."""
        attrs: dict[str, list[Any]] = {
            "count": list(self.count),
            "mean": list(self.mean),
            "std": list(self.std),
        }
        for q in STAT_PERCENTILES:
            attrs[f"p{q}"] = list(self.percentiles[q])
        return attrs

    @classmethod
    def from_attrs(cls, attrs: dict[str, list[Any]]) -> BandStatistics:
        """Inverse of :meth:`to_attrs`."""
        return cls(
            count=tuple(attrs["count"]),
            mean=tuple(attrs["mean"]),
            std=tuple(attrs["std"]),
            percentiles={q: tuple(attrs[f"p{q}"]) for q in STAT_PERCENTILES},
        )


def sensor_attributes(sensor: Sensor, chip_count: int) -> dict[str, Any]:
    """A sensor group's attributes, from its registry entry (statistics come at the end)."""
    return {
        "title": sensor.title,
        "kind": sensor.kind,
        "dtype": sensor.dtype,
        "nodata": encode_nodata(sensor.nodata),
        "scale": sensor.scale,
        "offset": sensor.offset,
        "unit": sensor.unit,
        "model_unit": sensor.model_unit,
        "gsd_m": sensor.gsd_m,
        "band_names": list(sensor.band_names),
        "chip_count": chip_count,
    }


def root_attributes(
    chip_counts: dict[str, int], pair_count: int, chips_per_shard: int
) -> dict[str, Any]:
    """The root group's attributes."""
    return {
        "format": FORMAT_NAME,
        "format_version": FORMAT_VERSION,
        "sensors": list(chip_counts),
        "chip_counts": dict(chip_counts),
        "pair_count": pair_count,
        "chips_per_shard": chips_per_shard,
    }


@dataclass(frozen=True)
class SensorManifest(SensorDescription):
    """One sensor group as a reader needs it: what its chips hold and how to normalise them."""

    band_names: tuple[str, ...]
    chip_count: int
    chip_shape: tuple[int, int, int]
    statistics: BandStatistics


@dataclass(frozen=True)
class StoreManifest:
    """The root of a store: format version, layout and every sensor."""

    format_version: int
    chips_per_shard: int
    pair_count: int
    sensors: dict[str, SensorManifest]


def open_store(path: Path | str) -> zarr.Group:
    """Open a published GeoPile-2 store read-only, through its consolidated metadata.

    Raises:
        StoreFormatError: naming ``path``, when it is missing, not a Zarr v3 group, not a
            GeoPile-2 store, or of another format version.
    """
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", "Consolidated metadata", ZarrUserWarning)
            root = zarr.open_group(store=Path(path), mode="r", zarr_format=3, use_consolidated=True)
    except (FileNotFoundError, ValueError, KeyError) as error:
        raise StoreFormatError(f"{path}: not a consolidated Zarr v3 store: {error}") from error
    if root.attrs.get("format") != FORMAT_NAME:
        raise StoreFormatError(
            f"{path}: not a {FORMAT_NAME} store (format attribute {root.attrs.get('format')!r})"
        )
    if root.attrs.get("format_version") != FORMAT_VERSION:
        raise StoreFormatError(
            f"{path}: format version {root.attrs.get('format_version')!r}, "
            f"this code reads version {FORMAT_VERSION}"
        )
    return root


def shard_key(image: zarr.Array, shard: int) -> str:
    """The file of shard ``shard`` of an ``image`` array, relative to the array's folder."""
    return image.metadata.encode_chunk_key((shard, *(0,) * (image.ndim - 1)))


def read_manifest(path: Path | str) -> StoreManifest:
    """The attributes of a store as typed objects (reads only the root ``zarr.json``).

    Raises:
        StoreFormatError: as :func:`open_store`.
    """
    root = open_store(path)
    sensors = {name: _sensor_manifest(name, root[name]) for name in root.attrs["sensors"]}
    return StoreManifest(
        format_version=root.attrs["format_version"],
        chips_per_shard=root.attrs["chips_per_shard"],
        pair_count=root.attrs["pair_count"],
        sensors=sensors,
    )


def acquisition_range(path: Path | str, sensors: Iterable[str]) -> tuple[str, str] | None:
    """The first and last known acquisition times of the chips of ``sensors`` in a store.

    In UTC ISO 8601 (``2017-06-13T10:10:31Z``); None when no chip has one (pictures only).

    Raises:
        StoreFormatError: as :func:`open_store`.
        KeyError: naming a sensor the store does not hold.
    """
    root = open_store(path)
    names = list(sensors)
    missing = [name for name in names if name not in root.attrs["sensors"]]
    if missing:
        raise KeyError(f"{path}: no sensor(s) {missing}; it holds {root.attrs['sensors']}")
    times = np.concatenate(
        [np.asarray(root[name][DATETIME][:], dtype=np.int64) for name in names]
        or [np.empty(0, np.int64)]
    )
    times = times[times != NAT]
    if not times.size:
        return None
    first, last = decode_datetimes(np.array([times.min(), times.max()])).tolist()
    return (_iso_utc(first), _iso_utc(last))


def _iso_utc(moment: datetime) -> str:
    """A naive UTC time as ISO 8601 with ``Z`` (microseconds only where non-zero)."""
    return moment.replace(tzinfo=UTC).isoformat().replace("+00:00", "Z")


def _sensor_manifest(name: str, group: zarr.Group) -> SensorManifest:
    attrs = group.attrs
    _, *chip_shape = group[IMAGE].shape
    return SensorManifest(
        name=name,
        title=attrs["title"],
        kind=attrs["kind"],
        dtype=attrs["dtype"],
        nodata=decode_nodata(attrs["nodata"]),
        scale=attrs["scale"],
        offset=attrs["offset"],
        unit=attrs["unit"],
        model_unit=attrs["model_unit"],
        gsd_m=attrs["gsd_m"],
        band_names=tuple(attrs["band_names"]),
        chip_count=attrs["chip_count"],
        chip_shape=tuple(chip_shape),
        statistics=BandStatistics.from_attrs(attrs["statistics"]),
    )
