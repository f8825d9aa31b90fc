"""Co-registered chips: what the coregister stage writes and the shard stage reads.

A *chip file* ``<name>.npz`` and its *chunk file* ``<name>.chunks`` hold the chips of one or
more locations (catalog items): the coregister stage writes one pair of files per batch of
items (hundreds of small pictures or patches, or one large scene), so the work dir holds two
files per batch, not per item, and a batch costs one durable write. Chip ``k`` of every sensor
of a location covers the same ground (the reference sensor's grid), which is what makes them
pairs.

The chunk file holds each location's chips already encoded as the store's ``image`` chunks
(:mod:`catalogs.store_shards`), one after another: location after location, and within a
location sensor after sensor, chips in index order. The shard stage copies them into shard
files inside the kernel (``os.copy_file_range``; a plain copy where the kernel cannot, e.g.
across filesystems). The chip file (an uncompressed ``.npz``) says where each chunk is, its
checksum and the chips' statistics (:class:`~pipeline.stats.StreamingStats`), all computed
while the chips are fresh in memory. Both files are written atomically
(:mod:`catalogs.atomic_files`), the chunk file first: a chip file that exists is complete, and
so is its chunk file.

A *slot* is one sensor of one location: slots are numbered location after location, sensor
after sensor in the location's header order, as their chunks lie in the chunk file. Members:

- ``header``: JSON ``{"locations": [...], "failures": [...]}``, per location its source,
  item_id, crs, datetimes, dropped, shifts, item_ids (where a sensor's chips come from other
  items) and ``sensors`` (name, chip shape (C, H, W) and dtype, in slot order); the failures
  are the items of the batch that could not be co-registered (a resumed run reports them
  again without retrying them);
- ``location_chips`` (int64, L): chips per location (the rows of the next two);
- ``transforms`` (sum K x 6) and ``bounds_lonlat`` (sum K x 4), location after location;
- ``slot_chips`` (int64, S): chips per slot;
- ``chunk_offsets`` (int64, sum over slots of K, plus 1): where each chunk starts in the chunk
  file, and, last, where the chunks end;
- ``chunk_crc32c`` (uint32, one per chunk): the CRC32C each chunk ends with (the store's
  ``image_crc32c``);
- ``moments`` (float64, bands x 3, all slots' bands in slot order): valid count, mean and sum
  of squared deviations per band;
- ``histogram_keys``, ``histogram_counts`` (uint32, or int64 where a count needs it) and
  ``histogram_ends`` (int64, one per band of every slot, cumulative): the bands' sparse
  histograms, one after another.
"""

from __future__ import annotations

import contextlib
import errno
import itertools
import json
import os
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np

from catalogs.atomic_files import atomic_open
from catalogs.sensors import registry
from catalogs.store_shards import chunk_checksum, chunk_codec, decode_chunk, encode_chunk
from pipeline.stats import Histogram, StreamingStats, combined_stats

# copy_file_range cannot copy between these two files: copy through user space instead.
_NO_KERNEL_COPY = frozenset({errno.EXDEV, errno.ENOSYS, errno.EOPNOTSUPP, errno.EINVAL})
# Errors only the writing side of a copy gives.
_WRITE_SIDE = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS})
_COPY_BLOCK = 1 << 20
_SPOOL_BYTES = 1 << 20  # a location's chunks of one sensor kept in memory up to this


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
        """Write this one location as the chip file ``path`` (a ``.npz``) and its chunk file.

        The write is atomic (see module doc).
        """
        with ChipFileWriter(path) as writer:
            writer.add(self)
        return path

    def header_fields(self) -> dict[str, Any]:
        """The header's fields but the sensors' layout (the writer adds it)."""
        return {
            "source": self.source,
            "item_id": self.item_id,
            "crs": self.crs,
            "datetimes": self.datetimes,
            "dropped": self.dropped,
            "shifts": self.shifts,
        }

    @classmethod
    def load_header(cls, path: Path, location: int = 0) -> LocationChips:
        """What :meth:`load` reads but the pixels. For summaries.

        ``sensors`` holds a (K, 0, 0, 0) array per sensor (chip counts without the chips), the rest
        as saved.
        """
        return ChipFile(path).location_chips(location, pixels=False)

    @classmethod
    def load(cls, path: Path, location: int = 0) -> LocationChips:
        """The ``location``-th location of a chip file, chips decoded."""
        return ChipFile(path).location_chips(location, pixels=True)


def chunk_file(path: Path) -> Path:
    """The chunk file of the chip file ``path``."""
    return path.with_suffix(".chunks")


def _statistics_nodata(sensor: str) -> float | None:
    """The nodata value left out of a sensor's statistics: the registry's.

    A sensor the registry lacks gets none (the shard stage refuses its chips anyway, naming the
    file).
    """
    entry = registry().get(sensor)
    return None if entry is None else entry.nodata


@dataclass
class _Slot:
    """One sensor of one location as written.

    Its chunks' lengths and checksums, and the statistics of its chips.
    """

    chunk_lengths: list[int]
    checksums: list[int]
    stats: StreamingStats


class ChipFileWriter:
    """Writes one chip file and its chunk file.

    Locations come one after another, each either whole (:meth:`add`, a location in memory) or batch
    of chips by batch (:meth:`open_location`, so that a location's chips never need to be in memory
    together: a full Sentinel-2 tile has ~1,800 paired chips). A context manager: leaving the block
    without error writes both files (:meth:`finish`); an error writes nothing.
    """

    def __init__(self, path: Path) -> None:
        """Initialize a new ChipFileWriter instance.

        Args:
            path: the chip file to write (a ``.npz``); its chunk file is written beside it.
        """
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        self._exit = contextlib.ExitStack()
        self._chunks = self._exit.enter_context(atomic_open(chunk_file(path), "wb"))
        self._locations: list[dict[str, Any]] = []
        self._georeference: list[tuple[np.ndarray, np.ndarray]] = []
        self._slots: list[_Slot] = []
        self._failures: list[dict[str, Any]] = []

    def __enter__(self) -> ChipFileWriter:
        """This writer."""
        return self

    def __exit__(self, kind: type[BaseException] | None, *rest: Any) -> None:
        """Write both files (:meth:`finish`) without an error, else write nothing (abort)."""
        if kind is None:
            self.finish()
        else:
            self.abort()

    def add(self, location: LocationChips) -> None:
        """Write a location held in memory (its chips encoded and measured at once)."""
        sink = self.open_location(
            {name: (chips.shape[1:], chips.dtype) for name, chips in location.sensors.items()}
        )
        # (A sensor may hold another number of chips than transforms: shard refuses the file.)
        for name, chips in location.sensors.items():
            sink.add_sensor(name, range(len(chips)), chips)
        sink.finish(
            location.header_fields(), location.transforms, location.bounds_lonlat, location.item_ids
        )

    def open_location(self, sensors: dict[str, tuple[tuple[int, ...], np.dtype]]) -> LocationWriter:
        """Start the next location.

        ``sensors``: name -> (chip shape (C, H, W), storage dtype), in header order. Write its
        chips, then :meth:`LocationWriter.finish` it (or abort it: nothing of it is written).
        """
        return LocationWriter(self, sensors)

    def add_failure(self, failure: dict[str, Any]) -> None:
        """Record an item of the batch that could not be co-registered."""
        self._failures.append(failure)

    def _append_location(
        self,
        header: dict[str, Any],
        transforms: np.ndarray,
        bounds_lonlat: np.ndarray,
        slots: list[_Slot],
    ) -> None:
        """Record a location whose chunks :class:`LocationWriter` has just appended."""
        if transforms.shape[1:] != (6,) or bounds_lonlat.shape != (len(transforms), 4):
            raise ValueError(
                f"{header['item_id']}: transforms {transforms.shape} and "
                f"bounds_lonlat {bounds_lonlat.shape} are not (K, 6) and (K, 4)"
            )
        self._slots.extend(slots)
        self._locations.append(header)
        self._georeference.append((transforms, bounds_lonlat))

    def finish(self) -> Path:
        """Write the chunk file, then the chip file; returns the chip file's path."""
        lengths = [n for slot in self._slots for n in slot.chunk_lengths]
        stats = [slot.stats for slot in self._slots]
        histograms = [h for s in stats for h in s.histograms]
        empty = np.empty((0,), dtype=np.int64)
        members = {
            "header": np.array(
                json.dumps({"locations": self._locations, "failures": self._failures})
            ),
            "location_chips": np.array([len(t) for t, _ in self._georeference], dtype=np.int64),
            "transforms": _rows([t for t, _ in self._georeference], 6),
            "bounds_lonlat": _rows([b for _, b in self._georeference], 4),
            "slot_chips": np.array([len(s.chunk_lengths) for s in self._slots], dtype=np.int64),
            "chunk_offsets": np.concatenate([[0], np.cumsum(lengths, dtype=np.int64)]).astype(
                np.int64
            ),
            "chunk_crc32c": np.array(
                [c for s in self._slots for c in s.checksums], dtype=np.uint32
            ),
            "moments": (
                np.concatenate([np.stack([s.count, s.mean, s.m2], axis=1) for s in stats]).astype(
                    np.float64
                )
                if stats
                else np.empty((0, 3))
            ),
            "histogram_keys": _narrow(np.concatenate([h.keys for h in histograms] or [empty])),
            "histogram_counts": _narrow(np.concatenate([h.counts for h in histograms] or [empty])),
            "histogram_ends": np.cumsum([len(h.keys) for h in histograms], dtype=np.int64),
        }
        self._exit.close()  # the chunk file is complete: renamed into place
        with atomic_open(self.path, "wb") as f:
            np.savez(f, **members)
        return self.path

    def abort(self) -> None:
        """Give up: nothing is written (the chunk file's temporary file is removed)."""
        self._exit.__exit__(RuntimeError, RuntimeError("aborted"), None)


def _narrow(values: np.ndarray) -> np.ndarray:
    """Non-negative integers as uint32 where they fit, else as they are.

    uint32 takes half the bytes of int64: a Sentinel-2 location's histograms hold thousands of keys
    per band.
    """
    return values.astype(np.uint32) if not len(values) or values.max() < 1 << 32 else values


def _rows(parts: list[np.ndarray], width: int) -> np.ndarray:
    """``parts`` stacked as rows of ``width`` columns (float64; empty parts allowed)."""
    return np.concatenate(
        [np.empty((0, width))] + [np.asarray(p, dtype=np.float64).reshape(-1, width) for p in parts]
    )


class LocationWriter:
    """One location of a :class:`ChipFileWriter`: its chips come batch by batch.

    Each batch is encoded and measured at once; its chunks wait in one scratch file per sensor
    (removed at the end; a killed writer's are removed by the coregister stage as stale) until
    :meth:`finish` appends them to the chunk file in index order. One batch gives the bytes of
    :meth:`ChipFileWriter.add`.
    """

    def __init__(
        self, file: ChipFileWriter, sensors: dict[str, tuple[tuple[int, ...], np.dtype]]
    ) -> None:
        """Initialize a new LocationWriter instance.

        Args:
            file: the chip file writer the location belongs to.
            sensors: name -> (chip shape (C, H, W), storage dtype), in header order.
        """
        self._file = file
        self._layouts = {
            name: (tuple(shape), np.dtype(dtype)) for name, (shape, dtype) in sensors.items()
        }
        self._parts: dict[str, Any] = {}
        # name -> chip index -> (offset and length in its scratch part, CRC32C)
        self._chunks: dict[str, dict[int, tuple[int, int, int]]] = {name: {} for name in sensors}
        self._stats: dict[str, StreamingStats | None] = dict.fromkeys(sensors)

    def add(self, indexes: Iterable[int], chips: dict[str, np.ndarray]) -> None:
        """Encode and measure one batch.

        ``chips[name]`` is (K, C, H, W), chip ``k`` having index ``indexes[k]``, for every sensor.
        """
        indexes = list(indexes)
        for name in self._layouts:
            self.add_sensor(name, indexes, chips[name])

    def add_sensor(self, name: str, indexes: Iterable[int], batch: np.ndarray) -> None:
        """One sensor's chips of a batch (:meth:`add`), ``batch[k]`` having ``indexes[k]``."""
        if (batch.shape[1:], batch.dtype) != self._layouts[name]:
            raise ValueError(
                f"{name} chips {batch.shape[1:]} {batch.dtype} are not {self._layouts[name]}"
            )
        part, codec = self._part(name), chunk_codec(batch.dtype)
        for index, chip in zip(indexes, batch, strict=True):
            chunk = encode_chunk(chip, codec)
            self._chunks[name][index] = (part.tell(), part.write(chunk), chunk_checksum(chunk))
        if len(batch) or self._stats[name] is None:
            stats = StreamingStats.of_chips(batch, _statistics_nodata(name))
            merged = self._stats[name]  # merged as they come: memory stays flat
            self._stats[name] = stats if merged is None else combined_stats([merged, stats])

    def _part(self, name: str) -> Any:
        """The scratch file of one sensor's chunks.

        In memory up to ``_SPOOL_BYTES``, then an unnamed file beside the chip file (nothing is left
        behind if the process dies).
        """
        if name not in self._parts:
            self._parts[name] = tempfile.SpooledTemporaryFile(
                max_size=_SPOOL_BYTES, dir=self._file.path.parent
            )
        return self._parts[name]

    def abort(self) -> None:
        """Give up this location: nothing of it is written."""
        for part in self._parts.values():
            part.close()
        self._parts.clear()

    def finish(
        self,
        header: dict[str, Any],
        transforms: np.ndarray,
        bounds_lonlat: np.ndarray,
        item_ids: dict[str, str] | None = None,
    ) -> None:
        """Append the location's chunks to the chunk file in index order, and record it.

        Chunks go sensor after sensor; the record holds ``header`` fields, then the sensors' layout,
        then ``item_ids`` where given; ``transforms`` and ``bounds_lonlat`` in index order.
        """
        out, slots = self._file._chunks, []
        try:
            for name, (shape, dtype) in self._layouts.items():
                chunks = self._chunks[name]
                order = sorted(chunks)
                for index in order:
                    offset, length, _ = chunks[index]
                    part = self._parts[name]
                    part.seek(offset)
                    out.write(part.read(length))
                stats = self._stats[name] or StreamingStats.of_chips(
                    np.empty((0, *shape), dtype), _statistics_nodata(name)
                )
                slots.append(
                    _Slot([chunks[i][1] for i in order], [chunks[i][2] for i in order], stats)
                )
        finally:
            self.abort()
        header = {
            **header,
            "sensors": [
                {"name": name, "shape": list(shape), "dtype": dtype.name}
                for name, (shape, dtype) in self._layouts.items()
            ],
        }
        if item_ids:
            header["item_ids"] = item_ids
        self._file._append_location(header, transforms, bounds_lonlat, slots)


class ChipFile:
    """A chip file opened for reading.

    Its header and index arrays are read on first use (a few KB per location; the histograms only
    when statistics are asked for), the pixels stay in the chunk file until :meth:`location_chips`
    decodes them.

    Raises (from any method): OSError, ValueError, KeyError, zipfile.BadZipFile when the file
    is not a readable chip file.
    """

    def __init__(self, path: Path) -> None:
        """Initialize a new ChipFile instance (nothing is read yet).

        Args:
            path: the chip file (a ``.npz``).
        """
        self.path = Path(path)

    @cached_property
    def _members(self) -> dict[str, np.ndarray]:
        names = (
            "header",
            "location_chips",
            "transforms",
            "bounds_lonlat",
            "slot_chips",
            "chunk_offsets",
            "chunk_crc32c",
            "moments",
            "histogram_ends",
        )
        with np.load(self.path, allow_pickle=False) as npz:
            return {name: npz[name] for name in names}

    @cached_property
    def header(self) -> dict[str, Any]:
        """``locations`` (see the module doc) and ``failures``."""
        return json.loads(str(self._members["header"]))

    @property
    def locations(self) -> list[dict[str, Any]]:
        """Each location's header.

        Source, item_id, crs, datetimes, dropped, shifts, ``sensors`` (name, chip ``shape`` (C, H,
        W), ``dtype``) and, where set, item_ids.
        """
        return self.header["locations"]

    @property
    def failures(self) -> list[dict[str, Any]]:
        """The items of the batch that could not be co-registered."""
        return self.header.get("failures", [])

    @cached_property
    def _slot_starts(self) -> tuple[np.ndarray, np.ndarray]:
        """Per location, its first slot; per slot, its first chunk (each with the end)."""
        slots = np.cumsum([0] + [len(loc["sensors"]) for loc in self.locations])
        chunks = np.concatenate([[0], np.cumsum(self._members["slot_chips"])])
        return slots, chunks

    def slot(self, location: int, member: int) -> int:
        """The slot of the ``member``-th sensor of the ``location``-th location."""
        return int(self._slot_starts[0][location]) + member

    def chip_count(self, slot: int) -> int:
        """Chips of a slot."""
        return int(self._members["slot_chips"][slot])

    def chunk_offsets(self, slot: int) -> np.ndarray:
        """Where each chip of a slot starts in the chunk file, and, last, where they end.

        K + 1 offsets.
        """
        first = int(self._slot_starts[1][slot])
        return self._members["chunk_offsets"][first : first + self.chip_count(slot) + 1]

    def checksums(self, slot: int) -> np.ndarray:
        """The CRC32C of each chip's chunk of a slot (K, uint32)."""
        first = int(self._slot_starts[1][slot])
        return self._members["chunk_crc32c"][first : first + self.chip_count(slot)]

    @cached_property
    def _first_row(self) -> np.ndarray:
        """Per location, its first row of ``transforms`` and ``bounds_lonlat`` (and the end)."""
        return np.concatenate([[0], np.cumsum(self._members["location_chips"])])

    def georeference(self, location: int) -> tuple[np.ndarray, np.ndarray]:
        """The (K, 6) transforms and (K, 4) lon/lat bounds of a location's chips."""
        rows = self._first_row
        part = slice(int(rows[location]), int(rows[location + 1]))
        return self._members["transforms"][part], self._members["bounds_lonlat"][part]

    def location_chip_count(self, location: int) -> int:
        """Chips of a location (its georeference rows)."""
        return int(self._members["location_chips"][location])

    @cached_property
    def _first_band(self) -> np.ndarray:
        """Per slot, its first row in ``moments`` and ``histogram_ends`` (and, last, the end)."""
        bands = [layout["shape"][0] for loc in self.locations for layout in loc["sensors"]]
        return np.concatenate([[0], np.cumsum(bands, dtype=np.int64)])

    def _band_rows(self, slot: int) -> slice:
        """The rows of a slot's bands in ``moments`` and ``histogram_ends``."""
        return slice(int(self._first_band[slot]), int(self._first_band[slot + 1]))

    def statistics(self, slot: int, dtype: np.dtype | str) -> StreamingStats:
        """The statistics of a slot's chips."""
        rows = self._band_rows(slot)
        count, mean, m2 = self._members["moments"][rows].T
        ends = self._members["histogram_ends"]
        begin = int(ends[rows.start - 1]) if rows.start else 0
        bounds = np.r_[begin, ends[rows]]
        keys, counts = self._histograms
        histograms = tuple(
            Histogram(keys[a:b].astype(np.int64), counts[a:b].astype(np.int64))
            for a, b in itertools.pairwise(bounds)
        )
        return StreamingStats(np.dtype(dtype).str, count.astype(np.int64), mean, m2, histograms)

    @cached_property
    def _histograms(self) -> tuple[np.ndarray, np.ndarray]:
        with np.load(self.path, allow_pickle=False) as npz:
            return npz["histogram_keys"], npz["histogram_counts"]

    def check(self) -> None:
        """Check that the index arrays agree with each other and with the chunk file's size.

        Raises:
            ValueError: naming the disagreement (OSError where the chunk file is missing).
        """
        members, locations = self._members, self.locations
        slots = sum(len(loc["sensors"]) for loc in locations)
        chips = int(members["location_chips"].sum())
        chunks = int(members["slot_chips"].sum())
        bands = sum(layout["shape"][0] for loc in locations for layout in loc["sensors"])
        expected = {
            "location_chips": (len(locations),),
            "transforms": (chips, 6),
            "bounds_lonlat": (chips, 4),
            "slot_chips": (slots,),
            "chunk_offsets": (chunks + 1,),
            "chunk_crc32c": (chunks,),
            "moments": (bands, 3),
            "histogram_ends": (bands,),
        }
        for name, shape in expected.items():
            if members[name].shape != shape:
                raise ValueError(f"{name} has shape {members[name].shape}, not {shape}")
        end, size = int(members["chunk_offsets"][-1]), chunk_file(self.path).stat().st_size
        if size != end:
            raise ValueError(f"its chunk file {chunk_file(self.path)} has {size} bytes, not {end}")

    def location_chips(self, location: int, pixels: bool) -> LocationChips:
        """One location as :class:`LocationChips`.

        Chips decoded, or, without ``pixels``, a (K, 0, 0, 0) array per sensor (chip counts without
        the chips).
        """
        header = self.locations[location]
        sensors = {}
        for member, layout in enumerate(header["sensors"]):
            slot = self.slot(location, member)
            sensors[layout["name"]] = (
                self._decode(slot, layout)
                if pixels
                else np.empty((self.chip_count(slot), 0, 0, 0), dtype=np.uint8)
            )
        transforms, bounds = self.georeference(location)
        return LocationChips(
            source=header["source"],
            item_id=header["item_id"],
            sensors=sensors,
            crs=header["crs"],
            transforms=transforms,
            bounds_lonlat=bounds,
            datetimes=header["datetimes"],
            dropped=header["dropped"],
            shifts=header["shifts"],
            item_ids=header.get("item_ids", {}),
        )

    def _decode(self, slot: int, layout: dict[str, Any]) -> np.ndarray:
        shape, dtype = tuple(layout["shape"]), np.dtype(layout["dtype"])
        offsets = self.chunk_offsets(slot)
        chips = np.empty((len(offsets) - 1, *shape), dtype=dtype)
        with open(chunk_file(self.path), "rb") as f:
            f.seek(int(offsets[0]))
            for k, length in enumerate(np.diff(offsets)):
                chips[k] = decode_chunk(f.read(int(length)), shape, dtype)
        return chips


class ChunkWriteError(OSError):
    """Copying chunks failed on the writing side (disk full, quota, file too large)."""


def copy_chunks(path: Path, begin: int, end: int, out: int) -> None:
    """Copy bytes ``begin:end`` of the chunk file of the chip file ``path`` to ``out``.

    ``out`` is a file descriptor, written at its position: the copy happens inside the kernel, or
    through a buffer where the kernel cannot copy between the two files (another filesystem).

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
