"""Shard stage: co-registered chip files (pipeline/chips.py) -> the GeoPile-2 store.

The layout is :mod:`catalogs.store_format`'s. A build runs in four steps:

1. :func:`plan_store` reads the chip files' headers (no pixels), orders the locations by
   (source, item id), gives every chip of every sensor its index, and cuts each sensor's chips
   into shards of ``chips_per_shard``.
2. :func:`create_store` writes the skeleton into the staging store ``<store>.partial``: groups,
   the empty ``image`` arrays, the per-chip metadata, the pairs.
3. :func:`write_shard` writes one shard file of one sensor: the chips' chunk bytes, already
   encoded by the coregister stage, one after another, and the shard index
   (:mod:`catalogs.store_shards`); it returns the statistics of the locations that begin in
   it. Shards are independent files, so tasks run in any order and in any process.
4. :func:`finalize_store` merges the statistics into the attributes, consolidates the metadata
   and publishes the staging store as ``<store>`` with a rename.

Crash safety: every file is written whole or not at all (zarr's ``LocalStore`` and the shard
writer write to a temporary file and rename it), so a killed build leaves only whole files plus
temporary ones. The staging store records the fingerprint of the plan it was built for as its
last skeleton write; a rerun reuses a staging store of the same plan (otherwise starts it
afresh), skips each shard file that is present with the size and index it must have, and
:func:`finalize_store` deletes every file the layout does not name before publishing; it drops
the fingerprint just before consolidating, so a build killed in that last moment starts its
staging store afresh. Files are fsynced before the rename,
and an old store is moved aside only then: ``<store>`` is either missing, the old store or the
new one, never partial. The result is byte-identical to an uninterrupted build, whatever the
order or the processes the shards were written in: every byte is a function of the plan.
"""

from __future__ import annotations

import collections
import functools
import hashlib
import itertools
import json
import math
import os
import shutil
import warnings
import zipfile
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import zarr
from zarr.errors import ZarrUserWarning
from zarr.storage import LocalStore

from catalogs import store_format as fmt
from catalogs.atomic_files import atomic_open, fsync_path, replace_folder
from catalogs.sensors import get_sensor
from catalogs.store_shards import shard_index
from pipeline.chips import ChipFile, ChunkWriteError, chunk_file, copy_chunks
from pipeline.failures import ItemError
from pipeline.params import ShardParams
from pipeline.stats import ShardStats, StatsAccumulator

STAGING_SUFFIX = ".partial"
RETIRED_SUFFIX = ".old"
PLAN_ATTRIBUTE = "staging_plan"  # root attribute of a staging store; not in a published one


@dataclass(frozen=True)
class LocationPlan:
    """One location of a chip file as the store sees it.

    Attributes:
        path: the chip file.
        location: its index among the chip file's locations.
        source: collection id.
        item_id: catalog item id.
        crs: CRS of its grid, None without georeference.
        datetimes: sensor -> ISO 8601 acquisition time (None or missing where unknown).
        chip_count: chips per sensor (K).
        slots: sensor -> its slot in the chip file (pipeline/chips.py).
        first_chip: sensor -> store index of this location's chip 0.
        item_ids: sensor -> its chips' item(s) where not ``item_id``.
    """

    path: Path
    location: int
    source: str
    item_id: str
    crs: str | None
    datetimes: dict[str, str | None]
    chip_count: int
    slots: dict[str, int]
    first_chip: dict[str, int] = field(default_factory=dict)
    item_ids: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class SensorPlan:
    """One sensor group: its chips' dtype and shape, and how many there are."""

    name: str
    dtype: str
    chip_shape: tuple[int, int, int]
    chip_count: int
    nodata: float | None


@dataclass(frozen=True)
class ChipSpan:
    """Chips ``start:stop`` of one slot (a sensor of a location) of one chip file."""

    path: Path
    slot: int
    start: int
    stop: int


@dataclass(frozen=True)
class ShardTask:
    """Everything one shard writer needs (small and picklable: sent to dask workers).

    Attributes:
        staging: the staging store.
        fingerprint: the plan's; the staging store must have been created for it.
        sensor: sensor group.
        dtype: the sensor's storage dtype.
        bands: its band count.
        shard_index: shard of that group's ``image``.
        chips_per_shard: chips a shard holds (its index has one entry per chip).
        spans: where its chips are, in order.
        statistics: the chip files and slots whose statistics the shard reports: the
            locations whose first chip is in it.
    """

    staging: Path
    fingerprint: str
    sensor: str
    dtype: str
    bands: int
    shard_index: int
    chips_per_shard: int
    spans: tuple[ChipSpan, ...]
    statistics: tuple[tuple[Path, int], ...]


@dataclass(frozen=True)
class StorePlan:
    """What goes where in the store (see :func:`plan_store`)."""

    locations: tuple[LocationPlan, ...]
    sensors: dict[str, SensorPlan]
    chips_per_shard: int
    fingerprint: str

    def shard_count(self, sensor: str) -> int:
        """Number of shard files of ``sensor``'s ``image``."""
        return math.ceil(self.sensors[sensor].chip_count / self.chips_per_shard)

    def pairs(self) -> dict[str, np.ndarray]:
        """The pairs table (:data:`~catalogs.store_format.PAIR_ARRAYS` -> column).

        Chip ``k`` of sensors ``a < b`` of one location, by location, then sensor pair, then ``k``.
        """
        columns: dict[str, list[np.ndarray]] = {spec.name: [] for spec in fmt.PAIR_ARRAYS}
        for location in self.locations:
            k = np.arange(location.chip_count, dtype=np.int64)
            for a, b in itertools.combinations(sorted(location.first_chip), 2):
                columns[fmt.SENSOR_A].append(np.full(len(k), a, dtype=object))
                columns[fmt.INDEX_A].append(location.first_chip[a] + k)
                columns[fmt.SENSOR_B].append(np.full(len(k), b, dtype=object))
                columns[fmt.INDEX_B].append(location.first_chip[b] + k)
        return {
            spec.name: np.concatenate(columns[spec.name])
            if columns[spec.name]
            else np.array([], dtype=object if spec.dtype == "str" else spec.dtype)
            for spec in fmt.PAIR_ARRAYS
        }

    def shard_tasks(self, store_path: Path) -> list[ShardTask]:
        """One task per shard of every sensor, by sensor then shard."""
        staging = staging_path(store_path)
        return [
            ShardTask(
                staging,
                self.fingerprint,
                sensor.name,
                sensor.dtype,
                sensor.chip_shape[0],
                index,
                self.chips_per_shard,
                tuple(spans),
                tuple((span.path, span.slot) for span in spans if span.start == 0),
            )
            for sensor in self.sensors.values()
            for index, spans in enumerate(self._spans_by_shard(sensor.name))
        ]

    def _spans_by_shard(self, sensor: str) -> list[list[ChipSpan]]:
        size = self.chips_per_shard
        shards: list[list[ChipSpan]] = [[] for _ in range(self.shard_count(sensor))]
        for location in self.locations:
            first = location.first_chip.get(sensor)
            if first is None:
                continue
            stop = first + location.chip_count
            for shard in range(first // size, (stop - 1) // size + 1):
                start, end = max(first, shard * size), min(stop, (shard + 1) * size)
                shards[shard].append(
                    ChipSpan(location.path, location.slots[sensor], start - first, end - first)
                )
        return shards


def staging_path(store_path: Path) -> Path:
    """Where a store is built before it is published: ``<store>.partial``."""
    return store_path.with_name(store_path.name + STAGING_SUFFIX)


def plan_store(
    chip_files: list[Path], chips_per_shard: int = ShardParams.chips_per_shard
) -> StorePlan:
    """Plan the store of ``chip_files`` (LocationChips ``.npz`` files), reading headers only.

    The pixels stay in their chunk files.

    Locations are ordered by (source, item id); each sensor's chips are numbered in that
    order; locations without chips are left out.

    Args:
        chip_files: the coregister stage's output files.
        chips_per_shard: chips in one shard file of an ``image`` array.

    Returns:
        The plan; its fingerprint changes when any file, or any input to the layout, changes.

    Raises:
        ItemError: naming the file and the reason, when a file is unreadable or inconsistent
            (sensor unknown to the registry, dtype or band count unlike the registry's, chip
            shape unlike another file's for that sensor, two files of one item).
        ValueError: when ``chips_per_shard`` is below 1 or no file holds a chip.
    """
    if chips_per_shard < 1:
        raise ValueError(f"chips_per_shard must be at least 1, not {chips_per_shard}")
    headers = sorted(
        (header for path in chip_files for header in _read_locations(Path(path))),
        key=lambda h: (h[0].source, h[0].item_id),
    )
    _check_unique(headers)
    headers = [(location, shapes) for location, shapes in headers if location.chip_count]
    if not headers:
        raise ValueError(f"no chips to store in {len(chip_files)} chip file(s)")
    sensors = _plan_sensors(headers)
    locations = tuple(_number_chips([location for location, _ in headers], sensors))
    fingerprint = _fingerprint(locations, sensors, chips_per_shard)
    return StorePlan(locations, sensors, chips_per_shard, fingerprint)


_Shapes = dict[str, tuple[tuple[int, ...], np.dtype]]


def _read_locations(path: Path) -> list[tuple[LocationPlan, _Shapes]]:
    """The locations of a chip file and the shape and dtype of each sensor's chips.

    Pixels unread, checked against the registry.
    """
    chip_file = ChipFile(path)
    try:
        chip_file.check()
        locations = chip_file.locations
    except (OSError, ValueError, KeyError, TypeError, zipfile.BadZipFile) as error:
        raise ItemError(path.stem, str(path), f"not a readable chip file: {error}") from error
    plans = []
    for index, header in enumerate(locations):
        slots = {
            layout["name"]: chip_file.slot(index, member)
            for member, layout in enumerate(header["sensors"])
        }
        location = LocationPlan(
            path,
            index,
            header["source"],
            header["item_id"],
            header["crs"],
            header["datetimes"],
            chip_file.location_chip_count(index),
            slots,
            item_ids=header.get("item_ids", {}),
        )
        shapes = {
            layout["name"]: (
                (chip_file.chip_count(slots[layout["name"]]), *layout["shape"]),
                np.dtype(layout["dtype"]),
            )
            for layout in header["sensors"]
        }
        for sensor, (shape, dtype) in shapes.items():
            _check_chips(location, sensor, shape, dtype)
        for value in location.datetimes.values():
            if (problem := _datetime_problem(value)) is not None:
                raise ItemError(location.item_id, str(path), problem)
        plans.append((location, shapes))
    return plans


def _check_chips(
    location: LocationPlan, sensor: str, shape: tuple[int, ...], dtype: np.dtype
) -> None:
    """One sensor's chips are (K, C, H, W), in the registry's dtype and band count."""
    if len(shape) != 4 or shape[0] != location.chip_count:
        problem: str | None = (
            f"{sensor} chips have shape {shape}, not ({location.chip_count}, C, H, W)"
        )
    else:
        problem = _registry_problem(sensor, shape[1], dtype.name)
    if problem is not None:
        raise ItemError(location.item_id, str(location.path), problem)


@functools.lru_cache(maxsize=1024)
def _registry_problem(sensor: str, bands: int, dtype: str) -> str | None:
    """Why chips of ``sensor`` with ``bands`` bands of ``dtype`` disagree with the registry.

    None if they agree; asked once per combination, not per location.
    """
    try:
        entry = get_sensor(sensor)
    except KeyError as error:
        return error.args[0]
    if dtype != np.dtype(entry.dtype).name:
        return f"{sensor} chips are {dtype}, the registry stores {entry.dtype}"
    if bands != entry.num_bands:
        return f"{sensor} chips have {bands} bands, the registry has {entry.num_bands}"
    return None


@functools.lru_cache(maxsize=4096)
def _datetime_problem(value: str | None) -> str | None:
    """Why ``value`` is not a datetime the store can hold (None if it is)."""
    try:
        fmt.encode_datetime(value)
    except ValueError as error:
        return str(error)
    return None


def _check_unique(headers: list[tuple[LocationPlan, _Shapes]]) -> None:
    for (a, _), (b, _) in itertools.pairwise(headers):
        if (a.source, a.item_id) == (b.source, b.item_id):
            raise ItemError(
                b.item_id,
                str(b.path),
                f"a second chip file of item {b.source}/{b.item_id} (first: {a.path})",
            )


def _plan_sensors(headers: list[tuple[LocationPlan, _Shapes]]) -> dict[str, SensorPlan]:
    """Each sensor's chip shape (which every file must share) and count, by name."""
    first: dict[str, tuple[LocationPlan, tuple[int, ...]]] = {}
    counts: dict[str, int] = {}
    for location, shapes in headers:
        for sensor, (shape, _) in shapes.items():
            seen = first.setdefault(sensor, (location, shape[1:]))
            if seen[1] != shape[1:]:
                raise ItemError(
                    location.item_id,
                    str(location.path),
                    f"{sensor} chips are {shape[1:]} (C, H, W), but {seen[1]} in "
                    f"{seen[0].path}: a sensor's chips must share one shape",
                )
            counts[sensor] = counts.get(sensor, 0) + shape[0]
    return {
        name: SensorPlan(
            name, get_sensor(name).dtype, first[name][1], counts[name], get_sensor(name).nodata
        )
        for name in sorted(first)
    }


def _number_chips(
    locations: list[LocationPlan], sensors: dict[str, SensorPlan]
) -> Iterator[LocationPlan]:
    """The locations with ``first_chip`` filled: each sensor's chips numbered in order."""
    next_chip = dict.fromkeys(sensors, 0)
    for location in locations:
        first = {sensor: next_chip[sensor] for sensor in sorted(location.slots)}
        for sensor in first:
            next_chip[sensor] += location.chip_count
        yield LocationPlan(
            location.path,
            location.location,
            location.source,
            location.item_id,
            location.crs,
            location.datetimes,
            location.chip_count,
            location.slots,
            first,
            location.item_ids,
        )


def _fingerprint(
    locations: tuple[LocationPlan, ...], sensors: dict[str, SensorPlan], chips_per_shard: int
) -> str:
    """SHA-256 of everything the store's bytes depend on.

    Plus the size and mtime of each chip file and chunk file.
    """
    files, file_stats = [], {}
    for location in locations:
        if location.path not in file_stats:
            file_stats[location.path] = [
                (s.st_size, s.st_mtime_ns)
                for s in (path.stat() for path in (location.path, chunk_file(location.path)))
            ]
        files.append(
            [
                str(location.path),
                location.location,
                file_stats[location.path],
                location.source,
                location.item_id,
                location.crs,
                location.datetimes,
                location.first_chip,
                # (only where set: fingerprints of stores without pairs stay as they were)
                *([location.item_ids] if location.item_ids else []),
            ]
        )
    document = {
        "format_version": fmt.FORMAT_VERSION,
        "chips_per_shard": chips_per_shard,
        "sensors": [[s.name, s.dtype, s.chip_shape, s.chip_count] for s in sensors.values()],
        "files": files,
    }
    return hashlib.sha256(json.dumps(document, sort_keys=True).encode()).hexdigest()


def create_store(plan: StorePlan, store_path: Path) -> None:
    """Write the store's skeleton into ``<store>.partial``.

    Every group and array, the image arrays empty, the per-chip metadata and the pairs filled.

    Idempotent: a staging store already created for this plan is kept as it is (with the
    shards written so far); any other is deleted and created afresh.
    """
    staging = staging_path(store_path)
    if _staging_plan(staging) == plan.fingerprint:
        return
    if staging.exists():
        shutil.rmtree(staging)
    chip_counts = {name: sensor.chip_count for name, sensor in plan.sensors.items()}
    pairs = plan.pairs()
    root = zarr.create_group(
        LocalStore(staging),
        zarr_format=3,
        attributes=fmt.root_attributes(chip_counts, len(pairs[fmt.INDEX_A]), plan.chips_per_shard),
    )
    georeference = _georeference(plan)
    for sensor in plan.sensors.values():
        _create_sensor_group(root, plan, sensor, georeference[sensor.name])
    group = root.create_group(fmt.PAIRS_GROUP)
    for spec in fmt.PAIR_ARRAYS:
        _write_table_array(group, spec, pairs[spec.name])
    root.update_attributes({PLAN_ATTRIBUTE: plan.fingerprint})


def _staging_plan(staging: Path) -> str | None:
    """The fingerprint a staging store's skeleton was completed for, None if none."""
    try:
        return zarr.open_group(
            LocalStore(staging, read_only=True), mode="r", zarr_format=3
        ).attrs.get(PLAN_ATTRIBUTE)
    except (FileNotFoundError, ValueError, KeyError):
        return None


def _georeference(plan: StorePlan) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Per sensor, the (N, 6) transforms and (N, 4) lon/lat bounds of its chips, in order."""
    parts: dict[str, tuple[list[np.ndarray], list[np.ndarray]]] = {
        name: ([], []) for name in plan.sensors
    }
    chip_files = _ChipFiles()
    for location in plan.locations:
        transforms, bounds = chip_files.read(
            location.path, ChipFile.georeference, location.location
        )
        for sensor in location.first_chip:
            parts[sensor][0].append(transforms)
            parts[sensor][1].append(bounds)
    return {
        name: (np.concatenate(t).astype(np.float64), np.concatenate(b).astype(np.float64))
        for name, (t, b) in parts.items()
    }


def _create_sensor_group(
    root: zarr.Group,
    plan: StorePlan,
    sensor: SensorPlan,
    georeference: tuple[np.ndarray, np.ndarray],
) -> None:
    """A sensor's group: attributes, empty ``image``, ``band`` and the per-chip metadata."""
    entry = get_sensor(sensor.name)
    group = root.create_group(
        sensor.name, attributes=fmt.sensor_attributes(entry, sensor.chip_count)
    )
    group.create_array(
        fmt.IMAGE,
        shape=(sensor.chip_count, *sensor.chip_shape),
        dtype=sensor.dtype,
        compressors=fmt.IMAGE_CODECS,
        fill_value=fmt.image_fill_value(sensor.nodata),
        dimension_names=fmt.IMAGE_DIMS,
        **fmt.image_layout(sensor.chip_shape, plan.chips_per_shard),
    )
    _write_table_array(group, fmt.BAND_ARRAY, np.array(entry.band_names, dtype=object))
    values = _chip_metadata(plan, sensor.name, georeference)
    for spec in fmt.CHIP_METADATA:
        _write_table_array(group, spec, values[spec.name])


def _chip_metadata(
    plan: StorePlan, sensor: str, georeference: tuple[np.ndarray, np.ndarray]
) -> dict[str, np.ndarray]:
    """The per-chip metadata columns of one sensor (:data:`CHIP_METADATA` names)."""
    locations = [location for location in plan.locations if sensor in location.first_chip]
    counts = [location.chip_count for location in locations]

    def column(values: list[Any], dtype: Any) -> np.ndarray:
        return np.repeat(np.array(values, dtype=dtype), counts)

    datetimes = [fmt.encode_datetime(location.datetimes.get(sensor)) for location in locations]
    item_ids = [loc.item_ids.get(sensor, loc.item_id) for loc in locations]
    chip_files = _ChipFiles()
    checksums = [
        chip_files.read(loc.path, ChipFile.checksums, loc.slots[sensor]) for loc in locations
    ]
    return {
        fmt.ITEM_ID: column(item_ids, object),
        fmt.IMAGE_CRC32C: np.concatenate(checksums).astype(np.uint32),
        fmt.SOURCE: column([loc.source for loc in locations], object),
        fmt.CRS: column([loc.crs or fmt.NO_CRS for loc in locations], object),
        fmt.DATETIME: column(datetimes, np.int64),
        fmt.TRANSFORM: georeference[0],
        fmt.BOUNDS_LONLAT: georeference[1],
    }


def _write_table_array(group: zarr.Group, spec: fmt.TableArray, values: np.ndarray) -> None:
    """``values`` as the one-chunk array ``spec`` describes."""
    shape = spec.shape(len(values))
    array = group.create_array(
        spec.name,
        shape=shape,
        dtype=spec.dtype,
        chunks=tuple(max(n, 1) for n in shape),
        compressors=fmt.METADATA_COMPRESSOR,
        fill_value=spec.fill_value,
        dimension_names=spec.dimension_names,
        attributes=spec.attributes,
    )
    if len(values):
        array[...] = values


def write_shard(task: ShardTask) -> ShardStats:
    """Write one shard file of one sensor's ``image`` and return its statistics.

    The shard is written whole or not at all (a temporary file, then a rename). A shard file
    already in the staging store with the size and index it must have is kept as it is; any
    other is replaced.

    Raises:
        RuntimeError: when the staging store was not created for the task's plan.
        ItemError: naming the file, when a chip file cannot be read.
        OSError: naming the shard file, when it cannot be written (e.g. the disk is full).
    """
    if _staging_plan(task.staging) != task.fingerprint:
        raise RuntimeError(
            f"{task.staging}: not the staging store of this plan; run create_store first"
        )
    image = zarr.open_array(
        LocalStore(task.staging, read_only=True),
        path=f"{task.sensor}/{fmt.IMAGE}",
        mode="r",
        zarr_format=3,
    )
    path = _shard_file(image, task.staging, task.shard_index)
    chip_files = _ChipFiles()
    ranges = []  # (chip file, offsets of its chips' chunks and of their end)
    for span in task.spans:
        offsets = chip_files.read(span.path, ChipFile.chunk_offsets, span.slot)
        ranges.append((span.path, offsets[span.start : span.stop + 1]))
    index = shard_index(
        [n for _, offsets in ranges for n in np.diff(offsets)], task.chips_per_shard
    )
    chunk_bytes = sum(int(offsets[-1] - offsets[0]) for _, offsets in ranges)
    if not _is_written(path, chunk_bytes, index):
        _write_shard_file(path, ranges, index)
    parts = [
        chip_files.read(chip_file, ChipFile.statistics, slot, task.dtype)
        for chip_file, slot in task.statistics
    ]
    return ShardStats.of_parts(task.sensor, task.shard_index, parts, task.bands)


def _shard_file(image: zarr.Array, staging: Path, shard_index: int) -> Path:
    """Path of one shard file of an ``image`` array."""
    return staging / image.path / fmt.shard_key(image, shard_index)


def _is_written(path: Path, chunk_bytes: int, index: bytes) -> bool:
    """Whether ``path`` is a shard file of ``chunk_bytes`` of chunks ending in ``index``."""
    try:
        with open(path, "rb") as f:
            if os.fstat(f.fileno()).st_size != chunk_bytes + len(index):
                return False
            f.seek(chunk_bytes)
            return f.read() == index
    except FileNotFoundError:
        return False


def _write_shard_file(path: Path, ranges: list[tuple[Path, np.ndarray]], index: bytes) -> None:
    """The chunk bytes of each (chip file, chunk offsets) of ``ranges`` into ``path``.

    Then ``index``; written atomically.

    Raises:
        ItemError: naming the chip file, when its chunks cannot be read.
        OSError: naming ``path`` and the reason (its errno kept), when the shard file cannot
            be written (e.g. ENOSPC); no temporary file is left.
    """
    try:
        with atomic_open(path, "wb", buffering=0) as f:
            for chip_file, offsets in ranges:
                try:
                    copy_chunks(chip_file, int(offsets[0]), int(offsets[-1]), f.fileno())
                except ChunkWriteError:
                    raise
                except (OSError, ValueError) as error:
                    raise ItemError(
                        chip_file.stem, str(chip_file), f"cannot read its chunk file: {error}"
                    ) from error
            f.write(index)
    except OSError as error:
        raise OSError(
            error.errno, f"cannot write the shard file: {error.strerror}", str(path)
        ) from error


class _ChipFiles:
    """The chip files read last, their index read once while they are among them.

    Readers go through the locations in order, so consecutive locations mostly share a file;
    failures are ItemErrors naming the file.
    """

    def __init__(self, keep: int = 8) -> None:
        self._open: collections.OrderedDict[Path, ChipFile] = collections.OrderedDict()
        self._keep = keep

    def read(self, path: Path, method: Callable[..., Any], *args: Any) -> Any:
        """``method(chip file, *args)`` of the chip file ``path``."""
        chip_file = self._open.get(path)
        if chip_file is None:
            chip_file = self._open[path] = ChipFile(path)
            if len(self._open) > self._keep:
                self._open.popitem(last=False)
        try:
            return method(chip_file, *args)
        except (OSError, ValueError, KeyError, zipfile.BadZipFile) as error:
            raise ItemError(
                path.stem, str(path), f"cannot read its {method.__name__}: {error}"
            ) from error


def finalize_store(plan: StorePlan, store_path: Path, stats: Iterable[ShardStats]) -> Path:
    """Merge the shards' statistics into the sensor groups, consolidate and publish the store.

    Consolidate the metadata and publish the staging store as ``store_path`` (replacing an old store
    only then).

    Args:
        plan: the plan the staging store was built for.
        store_path: where the store is published.
        stats: what :func:`write_shard` returned for every shard, in any order; consumed
            once, as it comes (an iterator keeps memory bounded by one shard's statistics).

    Returns:
        ``store_path``.

    Raises:
        RuntimeError: when the staging store is not this plan's.
        ValueError: when ``stats`` misses a shard, repeats one or names one not in the plan.
    """
    staging = staging_path(store_path)
    if _staging_plan(staging) != plan.fingerprint:
        raise RuntimeError(f"{staging}: not the staging store of this plan")
    summaries = _merge_stats(plan, stats)
    root = zarr.open_group(LocalStore(staging), mode="r+", zarr_format=3)
    for name, summary in summaries.items():
        root[name].update_attributes({"statistics": summary.to_attrs()})
    _remove_unnamed_files(root, plan, staging)
    root.attrs.put({k: v for k, v in root.attrs.items() if k != PLAN_ATTRIBUTE})
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "Consolidated metadata", ZarrUserWarning)
        zarr.consolidate_metadata(LocalStore(staging), zarr_format=3)
    _sync_tree(staging)
    _publish(staging, store_path)
    return store_path


def _merge_stats(plan: StorePlan, stats: Iterable[ShardStats]) -> dict[str, fmt.BandStatistics]:
    """Each sensor's statistics, added up shard by shard as they come (in any order)."""
    accumulators = {
        name: StatsAccumulator(sensor.dtype, sensor.chip_shape[0])
        for name, sensor in plan.sensors.items()
    }
    expected = {(name, i) for name in plan.sensors for i in range(plan.shard_count(name))}
    seen: set[tuple[str, int]] = set()
    for shard in stats:
        key = (shard.sensor, shard.shard_index)
        if key in seen or key not in expected:
            raise ValueError(f"statistics of shard {key} given twice or not in the plan")
        seen.add(key)
        accumulators[shard.sensor].add_shard(shard)
    if seen != expected:
        raise ValueError(f"statistics missing for shards {sorted(expected - seen)}")
    return {name: accumulator.summary() for name, accumulator in accumulators.items()}


def _layout_nodes(plan: StorePlan) -> tuple[list[str], list[str]]:
    """The group and array paths of the store of ``plan``."""
    groups = [*plan.sensors, fmt.PAIRS_GROUP]
    tables = [fmt.BAND_ARRAY, *fmt.CHIP_METADATA]
    arrays = [
        f"{name}/{array}"
        for name in plan.sensors
        for array in (fmt.IMAGE, *(spec.name for spec in tables))
    ]
    arrays += [f"{fmt.PAIRS_GROUP}/{spec.name}" for spec in fmt.PAIR_ARRAYS]
    return groups, arrays


def _named_files(root: zarr.Group, plan: StorePlan, staging: Path) -> set[Path]:
    """Every file the layout names.

    Each node's ``zarr.json`` and each array's chunk (or shard) files.
    """
    groups, arrays = _layout_nodes(plan)
    named = {staging / "zarr.json", *(staging / path / "zarr.json" for path in groups + arrays)}
    for path in arrays:
        array = root[path]
        unit = array.shards or array.chunks
        grid = [range(math.ceil(n / u)) for n, u in zip(array.shape, unit, strict=True)]
        named.update(
            staging / path / array.metadata.encode_chunk_key(coords)
            for coords in itertools.product(*grid)
        )
    return named


def _remove_unnamed_files(root: zarr.Group, plan: StorePlan, staging: Path) -> None:
    """Delete what a killed writer left: temporary files, anything the layout does not name."""
    named = _named_files(root, plan, staging)
    for path in staging.rglob("*"):
        if path.is_file() and path not in named:
            path.unlink()


def _sync_tree(folder: Path) -> None:
    """Fsync every file and folder under ``folder`` (its contents survive a power cut)."""
    for path in [*folder.rglob("*"), folder]:
        fsync_path(path)


def _publish(staging: Path, store_path: Path) -> None:
    """Rename ``staging`` to ``store_path``; an old store is moved aside first, then removed."""
    retired = store_path.with_name(store_path.name + RETIRED_SUFFIX)
    if retired.exists():  # a killed swap's
        shutil.rmtree(retired)
    replace_folder(staging, store_path, retired)


MapFn = Callable[[Callable[[ShardTask], ShardStats], Iterable[ShardTask]], Iterable[ShardStats]]


def write_store(plan: StorePlan, store_path: Path, map_fn: MapFn = map) -> Path:
    """Build the store of ``plan`` at ``store_path``, resuming a killed build of the same plan.

    Args:
        plan: from :func:`plan_store`.
        store_path: where the store is published.
        map_fn: runs :func:`write_shard` over the shard tasks, like the builtin ``map`` (which
            is the default); pass a dask client's map-and-gather to write shards in parallel.
            Results may come in any order.

    Returns:
        ``store_path``.
    """
    create_store(plan, store_path)
    return finalize_store(plan, store_path, map_fn(write_shard, plan.shard_tasks(store_path)))
