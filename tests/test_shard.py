"""Shard stage: chip files -> the GeoPile-2 store; round trips, layout, statistics, crash safety."""

from __future__ import annotations

import hashlib
import json
import multiprocessing
import os
import random
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import xarray as xr
import zarr

from catalogs import store_format as fmt
from catalogs.sensors import get_sensor
from pipeline.chips import ChipFile, ChipFileWriter, LocationChips, chunk_file
from pipeline.failures import ItemError
from pipeline.shard import (
    RETIRED_SUFFIX,
    create_store,
    finalize_store,
    plan_store,
    staging_path,
    write_shard,
    write_store,
)
from pipeline.stats import FLOAT_BIN_BITS, StreamingStats

REPO = Path(__file__).resolve().parents[1]
S2, S1, RGB = "sentinel2_l1c", "sentinel1_grd", "rgb"
BIN_WIDTH = 2.0 ** -(FLOAT_BIN_BITS - 9)


def _paired_location(rng: np.random.Generator, index: int, chips: int, size: int) -> LocationChips:
    """A SEN12MS-like location: 13-band uint16 with nodata 0, 2-band dB float32 with NaN."""
    s2 = rng.integers(1, 6000, size=(chips, 13, size, size)).astype(np.uint16)
    s2[rng.random(s2.shape) < 0.02] = 0
    s1 = rng.normal(-14.0, 5.0, size=(chips, 2, size, size)).astype(np.float32)
    s1[rng.random(s1.shape) < 0.02] = np.nan
    k = np.arange(chips, dtype=np.float64)[:, None]
    transforms = np.hstack(
        [
            np.full((chips, 1), 10.0),
            np.zeros((chips, 1)),
            300000.0 + 1000.0 * index + size * 10.0 * k,
            np.zeros((chips, 1)),
            np.full((chips, 1), -10.0),
            np.full((chips, 1), 5e6),
        ]
    )
    bounds = np.hstack(
        [8.0 + index + 0.01 * k, 45.0 + 0.0 * k, 8.01 + index + 0.01 * k, 45.01 + 0.0 * k]
    )
    datetimes = {
        S2: f"2017-06-{index % 28 + 1:02d}T10:30:00Z",
        S1: None if index % 2 else f"2017-06-{index % 28 + 1:02d}T17:45:12.5+02:00",
    }
    return LocationChips(
        "sen12ms",
        f"ROI_{index:03d}",
        {S2: s2, S1: s1},
        f"EPSG:{32630 + index % 3}",
        transforms,
        bounds,
        datetimes,
    )


def _picture(rng: np.random.Generator, index: int, size: int) -> LocationChips:
    """A Million-AID-like picture: one RGB chip without georeference or time."""
    rgb = rng.integers(0, 256, size=(1, 3, size, size)).astype(np.uint8)
    return LocationChips(
        "millionaid",
        f"millionaid_train_P{index:04d}",
        {RGB: rgb},
        None,
        np.full((1, 6), np.nan),
        np.full((1, 4), np.nan),
        {RGB: None},
    )


def make_chip_files(
    root: Path, locations: int = 6, chips: int = 7, pictures: int = 5, size: int = 8, seed: int = 0
) -> list[Path]:
    """Chip files of a paired source and a picture source, as the coregister stage writes."""
    rng = np.random.default_rng(seed)
    paths = [
        _paired_location(rng, i, chips, size).save(root / "sen12ms" / f"ROI_{i:03d}.npz")
        for i in range(locations)
    ]
    paths += [
        _picture(rng, j, size).save(root / "millionaid" / f"P{j:04d}.npz") for j in range(pictures)
    ]
    return paths[::-1]  # not in store order: the plan orders them


def tree_hashes(folder: Path) -> dict[str, str]:
    """Relative path -> SHA-256 of every file under ``folder``."""
    return {
        str(path.relative_to(folder)): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(folder.rglob("*"))
        if path.is_file()
    }


def _locations(paths: Iterable[Path]) -> list[LocationChips]:
    chips = [LocationChips.load(path) for path in paths]
    return sorted(chips, key=lambda c: (c.source, c.item_id))


@pytest.fixture
def chip_files(tmp_path: Path) -> list[Path]:
    return make_chip_files(tmp_path / "chips")


@pytest.fixture
def built(tmp_path: Path, chip_files: list[Path]) -> Path:
    return write_store(plan_store(chip_files, chips_per_shard=4), tmp_path / "geopile2.zarr")


def test_plan_numbers_chips_by_source_then_item(chip_files: list[Path]) -> None:
    plan = plan_store(chip_files, chips_per_shard=4)
    assert [loc.item_id for loc in plan.locations] == (
        [f"millionaid_train_P{j:04d}" for j in range(5)] + [f"ROI_{i:03d}" for i in range(6)]
    )
    assert [loc.first_chip for loc in plan.locations[:5]] == [{RGB: j} for j in range(5)]
    assert [loc.first_chip for loc in plan.locations[5:]] == [
        {S1: 7 * i, S2: 7 * i} for i in range(6)
    ]
    assert {name: (s.chip_count, s.chip_shape, s.dtype) for name, s in plan.sensors.items()} == {
        RGB: (5, (3, 8, 8), "uint8"),
        S1: (42, (2, 8, 8), "float32"),
        S2: (42, (13, 8, 8), "uint16"),
    }
    assert [plan.shard_count(name) for name in plan.sensors] == [2, 11, 11]
    last = [task for task in plan.shard_tasks(Path("s.zarr")) if task.sensor == S2][-1]
    assert last.shard_index == 10  # store chips 40 and 41: chips 5 and 6 of ROI_005 (35-41)
    assert [(s.path.name, s.start, s.stop) for s in last.spans] == [("ROI_005.npz", 5, 7)]


def test_plan_pairs_chip_k_of_every_two_sensors(tmp_path: Path) -> None:
    rng = np.random.default_rng(5)
    location = _paired_location(rng, 0, 3, 4)
    location.sensors["dsm"] = rng.normal(100, 5, size=(3, 1, 4, 4)).astype(np.float32)
    files = [
        location.save(tmp_path / "a.npz"),
        _picture(rng, 0, 4).save(tmp_path / "b.npz"),
        _paired_location(rng, 1, 2, 4).save(tmp_path / "c.npz"),
    ]
    pairs = plan_store(files).pairs()
    assert pairs[fmt.SENSOR_A].tolist() == ["dsm"] * 6 + [S1] * 3 + [S1] * 2
    assert pairs[fmt.INDEX_A].tolist() == [0, 1, 2, 0, 1, 2, 0, 1, 2, 3, 4]
    assert pairs[fmt.SENSOR_B].tolist() == [S1] * 3 + [S2] * 3 + [S2] * 3 + [S2] * 2
    assert pairs[fmt.INDEX_B].tolist() == [0, 1, 2, 0, 1, 2, 0, 1, 2, 3, 4]


def _bad_shape(location: LocationChips) -> None:
    location.sensors[S2] = location.sensors[S2][:, :, :4, :4]


def _bad_dtype(location: LocationChips) -> None:
    location.sensors[S1] = location.sensors[S1].astype(np.float64)


def _bad_sensor(location: LocationChips) -> None:
    location.sensors["landsat9"] = location.sensors.pop(S1)


def _bad_count(location: LocationChips) -> None:
    location.sensors[S1] = location.sensors[S1][:-1]


def _bad_bands(location: LocationChips) -> None:
    location.sensors[S2] = location.sensors[S2][:, :12]


def _bad_georeference(location: LocationChips) -> None:
    location.transforms = location.transforms[:, :4]


def test_a_location_of_bad_georeference_is_refused_and_nothing_written(tmp_path: Path) -> None:
    location = _paired_location(np.random.default_rng(3), 0, 7, 8)
    _bad_georeference(location)
    with pytest.raises(
        ValueError,
        match=r"ROI_000: transforms \(7, 4\) and bounds_lonlat "
        r"\(7, 4\) are not \(K, 6\) and \(K, 4\)",
    ):
        location.save(tmp_path / "a.npz")
    assert list(tmp_path.iterdir()) == []


def _bad_datetime(location: LocationChips) -> None:
    location.datetimes[S2] = "summer 2017"


@pytest.mark.parametrize(
    ("spoil", "reason"),
    [
        (_bad_shape, "must share one shape"),
        (_bad_dtype, "the registry stores float32"),
        (_bad_sensor, "unknown sensor 'landsat9'"),
        (_bad_count, r"not \(7, C, H, W\)"),
        (_bad_bands, "12 bands, the registry has 13"),
        (_bad_datetime, "'summer 2017' is not ISO 8601"),
    ],
)
def test_plan_names_the_file_and_the_reason(
    tmp_path: Path, spoil: Callable[[LocationChips], None], reason: str
) -> None:
    files = make_chip_files(tmp_path, locations=2, pictures=0)
    location = LocationChips.load(files[0])
    spoil(location)
    location.save(files[0])
    with pytest.raises(ItemError, match=reason) as error:
        plan_store(files)
    assert str(files[0]) in str(error.value)


def test_plan_refuses_a_second_file_of_an_item_and_an_unreadable_file(tmp_path: Path) -> None:
    files = make_chip_files(tmp_path, locations=2, pictures=0)
    copy = LocationChips.load(files[0]).save(tmp_path / "copy.npz")
    with pytest.raises(ItemError, match="a second chip file of item sen12ms/ROI_001"):
        plan_store([*files, copy])
    broken = tmp_path / "broken.npz"
    broken.write_bytes(b"not a zip")
    with pytest.raises(ItemError, match="not a readable chip file") as error:
        plan_store([*files, broken])
    assert str(broken) in str(error.value)


def test_plan_refuses_a_chip_file_whose_chunk_file_is_cut_or_missing(tmp_path: Path) -> None:
    files = make_chip_files(tmp_path, locations=2, pictures=0)
    chunks = chunk_file(files[0])
    whole = chunks.read_bytes()
    chunks.write_bytes(whole[:-1])
    with pytest.raises(ItemError, match=rf"has {len(whole) - 1} bytes, not {len(whole)}") as error:
        plan_store(files)
    assert str(files[0]) in str(error.value)
    chunks.unlink()
    with pytest.raises(ItemError, match="not a readable chip file.*No such file"):
        plan_store(files)


def test_chip_files_keep_statistics_of_their_chips(tmp_path: Path) -> None:
    # Two locations in one chip file: each sensor of each keeps its own statistics (slots
    # numbered location after location, sensor after sensor).
    rng = np.random.default_rng(8)
    locations = [_paired_location(rng, i, 3 + i, 8) for i in range(2)]
    with ChipFileWriter(tmp_path / "a.npz") as writer:
        for location in locations:
            writer.add(location)
    chip_file = ChipFile(tmp_path / "a.npz")
    assert [loc["item_id"] for loc in chip_file.locations] == [x.item_id for x in locations]
    for number, location in enumerate(locations):
        for member, (sensor, chips) in enumerate(location.sensors.items()):
            stored = chip_file.statistics(chip_file.slot(number, member), chips.dtype)
            expected = StreamingStats.of_chips(chips, get_sensor(sensor).nodata)
            np.testing.assert_array_equal(stored.count, expected.count)
            np.testing.assert_array_equal(stored.mean, expected.mean)
            np.testing.assert_array_equal(stored.m2, expected.m2)
            for ours, theirs in zip(stored.histograms, expected.histograms, strict=True):
                np.testing.assert_array_equal(ours.keys, theirs.keys)
                np.testing.assert_array_equal(ours.counts, theirs.counts)
        loaded = LocationChips.load(tmp_path / "a.npz", number)
        for sensor, chips in location.sensors.items():
            np.testing.assert_array_equal(loaded.sensors[sensor], chips)
        np.testing.assert_array_equal(loaded.transforms, location.transforms)


def test_plan_of_no_chips_is_an_error(tmp_path: Path) -> None:
    empty = LocationChips(
        "sen12ms",
        "nothing",
        {S2: np.zeros((0, 13, 8, 8), np.uint16)},
        "EPSG:32631",
        np.zeros((0, 6)),
        np.zeros((0, 4)),
    )
    with pytest.raises(ValueError, match="no chips to store in 1 chip file"):
        plan_store([empty.save(tmp_path / "empty.npz")])


def test_every_chip_and_its_metadata_round_trip(built: Path, chip_files: list[Path]) -> None:
    root = fmt.open_store(built)
    first = {RGB: 0, S1: 0, S2: 0}
    for location in _locations(chip_files):
        for sensor, chips in location.sensors.items():
            group, rows = root[sensor], slice(first[sensor], first[sensor] + location.count)
            np.testing.assert_array_equal(group[fmt.IMAGE][rows], chips, strict=True)
            assert group[fmt.ITEM_ID][rows].tolist() == [location.item_id] * location.count
            assert group[fmt.SOURCE][rows].tolist() == [location.source] * location.count
            assert group[fmt.CRS][rows].tolist() == [location.crs or ""] * location.count
            np.testing.assert_array_equal(group[fmt.TRANSFORM][rows], location.transforms)
            np.testing.assert_array_equal(group[fmt.BOUNDS_LONLAT][rows], location.bounds_lonlat)
            stamp = location.datetimes[sensor]
            expected = (
                np.datetime64("NaT", "us")
                if stamp is None
                else np.datetime64(fmt.encode_datetime(stamp), "us")
            )
            np.testing.assert_array_equal(
                fmt.decode_datetimes(group[fmt.DATETIME][rows]), np.full(location.count, expected)
            )
            first[sensor] += location.count
    assert fmt.decode_datetimes(root[S1][fmt.DATETIME][:1])[0] == np.datetime64(
        "2017-06-01T15:45:12.500000"
    )


def test_pairs_table_in_the_store(built: Path) -> None:
    pairs = xr.open_zarr(built, group=fmt.PAIRS_GROUP)
    assert pairs.sizes == {fmt.PAIR_DIM: 42}
    assert pairs[fmt.SENSOR_A].values.tolist() == [S1] * 42
    assert pairs[fmt.SENSOR_B].values.tolist() == [S2] * 42
    np.testing.assert_array_equal(pairs[fmt.INDEX_A].values, np.arange(42))
    np.testing.assert_array_equal(pairs[fmt.INDEX_B].values, np.arange(42))
    assert fmt.read_manifest(built).pair_count == 42


def test_shards_layout_and_codec(tmp_path: Path) -> None:
    files = make_chip_files(tmp_path / "chips", locations=30, chips=10, pictures=0, size=4)
    store = write_store(plan_store(files, chips_per_shard=64), tmp_path / "s.zarr")
    for sensor in (S1, S2):
        shard_files = sorted((store / sensor / fmt.IMAGE / "c").rglob("*"))
        assert [
            p.relative_to(store / sensor / fmt.IMAGE).as_posix() for p in shard_files if p.is_file()
        ] == [f"c/{i}/0/0/0" for i in range(5)]
    image = zarr.open_array(store / S2 / fmt.IMAGE, mode="r")
    assert (image.shape, image.chunks, image.shards) == (
        (300, 13, 4, 4),
        (1, 13, 4, 4),
        (64, 13, 4, 4),
    )
    assert image.metadata.dimension_names == fmt.IMAGE_DIMS
    inner = image.metadata.codecs[0].codecs
    assert [codec.to_dict()["name"] for codec in inner] == ["bytes", "blosc", "crc32c"]
    assert inner[1].to_dict()["configuration"] == {
        "typesize": 2,
        "cname": "lz4",
        "clevel": fmt.IMAGE_CLEVEL,
        "shuffle": "bitshuffle",
        "blocksize": 0,
    }


def test_files_per_thousand_chips_of_a_realistic_build(tmp_path: Path) -> None:
    files = make_chip_files(tmp_path / "chips", locations=20, chips=200, pictures=100, size=4)
    store = write_store(plan_store(files, chips_per_shard=512), tmp_path / "s.zarr")
    chips = sum(fmt.read_manifest(store).sensors[name].chip_count for name in (RGB, S1, S2))
    stored = [path for path in store.rglob("*") if path.is_file()]
    assert chips == 8100
    assert 1000 * len(stored) / chips <= 10


def test_xarray_opens_each_sensor_group(built: Path) -> None:
    ds = xr.open_zarr(built, group=S2)
    assert ds[fmt.IMAGE].dims == fmt.IMAGE_DIMS
    assert ds[fmt.IMAGE].dtype == np.uint16
    assert ds[fmt.TRANSFORM].dims == (fmt.CHIP_DIM, fmt.AFFINE_DIM)
    assert ds[fmt.BOUNDS_LONLAT].dims == (fmt.CHIP_DIM, fmt.BOUND_DIM)
    assert ds[fmt.BAND].values.tolist() == list(get_sensor(S2).band_names)
    assert ds[fmt.DATETIME].dtype.kind == "M"
    assert ds[fmt.DATETIME].values[0] == np.datetime64("2017-06-01T10:30:00")
    rgb = xr.open_zarr(built, group=RGB)
    assert np.isnat(rgb[fmt.DATETIME].values).all()
    assert rgb[fmt.CRS].values.tolist() == [""] * 5
    assert rgb.attrs["nodata"] is None and ds.attrs["scale"] == 0.0001
    assert xr.open_zarr(built, group=S1).attrs["nodata"] == "NaN"


def test_metadata_is_consolidated_and_staging_is_gone(built: Path) -> None:
    root = json.loads((built / "zarr.json").read_text())
    consolidated = root["consolidated_metadata"]["metadata"]
    assert {f"{S2}/{fmt.IMAGE}", f"{fmt.PAIRS_GROUP}/{fmt.INDEX_B}", RGB} <= set(consolidated)
    assert consolidated[S2]["attributes"]["statistics"]["count"][0] > 0
    assert root["attributes"] == {
        "format": "geopile2",
        "format_version": 2,
        "sensors": [RGB, S1, S2],
        "chip_counts": {RGB: 5, S1: 42, S2: 42},
        "pair_count": 42,
        "chips_per_shard": 4,
    }
    assert not staging_path(built).exists()
    assert not built.with_name(built.name + RETIRED_SUFFIX).exists()


def test_statistics_equal_numpy_on_the_same_chips(built: Path, chip_files: list[Path]) -> None:
    manifest = fmt.read_manifest(built)
    for sensor in (RGB, S1, S2):
        chips = np.concatenate(
            [loc.sensors[sensor] for loc in _locations(chip_files) if sensor in loc.sensors]
        )
        stats, nodata = manifest.sensors[sensor].statistics, manifest.sensors[sensor].nodata
        for band in range(chips.shape[1]):
            values = chips[:, band].ravel()
            values = values[np.isfinite(values)] if values.dtype.kind == "f" else values
            if nodata is not None and not np.isnan(nodata):
                values = values[values != nodata]
            assert stats.count[band] == values.size
            assert stats.mean[band] == pytest.approx(values.astype(np.float64).mean(), rel=1e-9)
            assert stats.std[band] == pytest.approx(values.astype(np.float64).std(), rel=1e-9)
            for q in fmt.STAT_PERCENTILES:
                exact = float(np.percentile(values, q))
                if values.dtype.kind == "f":
                    assert abs(stats.percentiles[q][band] - exact) <= BIN_WIDTH * abs(exact)
                else:
                    assert stats.percentiles[q][band] == exact


def test_resume_after_a_crash_gives_the_same_bytes(
    tmp_path: Path, built: Path, chip_files: list[Path]
) -> None:
    plan = plan_store(chip_files, chips_per_shard=4)
    store = tmp_path / "resumed.zarr"
    create_store(plan, store)
    for task in plan.shard_tasks(store)[::2]:
        write_shard(task)
    staging = staging_path(store)
    shards = sorted(staging.glob(f"{S2}/{fmt.IMAGE}/c/*/0/0/0"))
    shards[0].unlink()  # a shard never written
    whole = shards[1].read_bytes()
    shards[1].write_bytes(whole[: len(whole) // 2])  # a shard cut short
    (shards[2].parent / "0.7f3a.partial").write_bytes(whole[:100])  # a temporary file left
    (staging / S1 / "zarr.json.tmp").write_text("{")
    assert write_store(plan, store) == store
    assert tree_hashes(store) == tree_hashes(built)


def test_shards_written_in_reverse_order_give_the_same_bytes(
    tmp_path: Path, built: Path, chip_files: list[Path]
) -> None:
    def reversed_map(fn: Callable, tasks: Iterable) -> list:
        return [fn(task) for task in reversed(list(tasks))]

    plan = plan_store(chip_files, chips_per_shard=4)
    store = write_store(plan, tmp_path / "reversed.zarr", map_fn=reversed_map)
    assert tree_hashes(store) == tree_hashes(built)


def test_shards_written_by_two_processes_give_the_same_bytes(
    tmp_path: Path, built: Path, chip_files: list[Path]
) -> None:
    plan = plan_store(chip_files, chips_per_shard=4)
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=2, mp_context=context) as pool:
        store = write_store(plan, tmp_path / "parallel.zarr", map_fn=pool.map)
    assert tree_hashes(store) == tree_hashes(built)


def test_changed_chips_restart_the_staging_store(
    tmp_path: Path, built: Path, chip_files: list[Path]
) -> None:
    store = tmp_path / "restarted.zarr"
    older = plan_store(chip_files[:-1], chips_per_shard=4)
    create_store(older, store)
    for task in older.shard_tasks(store):
        write_shard(task)
    write_store(plan_store(chip_files, chips_per_shard=4), store)
    assert tree_hashes(store) == tree_hashes(built)


def test_a_new_build_replaces_the_old_store(
    tmp_path: Path, built: Path, chip_files: list[Path]
) -> None:
    store = tmp_path / "replaced.zarr"
    write_store(plan_store(chip_files[:3], chips_per_shard=4), store)
    old = tree_hashes(store)
    write_store(plan_store(chip_files, chips_per_shard=4), store)
    assert tree_hashes(store) == tree_hashes(built) != old
    assert sorted(p.name for p in tmp_path.iterdir()) == ["chips", "geopile2.zarr", "replaced.zarr"]


def test_shard_writer_and_finalizer_refuse_a_foreign_or_incomplete_build(
    tmp_path: Path, chip_files: list[Path]
) -> None:
    plan = plan_store(chip_files, chips_per_shard=4)
    other = plan_store(chip_files[1:], chips_per_shard=4)
    store = tmp_path / "s.zarr"
    create_store(plan, store)
    with pytest.raises(RuntimeError, match="not the staging store of this plan"):
        write_shard(other.shard_tasks(store)[0])
    stats = [write_shard(task) for task in plan.shard_tasks(store)]
    with pytest.raises(ValueError, match=r"missing for shards \[\('rgb', 1\)\]"):
        finalize_store(plan, store, stats[:1] + stats[2:])
    with pytest.raises(ValueError, match="given twice"):
        finalize_store(plan, store, stats + stats[:1])
    assert not store.exists()


def test_fortran_ordered_chips_round_trip(tmp_path: Path) -> None:
    location = _paired_location(np.random.default_rng(6), 0, 5, 8)
    location.sensors[S2] = np.asfortranarray(location.sensors[S2])
    path = location.save(tmp_path / "f.npz")
    store = write_store(plan_store([path], chips_per_shard=2), tmp_path / "s.zarr")
    np.testing.assert_array_equal(
        zarr.open_array(store / S2 / fmt.IMAGE)[:], location.sensors[S2], strict=True
    )


WRITER = """
import sys
from pathlib import Path
from pipeline.shard import plan_store, write_store
plan = plan_store(sorted(Path(sys.argv[1]).rglob("*.npz")), chips_per_shard=int(sys.argv[3]))
print("ready", flush=True)
write_store(plan, Path(sys.argv[2]))
"""


def _start_writer(chips: Path, store: Path, chips_per_shard: int) -> subprocess.Popen:
    """The shard stage in another process; returns once it has planned (imports are done)."""
    process = subprocess.Popen(
        [sys.executable, "-c", WRITER, str(chips), str(store), str(chips_per_shard)],
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        stdout=subprocess.PIPE,
        text=True,
    )
    assert process.stdout is not None and process.stdout.readline() == "ready\n"
    return process


def test_builds_killed_at_random_moments_resume_to_the_same_store(tmp_path: Path) -> None:
    chips = tmp_path / "chips"
    files = make_chip_files(chips, locations=12, chips=20, pictures=10, size=32)
    # The reference build is timed as the killed ones run: a writer process, from its plan on
    # (an in-process first build, paying one-off costs, ran longer than they do).
    timed = _start_writer(chips, tmp_path / "reference.zarr", 8)
    started = time.perf_counter()
    assert timed.wait(timeout=120) == 0
    duration = time.perf_counter() - started
    reference = tree_hashes(tmp_path / "reference.zarr")
    store = tmp_path / "geopile2.zarr"

    def write_old_store() -> dict[str, str]:  # an earlier, smaller build that the writers replace
        return tree_hashes(write_store(plan_store(files[:4], chips_per_shard=8), store))

    old = write_old_store()
    moments = random.Random(0)
    kills = 0
    for _ in range(20):  # kill k at a random moment of the k-th sixth of a whole build
        writer = _start_writer(chips, store, 8)
        time.sleep(duration * (kills + moments.random()) / 6)
        killed = writer.poll() is None
        writer.kill()
        writer.wait()
        assert not store.exists() or tree_hashes(store) in (old, reference)
        kills += killed
        if not killed:  # it finished first (a faster run than the timed one): start over,
            shutil.rmtree(store)  # aiming earlier (runs vary with the machine's load)
            assert write_old_store() == old
            duration *= 0.8
        if kills == 6:
            break
    assert kills == 6
    writer = _start_writer(chips, store, 8)
    assert writer.wait(timeout=120) == 0
    assert tree_hashes(store) == reference
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "chips",
        "geopile2.zarr",
        "reference.zarr",
    ]
