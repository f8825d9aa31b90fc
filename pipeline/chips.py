"""Co-registered chips of one location: what the coregister stage writes and the shard stage reads.

One ``LocationChips`` per catalog item, saved as a chip file ``<name>.npz`` and its chunk file
``<name>.chunks``. Chip ``k`` of every sensor of a location covers the same ground (the
reference sensor's grid), which is what makes them pairs.

The chunk file holds each sensor's chips already encoded as the store's ``image`` chunks
(:mod:`catalogs.store_shards`), one after another, sensor after sensor: raw bytes, so the
shard stage copies them into shard files inside the kernel (``os.copy_file_range``). The chip
file (an uncompressed ``.npz``) holds where each chunk is and the chips' statistics
(:class:`~pipeline.stats.StreamingStats`), both computed while the chips are fresh in memory.
Each file is written to a temporary name, fsynced and renamed, the chunk file first: a chip
file that exists is complete, and so is its chunk file. Members, for the ``i``-th sensor of
the header:

- ``chunk_offsets_i`` (int64, K + 1): where chip ``k``'s bytes start in the chunk file (and,
  last, where the sensor's end);
- ``moments_i`` (float64, 3 x C): valid count, mean and sum of squared deviations per band;
- ``histogram_keys_i``, ``histogram_counts_i`` (int64) and ``histogram_ends_i`` (int64, C):
  the bands' sparse histograms, one after another;

plus ``header`` (JSON: source, item_id, crs, datetimes, dropped, shifts, item_ids where a
sensor's chips come from other items, and per sensor its name, chip shape and dtype),
``transforms`` (K x 6) and ``bounds_lonlat`` (K x 4).
"""

from __future__ import annotations

import itertools
import json
import os
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import numpy as np

from catalogs.sensors import registry
from catalogs.store_shards import chunk_codec, decode_chunk, encode_chunk
from pipeline.stats import Histogram, StreamingStats

_NPY_HEADER_READERS = {(1, 0): np.lib.format.read_array_header_1_0,
                       (2, 0): np.lib.format.read_array_header_2_0}


@dataclass
class LocationChips:
    """The chips cut from one location (catalog item), all sensors on one reference grid.

    Attributes:
        source: collection id (e.g. ``sen12ms``).
        item_id: the catalog item the chips come from.
        sensors: sensor registry name -> (K, C, H, W) array in the sensor's storage dtype.
        crs: the reference grid's CRS (``EPSG:<code>``), None without georeference.
        transforms: (K, 6) affine coefficients (a, b, c, d, e, f) of each chip, NaN without
            georeference.
        bounds_lonlat: (K, 4) west, south, east, north in degrees, NaN without georeference.
        datetimes: sensor -> ISO 8601 acquisition time (or start of the range), None if unknown.
        dropped: reason -> number of chips dropped at this location (e.g. ``nodata``).
        shifts: QA records of residual shift between the reference and each secondary sensor.
        item_ids: sensor -> the item(s) its chips come from where not ``item_id`` (partners
            of a pair across collections; a mosaic's ids joined by "+").
    """

    source: str
    item_id: str
    sensors: dict[str, np.ndarray]
    crs: str | None
    transforms: np.ndarray
    bounds_lonlat: np.ndarray
    datetimes: dict[str, str | None] = field(default_factory=dict)
    dropped: dict[str, int] = field(default_factory=dict)
    shifts: list[dict[str, object]] = field(default_factory=list)
    item_ids: dict[str, str] = field(default_factory=dict)

    @property
    def count(self) -> int:
        """Number of chips (K) at this location."""
        return len(self.transforms)

    @property
    def paired(self) -> bool:
        """Whether the location has more than one sensor (its chips are pairs)."""
        return len(self.sensors) > 1

    def save(self, path: Path) -> Path:
        """Encode, measure and write to the chip file ``path`` (a ``.npz``) and its chunk
        file, atomically (see module doc)."""
        path.parent.mkdir(parents=True, exist_ok=True)
        header = {"source": self.source, "item_id": self.item_id, "crs": self.crs,
                  "datetimes": self.datetimes, "dropped": self.dropped, "shifts": self.shifts,
                  "sensors": [{"name": name, "shape": list(chips.shape[1:]),
                               "dtype": chips.dtype.name}
                              for name, chips in self.sensors.items()]}
        if self.item_ids:
            header["item_ids"] = self.item_ids
        members: dict[str, np.ndarray] = {}
        with _atomic_file(chunk_file(path)) as chunks:
            for i, (name, chips) in enumerate(self.sensors.items()):
                members.update(_write_sensor(i, chips, _statistics_nodata(name), chunks))
        with _atomic_file(path) as f:
            np.savez(f, header=np.array(json.dumps(header)), transforms=self.transforms,
                     bounds_lonlat=self.bounds_lonlat, **members)
        return path

    @classmethod
    def load_header(cls, path: Path) -> LocationChips:
        """What :meth:`load` reads but the pixels: ``sensors`` holds a (K, 0, 0, 0) array per
        sensor (chip counts without the chips), the rest as saved. For summaries."""
        return cls._read(path, pixels=False)

    @classmethod
    def load(cls, path: Path) -> LocationChips:
        """Read a file written by :meth:`save`, chips decoded."""
        return cls._read(path, pixels=True)

    @classmethod
    def _read(cls, path: Path, pixels: bool) -> LocationChips:
        with np.load(path, allow_pickle=False) as data:
            header = read_header(data)
            sensors = {}
            for i, layout in enumerate(header["sensors"]):
                offsets = data[f"chunk_offsets_{i}"]
                sensors[layout["name"]] = (
                    _decode_chips(path, offsets, layout) if pixels
                    else np.empty((len(offsets) - 1, 0, 0, 0), dtype=np.uint8))
            return cls(source=header["source"], item_id=header["item_id"], sensors=sensors,
                       crs=header["crs"], transforms=data["transforms"],
                       bounds_lonlat=data["bounds_lonlat"], datetimes=header["datetimes"],
                       dropped=header["dropped"], shifts=header["shifts"],
                       item_ids=header.get("item_ids", {}))


def chunk_file(path: Path) -> Path:
    """The chunk file of the chip file ``path``."""
    return path.with_suffix(".chunks")


@contextmanager
def _atomic_file(path: Path) -> Iterator[IO[bytes]]:
    """A file written under a temporary name, fsynced, then renamed to ``path``."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "wb") as f:
        yield f
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _statistics_nodata(sensor: str) -> float | None:
    """The nodata value left out of a sensor's statistics: the registry's. A sensor the
    registry lacks gets none (the shard stage refuses its chips anyway, naming the file)."""
    entry = registry().get(sensor)
    return None if entry is None else entry.nodata


def _write_sensor(index: int, chips: np.ndarray, nodata: float | None,
                  chunks: IO[bytes]) -> dict[str, np.ndarray]:
    """Append one sensor's (K, C, H, W) chips, encoded, to ``chunks``; return the chip file
    members that describe them (see module doc)."""
    codec = chunk_codec(chips.dtype)
    offsets = [chunks.tell()]
    for chip in chips:
        offsets.append(offsets[-1] + chunks.write(encode_chunk(chip, codec)))
    stats = StreamingStats.of_chips(chips, nodata)
    histograms = stats.histograms
    return {
        f"chunk_offsets_{index}": np.array(offsets, dtype=np.int64),
        f"moments_{index}": np.stack([stats.count, stats.mean, stats.m2]).astype(np.float64),
        f"histogram_keys_{index}": np.concatenate([h.keys for h in histograms]),
        f"histogram_counts_{index}": np.concatenate([h.counts for h in histograms]),
        f"histogram_ends_{index}": np.cumsum([len(h.keys) for h in histograms],
                                             dtype=np.int64),
    }


def _decode_chips(path: Path, offsets: np.ndarray, layout: dict[str, Any]) -> np.ndarray:
    shape, dtype = tuple(layout["shape"]), np.dtype(layout["dtype"])
    chips = np.empty((len(offsets) - 1, *shape), dtype=dtype)
    with open(chunk_file(path), "rb") as f:
        f.seek(int(offsets[0]))
        for k, length in enumerate(np.diff(offsets)):
            chips[k] = decode_chunk(f.read(int(length)), shape, dtype)
    return chips


def read_header(data: np.lib.npyio.NpzFile) -> dict[str, Any]:
    """The JSON header of an open chip file: source, item_id, crs, datetimes, dropped,
    shifts and ``sensors`` (name, chip ``shape`` (C, H, W) and ``dtype``, in member order)."""
    return json.loads(str(data["header"]))


@dataclass(frozen=True)
class ChipFileLayout:
    """What a chip file holds, its pixels unread: the header, and the shapes of the
    georeference arrays and of each sensor's chips ((K, C, H, W) and dtype)."""

    header: dict[str, Any]
    transforms_shape: tuple[int, ...]
    bounds_shape: tuple[int, ...]
    sensors: dict[str, tuple[tuple[int, ...], np.dtype]]


def read_layout(path: Path) -> ChipFileLayout:
    """The layout of a chip file (a few hundred bytes read), checked against its chunk file.

    Raises:
        OSError, ValueError, KeyError, zipfile.BadZipFile: when the file is not a readable
            chip file, or its chunk file is missing or of another size.
    """
    with np.load(path, allow_pickle=False) as npz:
        header = read_header(npz)
        sensors, end = {}, 0
        for i, layout in enumerate(header["sensors"]):
            offsets = npz[f"chunk_offsets_{i}"]
            end = int(offsets[-1])
            sensors[layout["name"]] = ((len(offsets) - 1, *layout["shape"]),
                                       np.dtype(layout["dtype"]))
        transforms, bounds = (_npy_shape(npz.zip, name) for name in ("transforms",
                                                                     "bounds_lonlat"))
    size = chunk_file(path).stat().st_size
    if size != end:
        raise ValueError(f"its chunk file {chunk_file(path)} has {size} bytes, not {end}")
    return ChipFileLayout(header, transforms, bounds, sensors)


def read_georeference(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """The (K, 6) transforms and (K, 4) lon/lat bounds of a chip file."""
    with np.load(path, allow_pickle=False) as npz:
        return npz["transforms"], npz["bounds_lonlat"]


def read_statistics(path: Path, index: int, dtype: np.dtype | str) -> StreamingStats:
    """The statistics of the ``index``-th sensor's chips of a chip file."""
    with np.load(path, allow_pickle=False) as npz:
        count, mean, m2 = npz[f"moments_{index}"]
        keys, counts = npz[f"histogram_keys_{index}"], npz[f"histogram_counts_{index}"]
        bounds = np.r_[0, npz[f"histogram_ends_{index}"]]
    histograms = tuple(Histogram(keys[a:b], counts[a:b])
                       for a, b in itertools.pairwise(bounds))
    return StreamingStats(np.dtype(dtype).str, count.astype(np.int64), mean, m2, histograms)


def read_chunk_offsets(path: Path, index: int) -> np.ndarray:
    """Where each chip of the ``index``-th sensor of a chip file starts in its chunk file,
    and, last, where they end (K + 1 offsets)."""
    with np.load(path, allow_pickle=False) as npz:
        return npz[f"chunk_offsets_{index}"]


def copy_chunks(path: Path, begin: int, end: int, out: int) -> None:
    """Copy bytes ``begin:end`` of the chunk file of the chip file ``path`` to the file
    descriptor ``out`` (at its position), inside the kernel.

    Raises:
        ValueError: when the chunk file ends before ``end``.
    """
    with open(chunk_file(path), "rb") as f:
        source = f.fileno()
        while begin < end:
            copied = os.copy_file_range(source, out, end - begin, begin)
            if copied == 0:
                raise ValueError(f"{chunk_file(path)} ends at {begin}, before byte {end}")
            begin += copied


def _npy_shape(archive: zipfile.ZipFile, member: str) -> tuple[int, ...]:
    """The shape of the ``.npy`` member ``member``, its data unread."""
    with archive.open(f"{member}.npy") as f:
        version = np.lib.format.read_magic(f)
        if version not in _NPY_HEADER_READERS:
            raise ValueError(f"{member}: .npy format version {version} is not supported")
        return _NPY_HEADER_READERS[version](f)[0]
