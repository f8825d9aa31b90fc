"""The SpaceNet 2 catalog builder, on a tiny training copy in the official layout."""

from __future__ import annotations

import shutil
from pathlib import Path

import pystac
import pytest

from catalogs.builders import spacenet2
from catalogs.stac import BuildResult
from tests.data import checks
from tests.data.spacenet2 import data

IDS = ["AOI_2_Vegas_img1", "AOI_2_Vegas_img2", "AOI_2_Vegas_img3", "AOI_3_Paris_img5"]


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """TorchGeo's root: the tarballs are extracted into ``SN2_buildings/train`` under it."""
    base = tmp_path_factory.mktemp("torchgeo")
    data.make_spacenet2(base / "SN2_buildings" / "train")
    return base


@pytest.fixture(scope="module")
def root(base: Path) -> Path:
    return base / "SN2_buildings" / "train"


@pytest.fixture(scope="module")
def result(root: Path) -> BuildResult:
    return spacenet2.build(root)


@pytest.fixture
def items(result: BuildResult) -> dict[str, pystac.Item]:
    return checks.items_by_id(result)


def _chip(item_id: str) -> tuple[str, int]:
    aoi, image = item_id.rsplit("_img", 1)
    return aoi, int(image)


def test_one_item_per_chip(result: BuildResult) -> None:
    # The pan-sharpened and summary folders are not cataloged.
    checks.assert_builds_cleanly(result, IDS)


def test_assets(root: Path, items: dict[str, pystac.Item]) -> None:
    for item_id, item in items.items():
        assert list(item.assets) == ["pan", "ms", "buildings"]
        for key, product in (("pan", "PAN"), ("ms", "MUL"), ("buildings", "buildings")):
            assert item.assets[key].href == str(data.chip_path(root, *_chip(item_id), product))
    buildings = items["AOI_2_Vegas_img1"].assets["buildings"]
    assert buildings.media_type == pystac.MediaType.GEOJSON
    assert buildings.roles == ["labels"]
    assert buildings.extra_fields["msgfm:sensor"] == "building_mask"


def test_proj_fields_are_the_files(items: dict[str, pystac.Item]) -> None:
    for item_id, item in items.items():
        for key, transform, side in (
            ("pan", data.pan_transform, data.PAN_PX),
            ("ms", data.ms_transform, data.MS_PX),
        ):
            checks.assert_proj_fields(item.assets[key])
            fields = item.assets[key].extra_fields
            assert fields["proj:code"] == data.CRS
            assert fields["proj:transform"] == transform(*_chip(item_id))
            assert fields["proj:shape"] == [side, side]


def test_gsd_is_in_metres(items: dict[str, pystac.Item]) -> None:
    for item_id, item in items.items():
        for key, pixel_deg, side in (
            ("pan", data.PAN_DEG, data.PAN_PX),
            ("ms", data.MS_DEG, data.MS_PX),
        ):
            north = item.assets[key].extra_fields["proj:transform"][5]
            lat = north - (side // 2 + 0.5) * pixel_deg
            assert item.assets[key].extra_fields["gsd"] == pytest.approx(
                checks.wgs84_pixel_side_m(pixel_deg, lat), abs=6e-5
            ), (item_id, key)
    assert items["AOI_2_Vegas_img1"].assets["pan"].extra_fields["gsd"] == 0.2696  # at 36.26 N


def test_checksums(items: dict[str, pystac.Item]) -> None:
    for asset in checks.assets_of(items.values()):
        checks.assert_file_fields(asset)


def test_bands(items: dict[str, pystac.Item]) -> None:
    item = items["AOI_3_Paris_img5"]
    pan, ms = item.assets["pan"].extra_fields, item.assets["ms"].extra_fields
    assert (pan["msgfm:sensor"], ms["msgfm:sensor"]) == ("worldview3_pan", "worldview3_ms")
    assert [b["name"] for b in pan["bands"]] == ["PAN"]
    assert [b["name"] for b in ms["bands"]] == [
        "coastal",
        "blue",
        "green",
        "yellow",
        "red",
        "rededge",
        "nir1",
        "nir2",
    ]
    assert "sar:polarizations" not in pan


def test_acquisition_times(items: dict[str, pystac.Item]) -> None:
    vegas, paris = items["AOI_2_Vegas_img1"], items["AOI_3_Paris_img5"]
    assert vegas.to_dict()["properties"]["datetime"] == "2015-10-22T18:36:56Z"
    assert "start_datetime" not in vegas.properties
    assert paris.datetime is None
    assert (paris.properties["start_datetime"], paris.properties["end_datetime"]) == (
        "2014-08-13T00:00:00Z",
        "2017-03-22T00:00:00Z",
    )


def test_footprint_is_the_pan_grid(items: dict[str, pystac.Item]) -> None:
    _, _, west, _, _, north = data.pan_transform("AOI_2_Vegas", 3)
    extent = data.PAN_DEG * data.PAN_PX
    assert items["AOI_2_Vegas_img3"].bbox == pytest.approx(
        [west, north - extent, west + extent, north], abs=1e-7
    )


def test_torchgeo_reads_the_layout(base: Path) -> None:
    from torchgeo.datasets import SpaceNet2

    dataset = SpaceNet2(root=base, split="train", aois=[2], image="PAN")
    assert len(dataset) == 3
    sample = dataset[0]
    assert sample["image"].shape == (1, data.PAN_PX, data.PAN_PX)
    # Image 1's two buildings cover 10 x 8 and 10 x 14 PAN pixels.
    assert int(sample["mask"].sum()) == 10 * 8 + 10 * 14


def test_damaged_files_are_reported_and_the_rest_builds(root: Path, tmp_path: Path) -> None:
    copy = shutil.copytree(root, tmp_path / "copy")
    data.damage(copy)
    result = spacenet2.build(copy)
    assert [item.id for item in result.items] == ["AOI_2_Vegas_img1", "AOI_2_Vegas_img3"]
    assert "buildings" not in result.items[0].assets  # its GeoJSON is damaged
    truncated, wrong_band_count = str(copy / data.TRUNCATED), str(copy / data.WRONG_BAND_COUNT)
    assert checks.problems(result) == [
        (str(copy / data.TEST_FOLDER), "folder name is not AOI_<n>_<City>_Train"),
        (str(copy / data.MISNAMED), "name is not PAN_AOI_2_Vegas_img<k>.tif"),
        (str(copy / data.BAD_GEOJSON), checks.StartsWith("unreadable GeoJSON (")),
        (truncated, checks.StartsWith("unreadable raster (")),
        (str(data.chip_path(copy, "AOI_2_Vegas", 2, "MUL")), f"unusable pan partner: {truncated}"),
        (
            str(data.chip_path(copy, "AOI_2_Vegas", 2, "buildings")),
            f"unusable pan partner: {truncated}",
        ),
        (wrong_band_count, "4 bands, expected 8 (worldview3_ms)"),
        (
            str(data.chip_path(copy, "AOI_3_Paris", 5, "PAN")),
            f"unusable ms partner: {wrong_band_count}",
        ),
        (
            str(data.chip_path(copy, "AOI_3_Paris", 5, "buildings")),
            f"unusable ms partner: {wrong_band_count}",
        ),
    ]


def test_missing_partner_is_reported(root: Path, tmp_path: Path) -> None:
    copy = shutil.copytree(root, tmp_path / "copy")
    data.chip_path(copy, "AOI_3_Paris", 5, "MUL").unlink()
    result = spacenet2.build(copy)
    expected = data.chip_path(copy, "AOI_3_Paris", 5, "MUL")
    assert checks.problems(result) == [
        (str(data.chip_path(copy, "AOI_3_Paris", 5, product)), f"no ms partner: {expected}")
        for product in ("PAN", "buildings")
    ]
    assert [item.id for item in result.items] == IDS[:3]


def test_cli_writes_a_valid_catalog(root: Path, tmp_path: Path) -> None:
    items, reported = checks.build_with_cli("spacenet2", root, tmp_path / "catalog", IDS)
    assert Path(items[0].assets["buildings"].get_absolute_href()) == data.chip_path(
        root, "AOI_2_Vegas", 1, "buildings"
    )
    assert reported == []
