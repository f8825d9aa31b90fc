"""The GeoPile-2 store format: encodings, attributes and the reader's entry points."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import google_crc32c
import numpy as np
import pytest
import zarr

from catalogs import store_format as fmt
from catalogs.sensors import get_sensor
from catalogs.store_shards import index_nbytes, read_shard_index
from pipeline.chips import LocationChips
from pipeline.shard import plan_store, write_store


@pytest.mark.parametrize(
    "text",
    [
        "2017-06-01T10:30:00Z",
        "2017-06-01T12:30:00+02:00",
        "2017-06-01T10:30:00",
        "2017-06-01T10:30:00.000000+00:00",
    ],
)
def test_datetimes_are_utc_microseconds(text: str) -> None:
    assert fmt.encode_datetime(text) == 1_496_313_000_000_000


def test_unknown_datetime_is_nat_and_fractions_survive() -> None:
    stored = np.array([fmt.encode_datetime(None), fmt.encode_datetime("1969-12-31T23:59:59.5Z")])
    assert stored.tolist() == [fmt.NAT, -500_000]
    decoded = fmt.decode_datetimes(stored)
    assert np.isnat(decoded[0])
    assert decoded[1] == np.datetime64("1969-12-31T23:59:59.500000")


def test_a_datetime_that_is_not_iso_8601_is_named() -> None:
    with pytest.raises(ValueError, match="'June 1st' is not ISO 8601"):
        fmt.encode_datetime("June 1st")


@pytest.mark.parametrize("nodata", [None, 0.0, -9999.0])
def test_nodata_round_trips_through_json(nodata: float | None) -> None:
    encoded = json.loads(json.dumps(fmt.encode_nodata(nodata), allow_nan=False))
    assert fmt.decode_nodata(encoded) == nodata


def test_nan_nodata_is_written_as_the_string_nan() -> None:
    assert fmt.encode_nodata(math.nan) == "NaN"
    assert math.isnan(fmt.decode_nodata("NaN"))


def test_statistics_attributes_round_trip_as_strict_json() -> None:
    stats = fmt.BandStatistics(
        count=(10, 0),
        mean=(1.5, None),
        std=(0.25, None),
        percentiles={q: (float(q), None) for q in fmt.STAT_PERCENTILES},
    )
    attrs = json.loads(json.dumps(stats.to_attrs(), allow_nan=False))
    assert list(attrs) == ["count", "mean", "std", "p1", "p2", "p50", "p98", "p99"]
    assert attrs["p98"] == [98.0, None]
    assert fmt.BandStatistics.from_attrs(attrs) == stats


def test_sensor_attributes_come_from_the_registry() -> None:
    assert fmt.sensor_attributes(get_sensor("sentinel1_grd"), 12) == {
        "title": "Sentinel-1 C-SAR IW GRD backscatter (sigma0, dB)",
        "kind": "sar",
        "dtype": "float32",
        "nodata": "NaN",
        "scale": 1.0,
        "offset": 0.0,
        "unit": "dB",
        "model_unit": "dB",
        "gsd_m": 10.0,
        "band_names": ["VV", "VH"],
        "chip_count": 12,
    }


def test_layout_constants() -> None:
    assert fmt.image_layout((13, 256, 256), 64) == {
        "chunks": (1, 13, 256, 256),
        "shards": (64, 13, 256, 256),
    }
    assert fmt.image_fill_value(None) == 0 and fmt.image_fill_value(-9999.0) == -9999.0
    assert [spec.name for spec in fmt.CHIP_METADATA] == [
        "item_id",
        "source",
        "crs",
        "transform",
        "datetime",
        "bounds_lonlat",
        "image_crc32c",
    ]
    transform = fmt.CHIP_METADATA[3]
    assert transform.shape(7) == (7, 6)
    assert transform.dimension_names == ("chip", "affine")
    assert [spec.name for spec in fmt.PAIR_ARRAYS] == ["sensor_a", "index_a", "sensor_b", "index_b"]
    assert fmt.IMAGE_CODECS[0] is fmt.IMAGE_COMPRESSOR
    assert fmt.IMAGE_CODECS[1].to_dict() == {"name": "crc32c"}
    configuration = fmt.IMAGE_COMPRESSOR.to_dict()["configuration"]
    assert {key: configuration[key] for key in ("cname", "clevel", "shuffle")} == {
        "cname": "lz4",
        "clevel": fmt.IMAGE_CLEVEL,
        "shuffle": "bitshuffle",
    }


@pytest.fixture(scope="module")
def tiny_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("format")
    rng = np.random.default_rng(0)
    dsm = rng.normal(300.0, 20.0, size=(3, 1, 4, 4)).astype(np.float32)
    dsm[0, 0, 0, 0] = -9999.0
    location = LocationChips(
        "mdas",
        "scene_1",
        {"dsm": dsm, "rgb": rng.integers(0, 256, (3, 3, 4, 4), np.uint8)},
        "EPSG:32632",
        np.zeros((3, 6)),
        np.zeros((3, 4)),
        {"dsm": None, "rgb": None},
    )
    return write_store(
        plan_store([location.save(root / "scene_1.npz")], chips_per_shard=2), root / "geopile2.zarr"
    )


def test_manifest_describes_the_store(tiny_store: Path) -> None:
    manifest = fmt.read_manifest(tiny_store)
    assert (manifest.format_version, manifest.chips_per_shard, manifest.pair_count) == (2, 2, 3)
    assert list(manifest.sensors) == ["dsm", "rgb"]
    dsm = manifest.sensors["dsm"]
    assert (dsm.dtype, dsm.nodata, dsm.unit, dsm.band_names, dsm.chip_count, dsm.chip_shape) == (
        "float32",
        -9999.0,
        "m",
        ("elevation",),
        3,
        (1, 4, 4),
    )
    assert dsm.statistics.count == (47,)
    assert manifest.sensors["rgb"].statistics.count == (48, 48, 48)


def test_open_store_checks_what_it_opens(tmp_path: Path, tiny_store: Path) -> None:
    assert fmt.open_store(tiny_store)["dsm"][fmt.IMAGE].shape == (3, 1, 4, 4)
    with pytest.raises(fmt.StoreFormatError, match="not a consolidated Zarr v3 store"):
        fmt.open_store(tmp_path / "missing.zarr")
    for name, attributes, reason in [
        ("other.zarr", {"format": "something"}, "not a geopile2 store"),
        (
            "future.zarr",
            {"format": "geopile2", "format_version": 99},
            "format version 99, this code reads version 2",
        ),
    ]:
        zarr.create_group(tmp_path / name, zarr_format=3, attributes=attributes)
        with pytest.raises(fmt.StoreFormatError, match="not a consolidated Zarr v3 store"):
            fmt.open_store(tmp_path / name)
        zarr.consolidate_metadata(tmp_path / name)
        with pytest.raises(fmt.StoreFormatError, match=reason):
            fmt.open_store(tmp_path / name)


def test_acquisition_range_spans_the_known_times_of_the_chosen_sensors(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    chips = []
    for name, times in [
        ("a", {"dsm": "2018-05-07T10:00:00.250Z", "rgb": "2018-05-06T09:00:00Z"}),
        ("b", {"dsm": "2019-01-02T03:04:05+01:00", "rgb": None}),
        ("c", {"dsm": None, "rgb": None}),
    ]:
        location = LocationChips(
            "mdas",
            name,
            {
                "dsm": rng.normal(size=(1, 1, 4, 4)).astype(np.float32),
                "rgb": rng.integers(0, 256, (1, 3, 4, 4), np.uint8),
            },
            "EPSG:32632",
            np.zeros((1, 6)),
            np.zeros((1, 4)),
            times,
        )
        chips.append(location.save(tmp_path / f"{name}.npz"))
    store = write_store(plan_store(chips, chips_per_shard=2), tmp_path / "geopile2.zarr")
    assert fmt.acquisition_range(store, ["dsm", "rgb"]) == (
        "2018-05-06T09:00:00Z",
        "2019-01-02T02:04:05Z",
    )
    assert fmt.acquisition_range(store, ["dsm"]) == (
        "2018-05-07T10:00:00.250000Z",
        "2019-01-02T02:04:05Z",
    )
    assert fmt.acquisition_range(store, ["rgb"]) == ("2018-05-06T09:00:00Z", "2018-05-06T09:00:00Z")


def test_acquisition_range_of_pictures_alone_is_unknown(tiny_store: Path) -> None:
    assert fmt.acquisition_range(tiny_store, ["dsm", "rgb"]) is None
    with pytest.raises(KeyError, match=r"no sensor\(s\) \['s2'\]; it holds \['dsm', 'rgb'\]"):
        fmt.acquisition_range(tiny_store, ["s2"])


def test_each_chip_carries_its_chunk_checksum_and_zarr_refuses_a_flipped_bit(
    tiny_store: Path, tmp_path: Path
) -> None:
    store = tmp_path / "copy.zarr"
    shutil.copytree(tiny_store, store)
    group = fmt.open_store(store)["rgb"]
    shard = store / "rgb" / "image" / "c" / "0" / "0" / "0" / "0"
    data = shard.read_bytes()
    index = read_shard_index(data[-index_nbytes(2) :], 2)
    chunks = [data[offset : offset + length] for offset, length in index.tolist()]
    assert group[fmt.IMAGE_CRC32C][:].tolist()[:2] == [
        google_crc32c.value(chunk[:-4]) for chunk in chunks
    ]
    flipped = bytearray(data)
    flipped[int(index[1, 0]) + 20] ^= 0x01
    shard.write_bytes(bytes(flipped))
    with pytest.raises(ValueError, match="checksum do not match"):
        zarr.open_array(store, path="rgb/image", mode="r")[1]
