"""The reading layer (catalogs/scene_reading.py): any sensor read onto any target grid by blocks."""

from __future__ import annotations

import dataclasses
import pickle
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import rasterio
from affine import Affine
from rasterio.crs import CRS
from rasterio.windows import Window

from catalogs import scene_reading
from catalogs.grid import Grid
from catalogs.item_assets import ItemReadError
from catalogs.scene_reading import (
    ReadLog,
    block_grid,
    check_size,
    kept_open,
    open_raster,
    raster_sensors,
    sensor_block,
    sensor_blocks,
    warp,
)
from catalogs.sensors import get_sensor
from tests.data.coregister import data

REF = data.REFERENCE_TRANSFORM
REF_SHAPE = (data.REFERENCE_PX, data.REFERENCE_PX)
LIMIT = 10**9


def square_item(folder: Path) -> dict[str, Any]:
    """Sentinel-2 on the reference grid and a DSM on a grid of its own in another CRS, over the
    square, and a land-cover mask."""
    s2 = data.write_raster(
        folder / "s2.tif", data.s2_square(data.square()), data.REFERENCE_CRS, REF, nodata=0
    )
    transform, shape = data.covering_transform(data.SECONDARY_CRS, 7.5, 30.0, (2.1, 3.7))
    dsm = data.write_raster(
        folder / "dsm.tif",
        data.dsm_square(data.square(), data.SECONDARY_CRS, transform, shape),
        data.SECONDARY_CRS,
        transform,
        nodata=-9999.0,
    )
    mask = data.write_raster(
        folder / "lc.tif", np.ones((1, *REF_SHAPE), np.uint8), data.REFERENCE_CRS, REF, nodata=255
    )
    return data.stac_item(
        "square",
        "paired",
        {
            "s2": data.raster_asset(s2, "sentinel2_l2a"),
            "dsm": data.raster_asset(dsm, "dsm"),
            "lc": data.raster_asset(mask, "landcover"),
        },
    )


def opened(item: dict[str, Any], block_px: int, read_whole: bool = False) -> dict[str, list]:
    return {
        name: [
            open_raster(
                item["id"], a, max_raster_px=LIMIT, block_px=block_px, read_whole=read_whole
            )
            for a in assets
        ]
        for name, assets in raster_sensors(item).items()
    }


def test_raster_sensors_leave_masks_out(tmp_path: Path) -> None:
    sensors = raster_sensors(square_item(tmp_path))
    assert {name: [a.key for a in assets] for name, assets in sensors.items()} == {
        "dsm": ["dsm"],
        "sentinel2_l2a": ["s2"],
    }


def test_raster_sensors_refuse_a_band_held_twice(tmp_path: Path) -> None:
    item = square_item(tmp_path)
    item["assets"]["b02"] = data.raster_asset(tmp_path / "b02.tif", "sentinel2_l2a", ("B02",))
    with pytest.raises(
        ItemReadError, match=r"the sentinel2_l2a assets hold bands \['B01', 'B02', "
    ):
        raster_sensors(item)


def test_block_grid_is_the_window_of_the_grid() -> None:
    grid = Grid(CRS.from_string(data.REFERENCE_CRS), REF, REF_SHAPE)
    block = block_grid(grid, Window(16, 32, 24, 8))
    assert block.crs == grid.crs
    assert block.shape == (8, 24)
    assert block.transform == REF * Affine.translation(16, 32)


@pytest.mark.parametrize("read_whole", [False, True])
def test_blocks_are_the_windows_of_one_read_of_the_grid(tmp_path: Path, read_whole: bool) -> None:
    # Sentinel-2 is on the grid: a block is exactly the window of the whole read. The DSM is
    # warped from another CRS: the same coverage, values within GDAL's per-block approximation.
    item = square_item(tmp_path)
    rasters = opened(item, block_px=32, read_whole=read_whole)
    grid = rasters["sentinel2_l2a"][0].grid
    whole = sensor_blocks("square", rasters, grid, Window(0, 0, 64, 64))
    block = Window(32, 16, 32, 32)
    parts = sensor_blocks("square", rasters, grid, block)
    assert [p.sensor.name for p in parts] == ["sentinel2_l2a", "dsm"]
    rows, cols = block.toslices()
    np.testing.assert_array_equal(parts[0].data, whole[0].data[:, rows, cols])
    np.testing.assert_array_equal(parts[0].invalid, whole[0].invalid[rows, cols])
    np.testing.assert_array_equal(parts[1].invalid, whole[1].invalid[rows, cols])
    np.testing.assert_allclose(parts[1].data, whole[1].data[:, rows, cols], atol=0.5)
    assert parts[0].datetime is None  # the asset's own; the item's is the caller's to use


def test_a_raster_holds_no_open_file_and_pickles(tmp_path: Path) -> None:
    item = square_item(tmp_path)
    rasters = opened(item, block_px=16)  # 64 px rasters, larger than a block: read per block
    assert all(r.whole is None and not r.small for rs in rasters.values() for r in rs)
    copies = pickle.loads(pickle.dumps(rasters))
    grid = rasters["sentinel2_l2a"][0].grid
    block = Window(16, 16, 16, 16)
    for name in rasters:
        original = sensor_block("square", rasters[name], grid, block)
        copy = sensor_block("square", copies[name], grid, block)
        np.testing.assert_array_equal(copy.data, original.data)
        np.testing.assert_array_equal(copy.invalid, original.invalid)


def test_kept_open_reads_the_same_from_one_dataset_per_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    item = square_item(tmp_path)
    rasters = opened(item, block_px=16)
    grid = rasters["sentinel2_l2a"][0].grid
    blocks = [Window(c, r, 24, 24) for r in (0, 20, 40) for c in (0, 20, 40)]
    apart = [sensor_blocks("square", rasters, grid, b) for b in blocks]
    opens: list[str] = []
    real_open = rasterio.open
    monkeypatch.setattr(
        scene_reading.rasterio, "open", lambda href, *a, **k: opens.append(href) or real_open(href)
    )
    with kept_open():
        with kept_open():  # nested blocks share the datasets
            kept = [sensor_blocks("square", rasters, grid, b) for b in blocks]
        assert scene_reading._OPEN.datasets  # still open in the outer block
    assert sorted(opens) == sorted(
        {a.href for rs in rasters.values() for a in (r.asset for r in rs)}
    )
    assert scene_reading._OPEN.datasets == {}
    for one, other in zip(apart, kept, strict=True):
        for a, b in zip(one, other, strict=True):
            np.testing.assert_array_equal(a.data, b.data)
            np.testing.assert_array_equal(a.invalid, b.invalid)


def test_read_log_tells_no_data_on_the_grid(tmp_path: Path) -> None:
    item = square_item(tmp_path)
    rasters = opened(item, block_px=16)
    far = Grid(rasters["sentinel2_l2a"][0].grid.crs, REF * Affine.translation(10_000, 0), (8, 8))
    reads = ReadLog()
    dsm = sensor_block("square", rasters["dsm"], far, Window(0, 0, 8, 8), reads)
    assert dsm.invalid.all()
    with pytest.raises(ItemReadError, match=r"dsm\.tif: no data on the reference grid"):
        reads.check("square")


def test_size_limit_names_the_callers_parameter() -> None:
    with pytest.raises(ItemReadError) as error:
        check_size("x", "big.tif", 3000, 2000, 10**6, "max_raster_px")
    assert str(error.value) == (
        "item 'x', big.tif: declares 3000 x 2000 px (6,000,000), more than max_raster_px "
        "(1,000,000)"
    )


def test_linear_power_needs_nan_nodata() -> None:
    sensor = dataclasses.replace(get_sensor("sentinel1_grd"), nodata=-9999.0)
    grid = Grid(CRS.from_string(data.REFERENCE_CRS), REF, (4, 4))
    with pytest.raises(ValueError, match="linear_power resampling needs NaN as nodata"):
        warp(np.zeros((2, 4, 4), np.float32), grid, grid, sensor)


@pytest.mark.parametrize(
    ("sensor", "method"),
    [
        ("sentinel2_l2a", "bilinear"),
        ("sentinel2_l2a", "cubic"),
        ("sentinel1_grd", "average"),
        ("dsm", "bilinear"),
    ],
)
def test_a_source_without_nodata_pixels_warps_as_with_the_nodata_kernel(
    sensor: str, method: str
) -> None:
    # A 20 m raster onto a 10 m grid that it covers only in part (rotated 2 degrees, shifted):
    # GDAL's kernels without source masks must give the general kernel's pixels and coverage.
    entry = get_sensor(sensor)
    entry = dataclasses.replace(
        entry, resampling=dataclasses.replace(entry.resampling, method=method)
    )
    rng = np.random.default_rng(3)
    values = rng.uniform(1, 5000, size=(2, 40, 40))
    data_ = (
        (values / 250 - 25).astype(np.float32)
        if entry.dtype == "float32"
        else values.astype(entry.dtype)
    )
    crs = CRS.from_string(data.REFERENCE_CRS)
    source = Grid(crs, Affine(20.0, 0.0, REF.c, 0.0, -20.0, REF.f), (40, 40))
    target = Grid(crs, REF @ Affine.translation(13.5, -7.25) @ Affine.rotation(2.0), (64, 64))
    fast, fast_invalid = warp(data_, source, target, entry, has_nodata=False)
    general, general_invalid = warp(data_, source, target, entry, has_nodata=True)
    np.testing.assert_array_equal(fast_invalid, general_invalid)
    assert 0 < fast_invalid.sum() < fast_invalid.size  # partly covered, as meant
    valid = ~general_invalid
    tolerance = 1e-4 if entry.dtype == "float32" else 1  # integers: rounding
    np.testing.assert_allclose(fast[:, valid], general[:, valid], rtol=0, atol=tolerance)
