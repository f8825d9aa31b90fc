"""The SEN12MS builder, on a tiny copy in the official layout."""

from __future__ import annotations

from pathlib import Path

import pytest
import rasterio
from rasterio.warp import transform_bounds

from catalogs.builders import sen12ms
from tests.data import checks
from tests.data.sen12ms import data

S2_L1C = ["B01", "B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B09", "B10", "B11", "B12"]
S2_L2A = [name for name in S2_L1C if name != "B10"]


@pytest.fixture
def root(tmp_path: Path) -> Path:
    return data.make_sen12ms(tmp_path / "SEN12MS")


@pytest.fixture
def broken_root(tmp_path: Path) -> Path:
    return data.make_sen12ms(tmp_path / "SEN12MS", broken=True)


def _path(root: Path, season_folder: str, scene: int, patch: int, kind: str) -> str:
    return str(data.patch_path(root, season_folder, scene, patch, kind))


def test_one_item_per_patch_with_its_assets(root: Path) -> None:
    result = sen12ms.build(root)
    assert result.problems == []
    assert {item.id: list(item.assets) for item in result.items} == {
        "ROIs1158_spring_1_p4": ["s1", "s2"],
        "ROIs1158_spring_1_p30": ["s1", "s2", "lc"],
        "ROIs2017_winter_7_p2": ["s1", "s2", "lc"],
    }
    assert [item.id for item in result.items] == [
        "ROIs1158_spring_1_p4",
        "ROIs1158_spring_1_p30",
        "ROIs2017_winter_7_p2",
    ]


def test_assets_point_at_their_files(root: Path) -> None:
    for item in sen12ms.build(root).items:
        season_folder, scene, patch = item.id.rsplit("_", 2)
        for kind, asset in item.assets.items():
            assert asset.href == _path(root, season_folder, int(scene), int(patch[1:]), kind)


def test_projection_and_file_fields_match_the_files(root: Path) -> None:
    for asset in checks.assets_of(sen12ms.build(root).items):
        checks.assert_proj_fields(asset)
        checks.assert_file_fields(asset)


def test_s1_and_s2_keep_their_own_grids(root: Path) -> None:
    item = sen12ms.build(root).items[0]
    assert item.assets["s1"].extra_fields["proj:code"] == data.S1_GRID[0]
    assert item.assets["s2"].extra_fields["proj:code"] == data.S2_GRID[0]


def test_bands_sensors_and_polarizations(root: Path) -> None:
    items = {item.id: item for item in sen12ms.build(root).items}
    s1 = items["ROIs1158_spring_1_p4"].assets["s1"].extra_fields
    assert s1["msgfm:sensor"] == "sentinel1_grd"
    assert [band["name"] for band in s1["bands"]] == ["VV", "VH"]
    assert s1["sar:polarizations"] == ["VV", "VH"]
    assert s1["sar:instrument_mode"] == "IW"
    l2a = items["ROIs1158_spring_1_p4"].assets["s2"].extra_fields
    assert l2a["msgfm:sensor"] == "sentinel2_l2a"
    assert [band["name"] for band in l2a["bands"]] == S2_L2A
    l1c = items["ROIs1158_spring_1_p30"].assets["s2"].extra_fields
    assert l1c["msgfm:sensor"] == "sentinel2_l1c"
    assert [band["name"] for band in l1c["bands"]] == S2_L1C
    assert "sar:polarizations" not in l1c
    lc = items["ROIs1158_spring_1_p30"].assets["lc"].extra_fields
    assert lc["msgfm:sensor"] == "modis_landcover"
    assert [band["name"] for band in lc["bands"]] == ["IGBP", "LCCS_LC", "LCCS_LU", "LCCS_SH"]


def test_footprint_is_the_s2_grid(root: Path) -> None:
    item = sen12ms.build(root).items[0]
    with rasterio.open(item.assets["s2"].href) as src:
        expected = transform_bounds(src.crs, "EPSG:4326", *src.bounds, densify_pts=21)
    with rasterio.open(item.assets["s1"].href) as src:
        s1_bounds = transform_bounds(src.crs, "EPSG:4326", *src.bounds, densify_pts=21)
    assert item.bbox == pytest.approx(expected, abs=1e-6)
    assert item.bbox != pytest.approx(s1_bounds, abs=1e-6)
    assert item.geometry["type"] == "Polygon"


def test_season_interval_and_patch_properties(root: Path) -> None:
    items = {item.id: item for item in sen12ms.build(root).items}
    spring, winter = items["ROIs1158_spring_1_p30"], items["ROIs2017_winter_7_p2"]
    assert spring.to_dict()["properties"] == {
        "datetime": None,
        "start_datetime": "2017-03-01T00:00:00Z",
        "end_datetime": "2017-05-31T23:59:59Z",
        "sen12ms:season": "spring",
        "sen12ms:scene": 1,
        "sen12ms:patch": 30,
    }
    assert winter.properties["start_datetime"] == "2016-12-01T00:00:00Z"
    assert winter.properties["end_datetime"] == "2017-02-28T23:59:59Z"


def test_damaged_and_unexpected_files_are_reported(broken_root: Path) -> None:
    result = sen12ms.build(broken_root)
    assert [item.id for item in result.items] == [
        "ROIs1158_spring_1_p4",
        "ROIs1158_spring_1_p30",
        "ROIs2017_winter_7_p2",
        "ROIs2017_winter_7_p9",
    ]
    assert list(result.items[-1].assets) == ["s1", "s2"]  # its lc is damaged, lc is optional
    spring, winter = "ROIs1158_spring", "ROIs2017_winter"
    truncated = _path(broken_root, *data.TRUNCATED)
    assert checks.problems(result) == [
        (str(broken_root / data.MISNAMED), "name is not ROIs2017_winter_s1_7_p<patch>.tif"),
        (str(broken_root / data.STRAY_FOLDER), "folder name is not ROIs<id>_<season>"),
        (
            _path(broken_root, spring, 1, 40, "s1"),
            f"no s2 partner: {_path(broken_root, spring, 1, 40, 's2')}",
        ),
        (truncated, checks.StartsWith("unreadable raster (")),
        (_path(broken_root, spring, 1, 41, "s1"), f"unusable s2 partner: {truncated}"),
        (_path(broken_root, winter, 7, 3, "s1"), "3 bands, expected 2 (sentinel1_grd)"),
        (
            _path(broken_root, winter, 7, 3, "s2"),
            f"unusable s1 partner: {_path(broken_root, winter, 7, 3, 's1')}",
        ),
        (_path(broken_root, winter, 7, 9, "lc"), "2 bands, expected 4 (modis_landcover)"),
    ]


def test_cli_writes_a_valid_catalog(broken_root: Path, tmp_path: Path) -> None:
    _, reported = checks.build_with_cli(
        "sen12ms",
        broken_root,
        tmp_path / "catalog",
        [
            "ROIs1158_spring_1_p4",
            "ROIs1158_spring_1_p30",
            "ROIs2017_winter_7_p2",
            "ROIs2017_winter_7_p9",
        ],
    )
    assert len(reported) == 8
    assert {p["source"] for p in reported} == {"sen12ms"}
