"""Block processing of a scene (pipeline/coregister.py): the same chips whether the rasters
are read block by block or whole, chips streamed to the chip file, memory set by the block."""

from __future__ import annotations

import tracemalloc
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from affine import Affine
from rasterio.warp import transform_bounds
from rasterio.windows import Window

from catalogs.sensors import get_sensor
from pipeline.chips import LocationChips, chunk_file
from pipeline.coregister import chip_blocks, chip_windows, coregister_item, write_item_chips
from pipeline.params import CoregisterParams, PipelineParams, SourceGrid
from tests.data.coregister import data

SIDE_PX = 640  # reference pixels a side: 5 x 5 chips of 128 at a stride of 128
CHIP_PX = 128
ORIGIN = (730000.0, 5363000.0)


def params(block_px: int, stride_px: int = CHIP_PX) -> PipelineParams:
    return PipelineParams(
        coregister=CoregisterParams(
            sources={"paired": SourceGrid("s2_10m", CHIP_PX, stride_px)},
            block_px=block_px,
            qa_window_px=200,
        )
    )


def _pattern(rows: np.ndarray, cols: np.ndarray, band: int) -> np.ndarray:
    return np.sin(rows / (17.0 + band)) * np.cos(cols / (23.0 + 2 * band))


def scene(folder: Path, s1_crs: str = data.SECONDARY_CRS, side_px: int = SIDE_PX) -> dict[str, Any]:
    """Sentinel-2 at 10 m (bands B02-B04, B08) and 20 m (the other eight), on the reference
    CRS, with Sentinel-1 at 10 m on ``s1_crs``, covering the reference grid with a margin;
    a strip of the S1 raster is nodata."""
    s2 = get_sensor("sentinel2_l2a")
    fine = ("B02", "B03", "B04", "B08")
    coarse = tuple(b for b in s2.band_names if b not in fine)
    assets = {}
    for name, bands, gsd in (("s2_10m", fine, 10.0), ("s2_20m", coarse, 20.0)):
        side = round(side_px * 10 / gsd) + (1 if gsd == 20.0 else 0)  # 20 m reaches further
        rows, cols = np.mgrid[:side, :side] * (gsd / 10.0)
        values = np.stack(
            [2000 + 1500 * _pattern(rows, cols, b) for b in range(len(bands))]
        ).astype(np.uint16)
        transform = Affine(gsd, 0.0, ORIGIN[0], 0.0, -gsd, ORIGIN[1])
        path = data.write_raster(
            folder / f"{name}.tif", values, data.REFERENCE_CRS, transform, nodata=0
        )
        assets[name] = data.raster_asset(path, "sentinel2_l2a", bands)
    west, south, east, north = transform_bounds(
        data.REFERENCE_CRS,
        s1_crs,
        ORIGIN[0],
        ORIGIN[1] - side_px * 10,
        ORIGIN[0] + side_px * 10,
        ORIGIN[1],
    )
    transform = Affine(
        10.0, 0.0, 10 * np.floor(west / 10) - 300, 0.0, -10.0, 10 * np.ceil(north / 10) + 300
    )
    shape = (int((transform.f - south + 300) // 10), int((east + 300 - transform.c) // 10))
    rows, cols = np.mgrid[: shape[0], : shape[1]]
    values = np.stack([-12 + 4 * _pattern(rows, cols, b) for b in range(2)]).astype(np.float32)
    values[:, 300:320, :] = np.nan  # a strip without data: its chips are dropped
    path = data.write_raster(folder / "s1.tif", values, s1_crs, transform, nodata=float("nan"))
    assets["s1"] = data.raster_asset(path, "sentinel1_grd")
    return data.stac_item("scene", "paired", assets)


@pytest.fixture(scope="module")
def item(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    return scene(tmp_path_factory.mktemp("scene"))


def assert_same(a: LocationChips, b: LocationChips) -> None:
    assert list(a.sensors) == list(b.sensors)
    for name in a.sensors:
        np.testing.assert_array_equal(a.sensors[name], b.sensors[name])
    np.testing.assert_array_equal(a.transforms, b.transforms)
    np.testing.assert_array_equal(a.bounds_lonlat, b.bounds_lonlat)
    assert (a.dropped, a.shifts, a.datetimes) == (b.dropped, b.shifts, b.datetimes)


def test_chip_windows_are_grouped_into_blocks_of_whole_strides() -> None:
    windows = chip_windows((640, 640), 128, 64)  # 9 x 9 windows
    blocks = chip_blocks(windows, (650, 650), 64, 256)  # 256 px: 3 strides of 64 a side
    assert [len(indexes) for _, indexes in blocks] == [9, 9, 9] * 3
    assert blocks[0][0] == Window(0, 0, 256, 256)  # 3 chips of 128 at a stride of 64
    assert blocks[1][0] == Window(192, 0, 256, 256)
    assert sorted(i for _, indexes in blocks for i in indexes) == list(range(81))
    whole = [(Window(0, 0, 650, 650), list(range(81)))]  # one block: the whole grid
    assert chip_blocks(windows, (650, 650), 64, 0) == whole
    assert chip_blocks(windows, (650, 650), 64, 640) == whole
    assert [len(i) for _, i in chip_blocks(windows, (650, 650), 64, 100)] == [1] * 81


@pytest.mark.parametrize("block_px", [128, 256, 384])
def test_blocks_read_from_file_or_from_a_whole_read_give_the_same_chips(
    item: dict[str, Any], block_px: int
) -> None:
    blocked = coregister_item(item, params(block_px))
    whole = coregister_item(item, params(block_px), read_whole=True)
    assert_same(blocked, whole)
    # The strip crosses one chip row, and a second one where the zones' rotation bends it.
    assert blocked.dropped == {"nodata": 6} and len(blocked.transforms) == 19


def test_within_one_crs_the_block_size_does_not_change_the_chips(tmp_path: Path) -> None:
    item = scene(tmp_path, s1_crs=data.REFERENCE_CRS)
    one_block = coregister_item(item, params(0))
    for block_px in (128, 256):
        assert_same(coregister_item(item, params(block_px)), one_block)


def test_the_qa_window_straddling_blocks_is_measured_on_its_own(tmp_path: Path) -> None:
    # The qa window (200 px in the middle: 220..420) straddles the 256 px blocks; in one
    # block (0: the whole grid) it does not. Within one CRS the warp is the same either way,
    # and so are the shifts.
    item = scene(tmp_path, s1_crs=data.REFERENCE_CRS)
    straddling = coregister_item(item, params(256)).shifts
    assert straddling == coregister_item(item, params(0)).shifts
    assert [record["secondary"] for record in straddling] == ["sentinel1_grd"]


def test_streamed_chip_file_holds_the_chips_in_window_order(
    item: dict[str, Any], tmp_path: Path
) -> None:
    streamed = write_item_chips(item, params(256), tmp_path / "streamed.npz")
    in_memory = coregister_item(item, params(256))
    loaded = LocationChips.load(streamed)
    assert_same(loaded, in_memory)
    saved = in_memory.save(tmp_path / "saved.npz")
    assert chunk_file(streamed).read_bytes() == chunk_file(saved).read_bytes()
    assert sorted(p.name for p in tmp_path.iterdir()) == [  # no scratch file left
        "saved.chunks",
        "saved.npz",
        "streamed.chunks",
        "streamed.npz",
    ]


def test_a_failing_location_leaves_no_file(item: dict[str, Any], tmp_path: Path) -> None:
    from pipeline.failures import ItemError

    bad = {
        **item,
        "assets": {
            **item["assets"],
            "s1": {**item["assets"]["s1"], "href": str(tmp_path / "gone.tif")},
        },
    }
    with pytest.raises(ItemError, match="unreadable GeoTIFF"):
        write_item_chips(bad, params(256), tmp_path / "x.npz")
    assert list(tmp_path.iterdir()) == []


def _peak_bytes(item: dict[str, Any], read_whole: bool, path: Path) -> int:
    tracemalloc.start()
    try:
        write_item_chips(item, params(256), path, read_whole=read_whole)
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_memory_follows_the_block_not_the_scene(item: dict[str, Any], tmp_path: Path) -> None:
    # numpy reports its buffers to tracemalloc; the chips go to the chip file as they come.
    # A scene 1.5 times as wide and high: the whole read grows with it, the blocks do not (what
    # both share, e.g. the statistics' histograms, cancels out in the growth).
    large = scene(tmp_path / "large", side_px=SIDE_PX * 3 // 2)
    growth = {}
    for read_whole in (True, False):
        peaks = [
            _peak_bytes(location, read_whole, tmp_path / f"{read_whole}{i}.npz")
            for i, location in enumerate((item, large))
        ]
        growth[read_whole] = peaks[1] - peaks[0]
    assert growth[False] < 0.1 * growth[True], growth
    for i in (0, 1):
        assert (
            chunk_file(tmp_path / f"True{i}.npz").read_bytes()
            == chunk_file(tmp_path / f"False{i}.npz").read_bytes()
        )
