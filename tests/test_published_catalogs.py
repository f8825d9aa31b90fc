"""The pipeline over catalogs of items as public APIs publish them (no ``msgfm:`` fields),
their rasters rendered locally (tests/published_world.py)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import rasterio
from rasterio.enums import Resampling
from rasterio.warp import reproject

from catalogs.item_assets import sensor_assets
from catalogs.store_format import IMAGE, TRANSFORM, open_store, read_manifest
from tests.pipeline_setup import STORE, WORK, make_workspace, run_ok
from tests.published_world import published_item, render_assets, write_catalog

L1C = "es_sentinel-2-l1c"
# A 6.4 km corner of the granule: 640 px at 10 m; the 20 m and 60 m grids reach a little
# further (as a real granule's 60 m grid does where 10980 px is not a multiple of 6).
L1C_SHAPES = {10: (640, 640), 20: (321, 322), 60: (108, 109)}
CHIP_PX = 256


def l1c_build() -> dict[str, Any]:
    return {"collections": ["sentinel-2-l1c"],
            "coregister": {"sources": {"sentinel-2-l1c": {
                "reference": "sentinel2_l1c", "chip_px": CHIP_PX, "stride_px": CHIP_PX}}},
            "shard": {"chips_per_shard": 4}}


@pytest.fixture(scope="module")
def l1c_build_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An Earth Search L1C item over JP2 band files, built into a store."""
    world = tmp_path_factory.mktemp("published")
    item = published_item(L1C)
    shapes = {key: L1C_SHAPES[int(asset["raster:bands"][0]["spatial_resolution"])]
              for key, asset in item["assets"].items() if "raster:bands" in asset}
    local = render_assets(item, world / item["collection"] / item["id"], "uint16", shapes)
    write_catalog(world, [local])
    folder = make_workspace(tmp_path_factory.mktemp("build"), world, l1c_build())
    run_ok(folder)
    return folder


def _source(folder: Path, key: str) -> tuple[np.ndarray, rasterio.Affine, rasterio.crs.CRS]:
    item = published_item(L1C)
    path = next((folder / "world" / item["collection"] / item["id"]).glob(f"{key}.jp2"))
    with rasterio.open(path) as src:
        return src.read(1), src.transform, src.crs


def test_an_earth_search_l1c_item_builds_13_band_chips_on_the_10m_grid(
        l1c_build_dir: Path) -> None:
    manifest = read_manifest(l1c_build_dir / STORE)
    assert list(manifest.sensors) == ["sentinel2_l1c"]
    chips = open_store(l1c_build_dir / STORE)["sentinel2_l1c"][IMAGE][:]
    assert chips.shape == (4, 13, CHIP_PX, CHIP_PX) and chips.dtype == np.uint16
    failures = json.loads((l1c_build_dir / WORK / "failures" / "coregister.json").read_text())
    assert failures == []


def _chip_origins(folder: Path, grid: rasterio.Affine) -> list[tuple[int, int]]:
    """(row, col) of each chip's corner on the 10 m grid, from the chips' transforms."""
    transforms = open_store(folder / STORE)["sentinel2_l1c"][TRANSFORM][:]
    return [(round((t[5] - grid.f) / grid.e), round((t[2] - grid.c) / grid.a))
            for t in transforms]


def test_10m_bands_are_the_source_pixels_less_the_baseline_offset(l1c_build_dir: Path) -> None:
    # Baseline 05.11 >= 04.00 and no "offset applied" flag: stored = DN - 1000.
    chips = open_store(l1c_build_dir / STORE)["sentinel2_l1c"][IMAGE][:]
    red, grid, _ = _source(l1c_build_dir, "red")
    origins = _chip_origins(l1c_build_dir, grid)
    assert sorted(origins) == [(0, 0), (0, 256), (256, 0), (256, 256)]
    band = 3  # B04, in registry order
    for chip, (row, col) in zip(chips, origins, strict=True):
        window = red[row:row + CHIP_PX, col:col + CHIP_PX].astype(np.int64) - 1000
        np.testing.assert_array_equal(chip[band], window)


@pytest.mark.parametrize(("key", "band"), [("rededge1", 4), ("nir08", 8), ("coastal", 0),
                                           ("cirrus", 10)])
def test_20m_and_60m_bands_are_a_bilinear_warp_onto_the_10m_grid(
        l1c_build_dir: Path, key: str, band: int) -> None:
    chips = open_store(l1c_build_dir / STORE)["sentinel2_l1c"][IMAGE][:]
    source, transform, crs = _source(l1c_build_dir, key)
    _, grid, _ = _source(l1c_build_dir, "red")
    expected = np.zeros(L1C_SHAPES[10], dtype=np.uint16)
    reproject((source - 1000).astype(np.uint16), expected, src_transform=transform, src_crs=crs,
              dst_transform=grid, dst_crs=crs, resampling=Resampling.bilinear, dst_nodata=0)
    for chip, (row, col) in zip(chips, _chip_origins(l1c_build_dir, grid), strict=True):
        np.testing.assert_array_equal(chip[band], expected[row:row + CHIP_PX, col:col + CHIP_PX])


def test_only_the_sensor_assets_are_fetched(l1c_build_dir: Path) -> None:
    from pipeline.items import read_items

    (fetched,) = read_items(l1c_build_dir / WORK / "fetched.parquet")
    expected = [a.key for assets in sensor_assets(published_item(L1C)).values() for a in assets]
    assert sorted(fetched["assets"]) == sorted(expected)
    assert "visual" not in fetched["assets"] and "granule_metadata" not in fetched["assets"]
