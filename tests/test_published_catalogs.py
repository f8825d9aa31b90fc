"""The pipeline over catalogs of items as public APIs publish them (no ``msgfm:`` fields),
their rasters rendered locally (tests/published_world.py)."""

from __future__ import annotations

import json
import math
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
from tests.published_world import Pattern, published_item, render_assets, write_catalog
from tests.stac_server import stac_api

L1C = "es_sentinel-2-l1c"
# A 6.4 km corner of the granule: 640 px at 10 m; the 20 m and 60 m grids reach a little
# further (as a real granule's 60 m grid does where 10980 px is not a multiple of 6).
L1C_SHAPES = {10: (640, 640), 20: (321, 322), 60: (108, 109)}
CHIP_PX = 256


def l1c_build() -> dict[str, Any]:
    return {
        "collections": ["sentinel-2-l1c"],
        "coregister": {
            "sources": {
                "sentinel-2-l1c": {
                    "reference": "sentinel2_l1c",
                    "chip_px": CHIP_PX,
                    "stride_px": CHIP_PX,
                }
            }
        },
        "shard": {"chips_per_shard": 4},
    }


@pytest.fixture(scope="module")
def l1c_build_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An Earth Search L1C item over JP2 band files, built into a store."""
    world = tmp_path_factory.mktemp("published")
    item = published_item(L1C)
    shapes = {
        key: L1C_SHAPES[int(asset["raster:bands"][0]["spatial_resolution"])]
        for key, asset in item["assets"].items()
        if "raster:bands" in asset
    }
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


def test_an_earth_search_l1c_item_builds_13_band_chips_on_the_10m_grid(l1c_build_dir: Path) -> None:
    manifest = read_manifest(l1c_build_dir / STORE)
    assert list(manifest.sensors) == ["sentinel2_l1c"]
    chips = open_store(l1c_build_dir / STORE)["sentinel2_l1c"][IMAGE][:]
    assert chips.shape == (4, 13, CHIP_PX, CHIP_PX) and chips.dtype == np.uint16
    failures = json.loads((l1c_build_dir / WORK / "failures" / "coregister.json").read_text())
    assert failures == []


def _chip_origins(folder: Path, grid: rasterio.Affine) -> list[tuple[int, int]]:
    """(row, col) of each chip's corner on the 10 m grid, from the chips' transforms."""
    transforms = open_store(folder / STORE)["sentinel2_l1c"][TRANSFORM][:]
    return [(round((t[5] - grid.f) / grid.e), round((t[2] - grid.c) / grid.a)) for t in transforms]


def test_10m_bands_are_the_source_pixels_less_the_baseline_offset(l1c_build_dir: Path) -> None:
    # Baseline 05.11 >= 04.00 and no "offset applied" flag: stored = DN - 1000.
    chips = open_store(l1c_build_dir / STORE)["sentinel2_l1c"][IMAGE][:]
    red, grid, _ = _source(l1c_build_dir, "red")
    origins = _chip_origins(l1c_build_dir, grid)
    assert sorted(origins) == [(0, 0), (0, 256), (256, 0), (256, 256)]
    band = 3  # B04, in registry order
    for chip, (row, col) in zip(chips, origins, strict=True):
        window = red[row : row + CHIP_PX, col : col + CHIP_PX].astype(np.int64) - 1000
        np.testing.assert_array_equal(chip[band], window)


@pytest.mark.parametrize(
    ("key", "band"), [("rededge1", 4), ("nir08", 8), ("coastal", 0), ("cirrus", 10)]
)
def test_20m_and_60m_bands_are_a_bilinear_warp_onto_the_10m_grid(
    l1c_build_dir: Path, key: str, band: int
) -> None:
    chips = open_store(l1c_build_dir / STORE)["sentinel2_l1c"][IMAGE][:]
    source, transform, crs = _source(l1c_build_dir, key)
    _, grid, _ = _source(l1c_build_dir, "red")
    expected = np.zeros(L1C_SHAPES[10], dtype=np.uint16)
    reproject(
        (source - 1000).astype(np.uint16),
        expected,
        src_transform=transform,
        src_crs=crs,
        dst_transform=grid,
        dst_crs=crs,
        resampling=Resampling.bilinear,
        dst_nodata=0,
    )
    for chip, (row, col) in zip(chips, _chip_origins(l1c_build_dir, grid), strict=True):
        np.testing.assert_array_equal(
            chip[band], expected[row : row + CHIP_PX, col : col + CHIP_PX]
        )


def test_only_the_sensor_assets_are_fetched(l1c_build_dir: Path) -> None:
    from pipeline.items import read_items

    (fetched,) = read_items(l1c_build_dir / WORK / "fetched.parquet")
    expected = [a.key for assets in sensor_assets(published_item(L1C)).values() for a in assets]
    assert sorted(fetched["assets"]) == sorted(expected)
    assert "visual" not in fetched["assets"] and "granule_metadata" not in fetched["assets"]


# --- Sentinel-2 L2A x Sentinel-1 RTC from a STAC API (rustac serve) ----------------------------
#
# The S2 item is Planetary Computer's as published (hrefs rewritten). No published S1 RTC item
# overlaps it, so the S1 items are Planetary Computer's RTC item relocated beside it (geometry,
# bbox, proj fields, id and datetime changed; every other field as published): two slices of
# one acquisition a day earlier, on UTM zone 52 while the S2 tile is on zone 53, plus two
# acquisitions the matching must pass over.

S2 = "pc_sentinel-2-l2a"
S2_PX = 512  # the 10 m corner rendered (20 m and 60 m bands cover the same ground)
PAIR_CHIP_PX = 128
NORTH_POWER, SOUTH_POWER = 0.04, 0.25  # linear gamma0 of the two slices
S1_ZONE = "EPSG:32652"


def _s2_local(world: Path) -> dict[str, Any]:
    item = published_item(S2)
    shapes = {
        key: (S2_PX * 10 // int(a["proj:transform"][0]),) * 2
        for key, a in item["assets"].items()
        if "proj:transform" in a
    }
    return render_assets(item, world / item["collection"] / item["id"], "uint16", shapes)


def _rtc(
    world: Path,
    suffix: str,
    when: str,
    lonlat: tuple[float, float, float, float],
    bounds: tuple[float, float, float, float] | None,
    power: float,
    orbits_later: int = 0,
) -> dict[str, Any]:
    """The published RTC item moved to ``lonlat`` (footprint) and ``orbits_later`` orbits on,
    with rasters on ``bounds`` (UTM zone 52, 10 m; a 16 px stub where None: an item the
    matching must leave unfetched)."""
    item = published_item("pc_sentinel-1-rtc")
    item["id"] = f"{item['id']}_{suffix}"
    item["properties"]["sat:absolute_orbit"] += orbits_later
    west, south, east, north = lonlat
    item["bbox"] = list(lonlat)
    item["geometry"] = {
        "type": "Polygon",
        "coordinates": [
            [[west, south], [east, south], [east, north], [west, north], [west, south]]
        ],
    }
    if bounds is None:
        bounds = (0.0, 0.0, 160.0, 160.0)
    shape = [round((bounds[3] - bounds[1]) / 10), round((bounds[2] - bounds[0]) / 10)]
    item["properties"].update(
        {
            "datetime": when,
            "start_datetime": when,
            "end_datetime": when,
            "proj:epsg": int(S1_ZONE.split(":")[1]),
            "proj:bbox": list(bounds),
            "proj:shape": shape,
            "proj:transform": [10.0, 0.0, bounds[0], 0.0, -10.0, bounds[3], 0.0, 0.0, 1.0],
        }
    )
    return render_assets(
        item,
        world / item["collection"] / item["id"],
        "float32",
        pattern=lambda band, rows, cols: np.full(rows.shape, power),
    )


@pytest.fixture(scope="module")
def s1s2_world(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any]]:
    from rasterio.warp import transform_bounds

    world = tmp_path_factory.mktemp("s1s2")
    s2 = _s2_local(world)
    x0, y1 = 199980.0, 700020.0  # the S2 tile's corner (EPSG:32653)
    west, south, east, north = transform_bounds(
        "EPSG:32653", S1_ZONE, x0, y1 - S2_PX * 10, x0 + S2_PX * 10, y1
    )
    west, south = 10 * math.floor(west / 10) - 300.0, 10 * math.floor(south / 10) - 300.0
    east, north = 10 * math.ceil(east / 10) + 300.0, 10 * math.ceil(north / 10) + 300.0
    middle = 10.0 * round((south + north) / 20)
    lon_w, lat_s, lon_e, lat_n = s2["bbox"]
    lat_mid = (lat_s + lat_n) / 2
    wide = (lon_w - 0.2, lat_s - 0.2, lon_e + 0.2, lat_n + 0.2)
    day_before, two_days_after = "2025-03-11T01:50:00Z", "2025-03-14T01:50:00Z"
    items = [
        s2,
        _rtc(
            world,
            "slice1",
            day_before,
            (wide[0], lat_mid, wide[2], wide[3]),
            (west, middle - 100, east, north),
            NORTH_POWER,
        ),
        _rtc(
            world,
            "slice2",
            day_before,
            (wide[0], wide[1], wide[2], lat_mid),
            (west, south, east, middle + 100),
            SOUTH_POWER,
        ),
        _rtc(world, "later", two_days_after, wide, None, 1.0, 44),  # full cover, 2 days on
        _rtc(
            world,
            "narrow",
            "2025-03-12T10:00:00Z",  # 8 hours away, too little cover
            (lon_w - 0.2, lat_s - 0.2, lon_w + 0.1, lat_n + 0.2),
            None,
            1.0,
            20,
        ),
    ]
    return write_catalog(world, items), s2


def build_pair_from_api(
    factory: pytest.TempPathFactory,
    catalog: Path,
    name: str,
    pair: dict[str, Any],
    workers: tuple[int, ...] = (0,),
) -> dict[int, Path]:
    """``catalog`` served by ``rustac serve`` and the pair ``name`` (``pair``: its reference,
    partners and matching parameters) built from the API's answers, once per worker count."""
    builds = {}
    with stac_api(catalog, factory.mktemp("api")) as url:
        for count in workers:
            folder = make_workspace(
                factory.mktemp(f"{name}{count}"),
                catalog.parent,
                {
                    "api_url": url,
                    "collections": [pair["reference"], *pair["partners"]],
                    "coregister": {"sources": {}, "pairs": {name: pair}},
                    "shard": {"chips_per_shard": 8},
                    # the API (rustac over the local catalog) serves paths of local files
                    "fetch": {"allow_local_files_from_remote": True},
                },
            )
            run_ok(folder, workers=count)
            builds[count] = folder
    return builds


@pytest.fixture(scope="module")
def s1s2_builds(
    s1s2_world: tuple[Path, dict[str, Any]], tmp_path_factory: pytest.TempPathFactory
) -> dict[int, Path]:
    """The pair built from the API answers, with 0 and with 2 worker processes."""
    catalog, _ = s1s2_world
    return build_pair_from_api(
        tmp_path_factory,
        catalog,
        "s1s2",
        {
            "reference": "sentinel-2-l2a",
            "partners": ["sentinel-1-rtc"],
            "max_days": 3,
            "min_overlap": 0.5,
            "max_cloud_cover": 20,
            "chip_px": PAIR_CHIP_PX,
            "stride_px": PAIR_CHIP_PX,
        },
        workers=(0, 2),
    )


def test_the_pair_matches_the_slices_of_the_closest_acquisition(
    s1s2_builds: dict[int, Path],
) -> None:
    import csv

    with open(s1s2_builds[0] / WORK / "pairs.csv") as f:
        (row,) = list(csv.DictReader(f))
    s1_id = published_item("pc_sentinel-1-rtc")["id"]
    assert row["pair"] == "s1s2" and row["partner_collection"] == "sentinel-1-rtc"
    assert row["partner_ids"] == f"{s1_id}_slice1 {s1_id}_slice2"
    assert row["time_difference_days"] == "0.997095"  # 23 h 55 min 49.024 s
    assert row["overlap"] == "1.000000" and row["left_out"] == ""
    from pipeline.items import read_items

    fetched = read_items(s1s2_builds[0] / WORK / "fetched.parquet")
    assert sorted(i["id"] for i in fetched) == sorted(
        [published_item(S2)["id"], f"{s1_id}_slice1", f"{s1_id}_slice2"]
    )


def test_paired_chips_hold_both_sensors_in_their_units(s1s2_builds: dict[int, Path]) -> None:
    store = open_store(s1s2_builds[0] / STORE)
    assert list(read_manifest(s1s2_builds[0] / STORE).sensors) == ["sentinel1_rtc", "sentinel2_l2a"]
    s1 = store["sentinel1_rtc"][IMAGE][:]
    s2 = store["sentinel2_l2a"][IMAGE][:]
    per_side = S2_PX // PAIR_CHIP_PX
    assert s1.shape == (per_side**2, 2, PAIR_CHIP_PX, PAIR_CHIP_PX) and s1.dtype == np.float32
    assert s2.shape == (per_side**2, 12, PAIR_CHIP_PX, PAIR_CHIP_PX)
    s1_id = published_item("pc_sentinel-1-rtc")["id"]
    assert set(store["sentinel1_rtc"]["item_id"][:]) == {f"{s1_id}_slice1+{s1_id}_slice2"}
    origins = _chip_origins_on(s1s2_builds[0], "sentinel2_l2a", 199980.0, 700020.0)
    # Linear power, averaged as power and stored in dB; the north slice on the top chips, the
    # south one on the bottom chips (the slices meet in the middle).
    for chip, (row, _) in zip(s1, origins, strict=True):
        if row == 0:
            np.testing.assert_allclose(chip, 10 * np.log10(NORTH_POWER), atol=1e-4)
        if row == S2_PX - PAIR_CHIP_PX:
            np.testing.assert_allclose(chip, 10 * np.log10(SOUTH_POWER), atol=1e-4)
    # Sentinel-2 baseline 05.11 from Planetary Computer: stored = DN - 1000, exactly.
    world = s1s2_builds[0] / "world"
    item = published_item(S2)
    with rasterio.open(next((world / item["collection"] / item["id"]).glob("B04.tif"))) as src:
        red = src.read(1).astype(np.int64) - 1000
    for chip, (row, col) in zip(s2, origins, strict=True):
        np.testing.assert_array_equal(
            chip[3], red[row : row + PAIR_CHIP_PX, col : col + PAIR_CHIP_PX]
        )


def _chip_origins_on(
    folder: Path, sensor: str, x0: float, y0: float, pixel_m: float = 10.0
) -> list[tuple[int, int]]:
    """(row, col) of each chip's corner on the grid of ``pixel_m`` pixels whose corner is at
    map (``x0``, ``y0``), from the chips' transforms."""
    transforms = open_store(folder / STORE)[sensor][TRANSFORM][:]
    return [(round((y0 - t[5]) / pixel_m), round((t[2] - x0) / pixel_m)) for t in transforms]


def test_the_pair_store_is_the_same_with_0_and_2_workers(s1s2_builds: dict[int, Path]) -> None:
    from tests.pipeline_setup import file_hashes

    assert file_hashes(s1s2_builds[0] / STORE) == file_hashes(s1s2_builds[2] / STORE)
    assert (s1s2_builds[0] / WORK / "pairs.csv").read_bytes() == (
        s1s2_builds[2] / WORK / "pairs.csv"
    ).read_bytes()


def _pairs_rows(folder: Path) -> list[dict[str, str]]:
    import csv

    with open(folder / WORK / "pairs.csv") as f:
        return list(csv.DictReader(f))


def _fetched_ids(folder: Path) -> list[str]:
    from pipeline.items import read_items

    return sorted(item["id"] for item in read_items(folder / WORK / "fetched.parquet"))


def _box(west: float, south: float, east: float, north: float) -> dict[str, Any]:
    return {
        "type": "Polygon",
        "coordinates": [
            [[west, south], [east, south], [east, north], [west, north], [west, south]]
        ],
    }


def _constant(value: float) -> Pattern:
    return lambda band, rows, cols: np.full(rows.shape, value)


# --- NAIP x 3DEP lidar DSM from a STAC API -------------------------------------------------------
#
# The NAIP item is Planetary Computer's as published (hrefs rewritten; a 256 px corner of its
# 0.6 m grid rendered). No published DSM item overlaps it, so the DSM is Planetary Computer's
# 3DEP lidar DSM item relocated onto it: footprint (geometry, bbox), grid (proj:transform,
# proj:shape) and id changed; its CRS (NAD83 / UTM 11N + NAVD88 height, given only as
# proj:projjson), its start/end datetimes (2020, no datetime) and every other field as
# published. The DSM item unmoved (Utah) is a partner the matching must pass over. The DSM is
# level ground with one 10 m block (a building) that gives the QA's residual shift something to
# measure.

NAIP, DSM = "pc_naip", "pc_3dep-lidar-dsm"
NAIP_X0, NAIP_Y0 = 568284.0, 5435088.0  # the NAIP grid's corner (EPSG:26911)
NAIP_PX, NAIP_CHIP_PX = 256, 128
DSM_PX = 100  # 2 m pixels from 20 m north-west of the NAIP corner: 200 m over NAIP's 153.6 m
GROUND_M, ROOF_M = 123.5, 133.5
BLOCK = slice(30, 50)  # DSM rows and cols of the block: 40 to 80 m from the NAIP corner


def _naip_pattern(band: int, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """8-bit values that differ between bands and between chips."""
    return (band * 61 + 3 * rows + 7 * cols) % 256


def _dsm_pattern(band: int, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    heights = np.full(rows.shape, GROUND_M)
    heights[BLOCK, BLOCK] = ROOF_M
    return heights


@pytest.fixture(scope="module")
def naip_dsm_build_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    world = tmp_path_factory.mktemp("naip_dsm")
    naip = published_item(NAIP)
    naip = render_assets(
        naip,
        world / naip["collection"] / naip["id"],
        "uint8",
        {"image": (NAIP_PX, NAIP_PX)},
        _naip_pattern,
    )
    moved, unmoved = published_item(DSM), published_item(DSM)
    moved["id"] = f"{moved['id']}_over-naip"
    west, south, east, north = naip["bbox"]
    moved["bbox"] = [west - 0.01, south - 0.01, east + 0.01, north + 0.01]
    moved["geometry"] = _box(*moved["bbox"])
    moved["properties"].update(
        {
            "proj:shape": [DSM_PX, DSM_PX],
            "proj:transform": [2.0, 0.0, NAIP_X0 - 20.0, 0.0, -2.0, NAIP_Y0 + 20.0, 0, 0, 1],
        }
    )
    moved = render_assets(
        moved, world / moved["collection"] / moved["id"], "float32", pattern=_dsm_pattern
    )
    unmoved = render_assets(
        unmoved,
        world / unmoved["collection"] / unmoved["id"],
        "float32",
        {"data": (16, 16)},
        _constant(1.0),
    )
    catalog = write_catalog(world, [naip, moved, unmoved])
    return build_pair_from_api(
        tmp_path_factory,
        catalog,
        "naip_dsm",
        {
            "reference": "naip",
            "partners": ["3dep-lidar-dsm"],
            "max_days": 3650,
            "min_overlap": 0.9,
            "chip_px": NAIP_CHIP_PX,
            "stride_px": NAIP_CHIP_PX,
        },
    )[0]


@pytest.mark.xdist_group("naip_dsm")
def test_naip_is_paired_with_the_dsm_that_covers_it(naip_dsm_build_dir: Path) -> None:
    (row,) = _pairs_rows(naip_dsm_build_dir)
    naip_id, dsm_id = published_item(NAIP)["id"], published_item(DSM)["id"]
    assert (row["pair"], row["reference_collection"], row["reference_id"]) == (
        "naip_dsm",
        "naip",
        naip_id,
    )
    assert row["partner_collection"] == "3dep-lidar-dsm"
    assert row["partner_ids"] == f"{dsm_id}_over-naip"
    assert row["overlap"] == "1.000000" and row["left_out"] == ""
    assert _fetched_ids(naip_dsm_build_dir) == sorted([naip_id, f"{dsm_id}_over-naip"])


@pytest.mark.xdist_group("naip_dsm")
def test_naip_chips_are_the_source_pixels_and_dsm_chips_its_metres(
    naip_dsm_build_dir: Path,
) -> None:
    store = open_store(naip_dsm_build_dir / STORE)
    assert list(read_manifest(naip_dsm_build_dir / STORE).sensors) == ["dsm", "naip"]
    naip, dsm = store["naip"][IMAGE][:], store["dsm"][IMAGE][:]
    count = (NAIP_PX // NAIP_CHIP_PX) ** 2
    assert naip.shape == (count, 4, NAIP_CHIP_PX, NAIP_CHIP_PX) and naip.dtype == np.uint8
    assert dsm.shape == (count, 1, NAIP_CHIP_PX, NAIP_CHIP_PX) and dsm.dtype == np.float32
    naip_item, dsm_id = published_item(NAIP), f"{published_item(DSM)['id']}_over-naip"
    assert set(store["naip"]["item_id"][:]) == {naip_item["id"]}
    assert set(store["dsm"]["item_id"][:]) == {dsm_id}
    np.testing.assert_array_equal(store["dsm"][TRANSFORM][:], store["naip"][TRANSFORM][:])
    origins = _chip_origins_on(naip_dsm_build_dir, "naip", NAIP_X0, NAIP_Y0, pixel_m=0.6)
    assert sorted(origins) == [(0, 0), (0, 128), (128, 0), (128, 128)]
    world = naip_dsm_build_dir / "world"
    with rasterio.open(world / naip_item["collection"] / naip_item["id"] / "image.tif") as src:
        source = src.read()
    for chip, (row, col) in zip(naip, origins, strict=True):
        np.testing.assert_array_equal(
            chip, source[:, row : row + NAIP_CHIP_PX, col : col + NAIP_CHIP_PX]
        )
    # The 2 m DSM on a compound CRS (NAD83 / UTM 11N + NAVD88 height) warped bilinearly onto
    # NAIP's 0.6 m NAD83 / UTM 11N grid: heights in metres as published (no scale or offset, no
    # vertical datum shift), level ground and roof exactly where no edge of the block is near.
    on_grid = np.empty((NAIP_PX, NAIP_PX), dtype=np.float32)
    for chip, (row, col) in zip(dsm, origins, strict=True):
        on_grid[row : row + NAIP_CHIP_PX, col : col + NAIP_CHIP_PX] = chip[0]
    with rasterio.open(world / "3dep-lidar-dsm" / dsm_id / "data.tif") as src:
        heights, transform, crs = src.read(1), src.transform, src.crs
    expected = np.empty_like(on_grid)
    reproject(
        heights,
        expected,
        src_transform=transform,
        src_crs=crs,
        dst_transform=rasterio.Affine(0.6, 0.0, NAIP_X0, 0.0, -0.6, NAIP_Y0),
        dst_crs="EPSG:26911",
        resampling=Resampling.bilinear,
        dst_nodata=-9999.0,
    )
    np.testing.assert_array_equal(on_grid, expected)
    metres = np.arange(NAIP_PX) * 0.6 + 0.3 + 20.0  # pixel centres from the DSM's corner
    roof = (metres > 62.0) & (metres < 98.0)  # > 1 DSM px inside the block's 60-100 m
    ground = (metres < 58.0) | (metres > 102.0)
    assert (on_grid[np.ix_(roof, roof)] == np.float32(ROOF_M)).all()
    assert (on_grid[np.ix_(ground, ground)] == np.float32(GROUND_M)).all()
    assert (on_grid[ground][:, roof] == np.float32(GROUND_M)).all()


def test_items_with_and_without_proj_geometry_share_one_table(tmp_path: Path) -> None:
    from pipeline.items import read_items, write_items

    items = [published_item(NAIP), published_item(DSM)]
    read = read_items(write_items(tmp_path / "items.parquet", items))
    assert [item["id"] for item in read] == [item["id"] for item in items]
    assert "proj:geometry" not in read[0]["properties"]
    assert read[1]["properties"]["proj:geometry"] == items[1]["properties"]["proj:geometry"]


# --- Sentinel-2 L2A (Earth Search) x Landsat C2 L2 from a STAC API --------------------------------
#
# Both items are Earth Search's as published, unmoved: MGRS tile 13TDE and WRS-2 path 33 row 32,
# both of 8 October 2023, 25 minutes apart, both on UTM zone 13 (the Landsat footprint covers
# 41 % of the tile's). Each is rendered as a window of its own declared grid over their overlap
# near 105.0 W 40.2 N (asset proj:transform follows on the S2 assets; the Landsat grid is
# declared on the item, which keeps its full-scene fields). Planetary Computer's Landsat 9 item
# (Tasmania, 2025) is a partner the matching must pass over.

ES_S2, ES_LANDSAT, PC_LANDSAT = "es_sentinel-2-l2a", "es_landsat-c2-l2", "pc_landsat-c2-l2"
S2_WINDOW = (499980.0, 4449960.0)  # a pixel corner of the tile's 10, 20 and 60 m grids
LANDSAT_WINDOW = (499935.0, 4450005.0)  # 45 m west and north of it, on the 30 m grid
S2_WINDOW_PX, LANDSAT_WINDOW_PX = 256, 90  # 2.56 km at 10 m; 2.7 km at 30 m
# Landsat asset -> registry band index (B1..B7)
LANDSAT_BANDS = {
    "coastal": 0,
    "blue": 1,
    "green": 2,
    "red": 3,
    "nir08": 4,
    "swir16": 5,
    "swir22": 6,
}


@pytest.fixture(scope="module")
def s2_landsat_build_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    world = tmp_path_factory.mktemp("s2_landsat")
    s2 = published_item(ES_S2)
    shapes = {
        key: (math.ceil(S2_WINDOW_PX * 10 / a["proj:transform"][0]),) * 2
        for key, a in s2["assets"].items()
        if "proj:transform" in a
    }
    s2 = render_assets(s2, world / s2["collection"] / s2["id"], "uint16", shapes, origin=S2_WINDOW)
    landsat = published_item(ES_LANDSAT)
    landsat = render_assets(
        landsat,
        world / landsat["collection"] / landsat["id"],
        "uint16",
        {key: (LANDSAT_WINDOW_PX,) * 2 for key in landsat["assets"]},
        origin=LANDSAT_WINDOW,
    )
    elsewhere = published_item(PC_LANDSAT)
    elsewhere = render_assets(
        elsewhere,
        world / elsewhere["collection"] / elsewhere["id"],
        "uint16",
        {key: (16, 16) for key in elsewhere["assets"]},
    )
    catalog = write_catalog(world, [s2, landsat, elsewhere])
    return build_pair_from_api(
        tmp_path_factory,
        catalog,
        "s2_landsat",
        {
            "reference": "sentinel-2-l2a",
            "partners": ["landsat-c2-l2"],
            "max_days": 3,
            "min_overlap": 0.4,
            "max_cloud_cover": 10,
            "chip_px": PAIR_CHIP_PX,
            "stride_px": PAIR_CHIP_PX,
        },
    )[0]


@pytest.mark.xdist_group("s2_landsat")
def test_s2_is_paired_with_the_landsat_scene_of_the_same_day(s2_landsat_build_dir: Path) -> None:
    (row,) = _pairs_rows(s2_landsat_build_dir)
    s2_id, landsat_id = published_item(ES_S2)["id"], published_item(ES_LANDSAT)["id"]
    assert (row["pair"], row["reference_id"], row["partner_collection"]) == (
        "s2_landsat",
        s2_id,
        "landsat-c2-l2",
    )
    assert row["partner_ids"] == landsat_id
    assert row["time_difference_days"] == "0.017692"  # 25 min 28.619 s
    assert row["overlap"] == "0.412344" and row["left_out"] == ""
    assert _fetched_ids(s2_landsat_build_dir) == sorted([s2_id, landsat_id])


@pytest.mark.xdist_group("s2_landsat")
def test_s2_and_landsat_chips_are_their_published_dns(s2_landsat_build_dir: Path) -> None:
    store = open_store(s2_landsat_build_dir / STORE)
    assert list(read_manifest(s2_landsat_build_dir / STORE).sensors) == [
        "landsat_c2_l2",
        "sentinel2_l2a",
    ]
    s2, landsat = store["sentinel2_l2a"][IMAGE][:], store["landsat_c2_l2"][IMAGE][:]
    count = (S2_WINDOW_PX // PAIR_CHIP_PX) ** 2
    assert s2.shape == (count, 12, PAIR_CHIP_PX, PAIR_CHIP_PX) and s2.dtype == np.uint16
    assert landsat.shape == (count, 7, PAIR_CHIP_PX, PAIR_CHIP_PX) and landsat.dtype == np.uint16
    assert set(store["landsat_c2_l2"]["item_id"][:]) == {published_item(ES_LANDSAT)["id"]}
    origins = _chip_origins_on(s2_landsat_build_dir, "sentinel2_l2a", *S2_WINDOW)
    assert sorted(origins) == [(0, 0), (0, 128), (128, 0), (128, 128)]
    world = s2_landsat_build_dir / "world"
    s2_item, landsat_item = published_item(ES_S2), published_item(ES_LANDSAT)
    # Earth Search declares offset -0.1 but says it applied it already
    # (earthsearch:boa_offset_applied): stored = DN, not DN - 1000.
    for key, band in (("red", 3), ("nir", 7)):
        with rasterio.open(world / s2_item["collection"] / s2_item["id"] / f"{key}.tif") as src:
            source = src.read(1)
        for chip, (row, col) in zip(s2, origins, strict=True):
            np.testing.assert_array_equal(
                chip[band], source[row : row + PAIR_CHIP_PX, col : col + PAIR_CHIP_PX]
            )
    # Landsat C2 L2 declares scale 2.75e-05 and offset -0.2, the registry's: stored = DN, on the
    # S2 grid by the registry's bilinear warp (the 30 m grid lies 15 m off the 10 m one).
    grid = rasterio.Affine(10.0, 0.0, S2_WINDOW[0], 0.0, -10.0, S2_WINDOW[1])
    for key, band in LANDSAT_BANDS.items():
        path = world / landsat_item["collection"] / landsat_item["id"] / f"{key}.tif"
        with rasterio.open(path) as src:
            source, transform, crs = src.read(1), src.transform, src.crs
        expected = np.zeros((S2_WINDOW_PX, S2_WINDOW_PX), dtype=np.uint16)
        reproject(
            source,
            expected,
            src_transform=transform,
            src_crs=crs,
            dst_transform=grid,
            dst_crs=crs,
            resampling=Resampling.bilinear,
            dst_nodata=0,
        )
        for chip, (row, col) in zip(landsat, origins, strict=True):
            np.testing.assert_array_equal(
                chip[band], expected[row : row + PAIR_CHIP_PX, col : col + PAIR_CHIP_PX]
            )


@pytest.mark.parametrize("name", ["pc_sentinel-1-grd", "es_sentinel-1-grd"])
def test_a_grd_scene_is_refused_at_fetch_before_any_download(name: str) -> None:
    from catalogs.item_assets import NOT_GEOCODED
    from pipeline.fetch import fetch
    from pipeline.params import PipelineParams

    item = published_item(name)  # hrefs as published: nothing may be requested
    fetched, failures = fetch([item], PipelineParams())
    assert fetched == []
    assert [(f.stage, f.item_id, f.path, f.reason) for f in failures] == [
        ("fetch", item["id"], None, NOT_GEOCODED)
    ]
