"""Co-registered chips of one location: what the coregister stage writes and the shard stage reads.

One ``LocationChips`` per catalog item, saved as a chip file ``<name>.npz`` and its chunk file
``<name>.chunks``. Chip ``k`` of every sensor of a location covers the same ground (the
reference sensor's grid), which is what makes them pairs.

The chunk file holds each sensor's chips already encoded as the store's ``image`` chunks
(:mod:`catalogs.store_shards`), one after another, sensor after sensor: raw bytes, so the
shard stage copies them into shard files inside the kernel (``os.copy_file_range``; a plain
copy where the kernel cannot, e.g. across filesystems). The chip file (an uncompressed
``.npz``) holds where each chunk is, its checksum and the chips' statistics
(:class:`~pipeline.stats.StreamingStats`), all computed while the chips are fresh in memory.
Each file is written atomically (:mod:`catalogs.atomic_files`), the chunk file first: a chip
file that exists is complete, and so is its chunk file. Members, for the ``i``-th sensor of
the header:

- ``chunk_offsets_i`` (int64, K + 1): where chip ``k``'s bytes start in the chunk file (and,
  last, where the sensor's end);
- ``chunk_crc32c_i`` (uint32, K): the CRC32C chip ``k``'s chunk ends with (the store's
  ``image_crc32c``);
- ``moments_i`` (float64, 3 x C): valid count, mean and sum of squared deviations per band;
- ``histogram_keys_i``, ``histogram_counts_i`` (int64) and ``histogram_ends_i`` (int64, C):
  the bands' sparse histograms, one after another;

plus ``header`` (JSON: source, item_id, crs, datetimes, dropped, shifts, item_ids where a
sensor's chips come from other items, and per sensor its name, chip shape and dtype),
``transforms`` (K x 6) and ``bounds_lonlat`` (K x 4).
"""

from __future__ import annotations

import errno
import itertools
import json
import os
import zipfile
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from catalogs.atomic_files import atomic_open
from catalogs.sensors import registry
from catalogs.store_shards import chunk_checksum, chunk_codec, decode_chunk, encode_chunk
from pipeline.stats import Histogram, StreamingStats, combined_stats

_NPY_HEADER_READERS = {(1, 0): np.lib.format.read_array_header_1_0,
                       (2, 0): np.lib.format.read_array_header_2_0}
# copy_file_range cannot copy between these two files: copy through user space instead.
_NO_KERNEL_COPY = frozenset({errno.EXDEV, errno.ENOSYS, errno.EOPNOTSUPP, errno.EINVAL})
# Errors only the writing side of a copy gives.
_WRITE_SIDE = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS})
_COPY_BLOCK = 1 << 20


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
        writer = ChipFileWriter(path, {name: (chips.shape[1:], chips.dtype)
                                       for name, chips in self.sensors.items()})
        for name, chips in self.sensors.items():  # (a sensor may hold another number of chips
            writer.add_sensor(name, range(len(chips)), chips)  # than transforms: shard refuses)
        return writer.finish(self.header_fields(), self.transforms, self.bounds_lonlat,
                             self.item_ids)

    def header_fields(self) -> dict[str, Any]:
        """The header's fields but the sensors' layout (the writer adds it)."""
        return {"source": self.source, "item_id": self.item_id, "crs": self.crs,
                "datetimes": self.datetimes, "dropped": self.dropped, "shifts": self.shifts}

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


def _statistics_nodata(sensor: str) -> float | None:
    """The nodata value left out of a sensor's statistics: the registry's. A sensor the
    registry lacks gets none (the shard stage refuses its chips anyway, naming the file)."""
    entry = registry().get(sensor)
    return None if entry is None else entry.nodata


class ChipFileWriter:
    """Writes one chip file batch of chips by batch, so that a location's chips never need to
    be in memory together (a full Sentinel-2 tile has ~1,800 paired chips).

    Each batch is encoded and measured at once; its chunks go to one scratch file per sensor
    (removed at the end; a killed writer's are removed by the coregister stage as stale).
    :meth:`finish` writes the chunk file with every sensor's chips in the order of their
    indexes, sensor after sensor, then the chip file. One batch gives the bytes
    :meth:`LocationChips.save` always gave.
    """

    def __init__(self, path: Path,
                 sensors: dict[str, tuple[tuple[int, ...], np.dtype]]) -> None:
        """``sensors``: name -> (chip shape (C, H, W), storage dtype), in header order."""
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        self._layouts = {name: (tuple(shape), np.dtype(dtype))
                         for name, (shape, dtype) in sensors.items()}
        self._parts = {name: open(path.with_name(f".{path.name}.{os.getpid()}.{i}.part"), "w+b")
                       for i, name in enumerate(sensors)}
        # name -> chip index -> (offset and length in its scratch file, CRC32C)
        self._chunks: dict[str, dict[int, tuple[int, int, int]]] = {name: {} for name in sensors}
        self._stats: dict[str, StreamingStats | None] = dict.fromkeys(sensors)

    def add(self, indexes: Iterable[int], chips: dict[str, np.ndarray]) -> None:
        """Encode and measure one batch: ``chips[name]`` is (K, C, H, W), chip ``k`` having
        index ``indexes[k]``, for every sensor."""
        indexes = list(indexes)
        for name in self._parts:
            self.add_sensor(name, indexes, chips[name])

    def add_sensor(self, name: str, indexes: Iterable[int], batch: np.ndarray) -> None:
        """One sensor's chips of a batch (:meth:`add`), ``batch[k]`` having ``indexes[k]``."""
        if (batch.shape[1:], batch.dtype) != self._layouts[name]:
            raise ValueError(f"{name} chips {batch.shape[1:]} {batch.dtype} are not "
                             f"{self._layouts[name]}")
        part, codec = self._parts[name], chunk_codec(batch.dtype)
        for index, chip in zip(indexes, batch, strict=True):
            chunk = encode_chunk(chip, codec)
            self._chunks[name][index] = (part.tell(), part.write(chunk), chunk_checksum(chunk))
        if len(batch) or self._stats[name] is None:
            stats = StreamingStats.of_chips(batch, _statistics_nodata(name))
            merged = self._stats[name]  # merged as they come: memory stays flat
            self._stats[name] = stats if merged is None else combined_stats([merged, stats])

    def abort(self) -> None:
        """Give up: remove the scratch files; nothing is written."""
        self._remove_scratch()

    def _remove_scratch(self) -> None:
        for part in self._parts.values():
            part.close()
            os.unlink(part.name)

    def finish(self, header: dict[str, Any], transforms: np.ndarray,
               bounds_lonlat: np.ndarray, item_ids: dict[str, str] | None = None) -> Path:
        """Write the chunk file and the chip file (``header`` fields, then the sensors'
        layout, then ``item_ids`` where given); ``transforms`` and ``bounds_lonlat`` in index
        order. Returns the chip file's path."""
        members: dict[str, np.ndarray] = {}
        try:
            with atomic_open(chunk_file(self.path), "wb") as chunks:
                for i, (name, part) in enumerate(self._parts.items()):
                    offsets, checksums = [chunks.tell()], []
                    for index in sorted(self._chunks[name]):
                        offset, length, checksum = self._chunks[name][index]
                        part.seek(offset)
                        offsets.append(offsets[-1] + chunks.write(part.read(length)))
                        checksums.append(checksum)
                    stats = self._stats[name] or StreamingStats.of_chips(
                        np.empty((0, *self._layouts[name][0]), self._layouts[name][1]),
                        _statistics_nodata(name))
                    members.update(_sensor_members(i, offsets, checksums, stats))
        finally:
            self._remove_scratch()
        header = {**header, "sensors": [{"name": name, "shape": list(shape),
                                         "dtype": dtype.name}
                                        for name, (shape, dtype) in self._layouts.items()]}
        if item_ids:
            header["item_ids"] = item_ids
        with atomic_open(self.path, "wb") as f:
            np.savez(f, header=np.array(json.dumps(header)), transforms=transforms,
                     bounds_lonlat=bounds_lonlat, **members)
        return self.path


def _sensor_members(index: int, offsets: list[int], checksums: list[int],
                    stats: StreamingStats) -> dict[str, np.ndarray]:
    """The chip file members that describe one sensor's chips (see module doc)."""
    histograms = stats.histograms
    return {
        f"chunk_offsets_{index}": np.array(offsets, dtype=np.int64),
        f"chunk_crc32c_{index}": np.array(checksums, dtype=np.uint32),
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
            if len(npz[f"chunk_crc32c_{i}"]) != len(offsets) - 1:
                raise ValueError(f"{layout['name']}: {len(offsets) - 1} chunks but "
                                 f"{len(npz[f'chunk_crc32c_{i}'])} checksums")
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


def read_chunk_checksums(path: Path, index: int) -> np.ndarray:
    """The CRC32C of each chip's chunk of the ``index``-th sensor of a chip file (K, uint32)."""
    with np.load(path, allow_pickle=False) as npz:
        return npz[f"chunk_crc32c_{index}"]


class ChunkWriteError(OSError):
    """Copying chunks failed on the writing side (disk full, quota, file too large)."""


def copy_chunks(path: Path, begin: int, end: int, out: int) -> None:
    """Copy bytes ``begin:end`` of the chunk file of the chip file ``path`` to the file
    descriptor ``out`` (at its position): inside the kernel, or through a buffer where the
    kernel cannot copy between the two files (another filesystem).

    Raises:
        ChunkWriteError: when writing to ``out`` fails (its errno kept).
        OSError, ValueError: when the chunk file cannot be read, or ends before ``end``.
    """
    with open(chunk_file(path), "rb") as f:
        source = f.fileno()
        while begin < end:
            try:
                copied = os.copy_file_range(source, out, end - begin, begin)
            except OSError as error:
                if error.errno in _WRITE_SIDE:
                    raise ChunkWriteError(error.errno, error.strerror) from error
                if error.errno not in _NO_KERNEL_COPY:
                    raise
                _copy_through_buffer(source, out, begin, end, chunk_file(path))
                return
            if copied == 0:
                raise ValueError(f"{chunk_file(path)} ends at {begin}, before byte {end}")
            begin += copied


def _copy_through_buffer(source: int, out: int, begin: int, end: int, name: Path) -> None:
    """:func:`copy_chunks` with ``pread`` and ``write``."""
    while begin < end:
        data = os.pread(source, min(_COPY_BLOCK, end - begin), begin)
        if not data:
            raise ValueError(f"{name} ends at {begin}, before byte {end}")
        view = memoryview(data)
        while view:
            try:
                written = os.write(out, view)
            except OSError as error:
                raise ChunkWriteError(error.errno, error.strerror) from error
            view = view[written:]
        begin += len(data)


def _npy_shape(archive: zipfile.ZipFile, member: str) -> tuple[int, ...]:
    """The shape of the ``.npy`` member ``member``, its data unread."""
    with archive.open(f"{member}.npy") as f:
        version = np.lib.format.read_magic(f)
        if version not in _NPY_HEADER_READERS:
            raise ValueError(f"{member}: .npy format version {version} is not supported")
        return _NPY_HEADER_READERS[version](f)[0]
