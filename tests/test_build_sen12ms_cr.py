"""The SEN12MS-CR catalog builder, on a tiny copy in the official layout."""

from __future__ import annotations

from pathlib import Path

import pystac
import pytest

from catalogs.builders import sen12ms_cr
from catalogs.stac import BuildResult
from tests.data import checks
from tests.data.sen12ms_cr import data

VALID_IDS = ["ROIs1158_spring_1_p30", "ROIs1158_spring_1_p31", "ROIs2017_winter_5_p7"]


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return data.make_sen12ms_cr(tmp_path_factory.mktemp("sen12ms_cr"))


@pytest.fixture(scope="module")
def result(root: Path) -> BuildResult:
    return sen12ms_cr.build(root)


@pytest.fixture
def items(result: BuildResult) -> dict[str, pystac.Item]:
    return checks.items_by_id(result)


def test_one_item_per_triplet(result: BuildResult) -> None:
    checks.assert_builds_cleanly(result, VALID_IDS)


def test_assets_are_the_triplet(root: Path, items: dict[str, pystac.Item]) -> None:
    for (season_folder, scene, patch), counts in data.VALID_TRIPLETS.items():
        item = items[f"{season_folder}_{scene}_p{patch}"]
        assert list(item.assets) == list(data.MODALITIES)
        for modality in data.MODALITIES:
            path = data.triplet_path(root, season_folder, scene, patch, modality)
            assert item.assets[modality].href == str(path)
            assert len(item.assets[modality].extra_fields["bands"]) == counts[modality]


def test_proj_fields_are_the_files(items: dict[str, pystac.Item]) -> None:
    for item in items.values():
        for asset in item.assets.values():
            checks.assert_proj_fields(asset)
            assert asset.extra_fields["proj:code"] == data.CRS
            assert asset.extra_fields["proj:transform"] == list(data.TRANSFORM)
            assert asset.extra_fields["proj:shape"] == [data.SIZE, data.SIZE]


def test_checksums(items: dict[str, pystac.Item]) -> None:
    for asset in checks.assets_of(items.values()):
        checks.assert_file_fields(asset)


def test_sensors_bands_and_polarizations(items: dict[str, pystac.Item]) -> None:
    l1c, l2a = items["ROIs1158_spring_1_p30"], items["ROIs1158_spring_1_p31"]
    for item, sensor in ((l1c, "sentinel2_l1c"), (l2a, "sentinel2_l2a")):
        for modality in ("s2", "s2_cloudy"):
            assert item.assets[modality].extra_fields["msgfm:sensor"] == sensor
    assert [b["name"] for b in l1c.assets["s2_cloudy"].extra_fields["bands"]][9:11] == [
        "B09",
        "B10",
    ]
    s1 = l1c.assets["s1"].extra_fields
    assert s1["msgfm:sensor"] == "sentinel1_grd"
    assert [b["name"] for b in s1["bands"]] == ["VV", "VH"]
    assert s1["sar:polarizations"] == ["VV", "VH"]


def test_season_intervals_and_patch_properties(items: dict[str, pystac.Item]) -> None:
    spring, winter = items["ROIs1158_spring_1_p30"], items["ROIs2017_winter_5_p7"]
    assert spring.datetime is None and winter.datetime is None
    assert (spring.properties["start_datetime"], spring.properties["end_datetime"]) == (
        "2017-03-01T00:00:00Z",
        "2017-05-31T23:59:59Z",
    )
    assert (winter.properties["start_datetime"], winter.properties["end_datetime"]) == (
        "2016-12-01T00:00:00Z",
        "2017-02-28T23:59:59Z",
    )
    assert (
        winter.properties["sen12ms:season"],
        winter.properties["sen12ms:scene"],
        winter.properties["sen12ms:patch"],
    ) == ("winter", 5, 7)


def test_damaged_files_are_reported_and_the_rest_builds(tmp_path: Path) -> None:
    root = data.make_sen12ms_cr(tmp_path, broken=True)
    result = sen12ms_cr.build(root)
    assert [item.id for item in result.items] == VALID_IDS

    def path(patch: tuple[str, int, int], modality: str) -> str:
        return str(data.triplet_path(root, *patch, modality))

    missing, truncated, three_bands = data.BROKEN_TRIPLETS
    expected_cloudy = path(missing, "s2_cloudy")
    truncated_cloudy = path(truncated, "s2_cloudy")
    three_band_s1 = path(three_bands, "s1")
    assert checks.problems(result) == [
        (str(root / data.STRAY_FOLDER), "folder name is not ROIs<id>_<season>_{s1,s2,s2_cloudy}"),
        (str(root / data.MISNAMED), "name is not ROIs2017_winter_s2_5_p<patch>.tif"),
        (path(missing, "s1"), f"no s2_cloudy partner: {expected_cloudy}"),
        (path(missing, "s2"), f"no s2_cloudy partner: {expected_cloudy}"),
        (truncated_cloudy, checks.StartsWith("unreadable raster (")),
        (path(truncated, "s1"), f"unusable s2_cloudy partner: {truncated_cloudy}"),
        (path(truncated, "s2"), f"unusable s2_cloudy partner: {truncated_cloudy}"),
        (three_band_s1, "3 bands, expected 2 (sentinel1_grd)"),
        (path(three_bands, "s2"), f"unusable s1 partner: {three_band_s1}"),
        (path(three_bands, "s2_cloudy"), f"unusable s1 partner: {three_band_s1}"),
    ]


def test_cli_writes_a_valid_catalog(root: Path, tmp_path: Path) -> None:
    items, reported = checks.build_with_cli("sen12ms-cr", root, tmp_path / "catalog", VALID_IDS)
    assert Path(items[0].assets["s2_cloudy"].get_absolute_href()) == data.triplet_path(
        root, "ROIs1158_spring", 1, 30, "s2_cloudy"
    )
    assert reported == []
