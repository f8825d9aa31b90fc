"""The MDAS builder, on a tiny copy in the official layout."""

from __future__ import annotations

from pathlib import Path

import pytest
import rasterio
from rasterio.warp import transform_bounds

from catalogs.builders import mdas
from tests.data import checks
from tests.data.mdas import data

S2_L2A = ["B01", "B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B09", "B11", "B12"]


@pytest.fixture
def root(tmp_path: Path) -> Path:
    return data.make_mdas(tmp_path / "MDAS")


@pytest.fixture
def broken_root(tmp_path: Path) -> Path:
    return data.make_mdas(tmp_path / "MDAS", broken=True)


def test_one_item_per_sub_area_with_its_sensors(root: Path) -> None:
    result = mdas.build(root)
    assert result.problems == []
    assert {
        item.id: {key: a.extra_fields["msgfm:sensor"] for key, a in item.assets.items()}
        for item in result.items
    } == {
        "mdas_sub_area_1": {
            "rgb": "rgb",
            "dsm": "dsm",
            "s2": "sentinel2_l2a",
            "s1": "sentinel1_grd",
            "osm_buildings": "building_mask",
        },
        "mdas_sub_area_2": {"rgb": "rgb_alpha", "dsm": "dsm", "osm_buildings": "building_mask"},
        "mdas_sub_area_3": {"rgb": "rgb", "dsm": "dsm"},
    }
    assert [item.id for item in result.items] == [
        "mdas_sub_area_1",
        "mdas_sub_area_2",
        "mdas_sub_area_3",
    ]


def test_assets_point_at_their_files(root: Path) -> None:
    items = {item.id: item for item in mdas.build(root).items}
    assert items["mdas_sub_area_1"].assets["s1"].href == str(
        data.sub_area_path(root, 1, "Sentinel_1")
    )
    assert items["mdas_sub_area_2"].assets["dsm"].href == str(data.sub_area_path(root, 2, "3K_dsm"))
    assert items["mdas_sub_area_3"].assets["rgb"].href == str(data.sub_area_path(root, 3, "3K_RGB"))


def test_projection_and_file_fields_match_the_files(root: Path) -> None:
    for asset in checks.assets_of(mdas.build(root).items):
        checks.assert_proj_fields(asset)
        checks.assert_file_fields(asset)


def test_rgb_and_dsm_keep_their_own_grids(root: Path) -> None:
    item = mdas.build(root).items[0]
    assert item.assets["rgb"].extra_fields["proj:shape"] == [40, 40]
    assert item.assets["dsm"].extra_fields["proj:shape"] == [20, 20]
    assert item.assets["rgb"].extra_fields["gsd"] == 0.3
    assert item.assets["dsm"].extra_fields["gsd"] == 0.6


def test_bands_and_polarizations(root: Path) -> None:
    items = {item.id: item for item in mdas.build(root).items}
    fields = {key: asset.extra_fields for key, asset in items["mdas_sub_area_1"].assets.items()}
    assert {key: [band["name"] for band in f["bands"]] for key, f in fields.items()} == {
        "rgb": ["red", "green", "blue"],
        "dsm": ["elevation"],
        "s2": S2_L2A,
        "s1": ["VV", "VH"],
        "osm_buildings": ["building"],
    }
    assert fields["s1"]["sar:polarizations"] == ["VV", "VH"]
    assert [key for key, f in fields.items() if "sar:polarizations" in f] == ["s1"]
    rgba = items["mdas_sub_area_2"].assets["rgb"].extra_fields
    assert [band["name"] for band in rgba["bands"]] == ["red", "green", "blue", "alpha"]


def test_footprint_is_the_rgb_grid_and_the_day_of_acquisition(root: Path) -> None:
    item = mdas.build(root).items[0]
    with rasterio.open(item.assets["rgb"].href) as src:
        expected = transform_bounds(src.crs, "EPSG:4326", *src.bounds, densify_pts=21)
    assert item.bbox == pytest.approx(expected, abs=1e-6)
    assert item.to_dict()["properties"] == {
        "datetime": None,
        "start_datetime": "2018-05-07T00:00:00Z",
        "end_datetime": "2018-05-07T23:59:59Z",
        "mdas:sub_area": 1,
    }


def test_damaged_and_unexpected_files_are_reported(broken_root: Path) -> None:
    result = mdas.build(broken_root)
    assert [item.id for item in result.items] == [
        "mdas_sub_area_1",
        "mdas_sub_area_2",
        "mdas_sub_area_3",
    ]
    assert list(result.items[2].assets) == ["rgb", "dsm"]  # its Sentinel_2 has 13 bands
    folder = broken_root / data.DATA_FOLDER
    assert checks.problems(result) == [
        (str(folder / data.STRAY_FOLDER), "not a sub_area_<N> folder of MDAS"),
        (str(folder / data.MISNAMED), "name is not <modality>_sub_area1.tif"),
        (
            str(data.sub_area_path(broken_root, *data.UNKNOWN_MODALITY)),
            "unknown MDAS modality 'Landsat_8'",
        ),
        (
            str(data.sub_area_path(broken_root, 3, "Sentinel_2")),
            "13 bands, expected 12 (sentinel2_l2a)",
        ),
        (
            str(data.sub_area_path(broken_root, 4, "3K_RGB")),
            "4th band is undefined, not alpha: its content is unknown",
        ),
        (str(folder / "sub_area_4"), "no usable rgb: sub-area skipped"),
        (
            str(data.sub_area_path(broken_root, *data.TRUNCATED)),
            checks.StartsWith("unreadable raster ("),
        ),
        (str(folder / "sub_area_5"), "no usable dsm: sub-area skipped"),
        (str(folder / "sub_area_6"), "no usable dsm: sub-area skipped"),
    ]


def test_a_second_file_for_one_asset_is_reported(root: Path) -> None:
    duplicate = data.sub_area_path(root, 1, "3K_dsm")
    duplicate.write_bytes(data.sub_area_path(root, 1, "3K_DSM").read_bytes())
    result = mdas.build(root)
    assert checks.problems(result) == [
        (str(duplicate), "second 3K_dsm file; using 3K_DSM_sub_area1.tif")
    ]
    assert result.items[0].assets["dsm"].href == str(data.sub_area_path(root, 1, "3K_DSM"))


def test_cli_writes_a_valid_catalog(broken_root: Path, tmp_path: Path) -> None:
    _, reported = checks.build_with_cli(
        "mdas",
        broken_root,
        tmp_path / "catalog",
        ["mdas_sub_area_1", "mdas_sub_area_2", "mdas_sub_area_3"],
    )
    assert len(reported) == 9
