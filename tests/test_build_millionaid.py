"""The Million-AID builder, on a tiny copy in the official layout."""

from __future__ import annotations

from pathlib import Path

import pystac
import pytest

from catalogs.builders import millionaid
from tests.data import checks
from tests.data.millionaid import data

VALID_IDS = [
    "millionaid_train_P0001",
    "millionaid_train_P0002",
    "millionaid_train_P0100",
    "millionaid_test_T0001",
    "millionaid_test_T0002",
]


@pytest.fixture
def root(tmp_path: Path) -> Path:
    return data.make_millionaid(tmp_path / "Million-AID")


@pytest.fixture
def broken_root(tmp_path: Path) -> Path:
    return data.make_millionaid(tmp_path / "Million-AID", broken=True)


def test_one_item_per_image(root: Path) -> None:
    checks.assert_one_item_per_picture(millionaid.build(root), VALID_IDS, root, data.VALID_IMAGES)


def test_labels_and_split_from_the_folders(root: Path) -> None:
    properties = {item.id: item.properties for item in millionaid.build(root).items}
    dry_field = ["agriculture_land", "arable_land", "dry_field"]
    expected = {
        "millionaid_train_P0001": ("train", dry_field),
        "millionaid_train_P0002": ("train", dry_field),
        "millionaid_train_P0100": ("train", ["water_area", "lake"]),
        "millionaid_test_T0001": ("test", []),
        "millionaid_test_T0002": ("test", []),
    }
    assert {
        key: (p["millionaid:split"], p["millionaid:labels"]) for key, p in properties.items()
    } == expected


def test_pictures_have_no_georeference_and_a_date_range(root: Path) -> None:
    checks.assert_undated_pictures(
        millionaid.build(root).items, "1990-01-01T00:00:00Z", "2020-06-30T23:59:59Z"
    )


def test_image_asset_fields_match_the_file(root: Path) -> None:
    for item in millionaid.build(root).items:
        asset = item.assets["image"]
        assert asset.media_type == pystac.MediaType.JPEG
        checks.assert_picture_fields(asset, [data.SIZE[1], data.SIZE[0]])
        checks.assert_file_fields(asset)
        assert asset.extra_fields["msgfm:sensor"] == "rgb"
        assert [band["name"] for band in asset.extra_fields["bands"]] == ["red", "green", "blue"]
        assert "sar:polarizations" not in asset.extra_fields


def test_damaged_and_unexpected_files_are_reported(broken_root: Path) -> None:
    result = millionaid.build(broken_root)
    assert [item.id for item in result.items] == VALID_IDS
    assert checks.problems(result) == [
        (str(broken_root / data.STRAY_FOLDER), "not a Million-AID split folder (train, test)"),
        (str(broken_root / data.TOO_SHALLOW), "under 1 label folders of train/, expected 2 or 3"),
        (str(broken_root / data.TRUNCATED), checks.StartsWith("undecodable image (")),
        (str(broken_root / data.GRAYSCALE), "1 bands, but sensor 'rgb' has 3"),
        (str(broken_root / data.PNG_AS_JPG), "not a JPEG (decodes as image/png)"),
        (
            str(broken_root / data.DUPLICATE_ID),
            "a second image with the Item id 'millionaid_train_P0001'",
        ),
        (str(broken_root / data.NOT_AN_IMAGE), "suffix '.txt' is not .jpg"),
    ]


def test_cli_writes_a_valid_catalog(broken_root: Path, tmp_path: Path) -> None:
    _, reported = checks.build_with_cli("millionaid", broken_root, tmp_path / "catalog", VALID_IDS)
    assert len(reported) == 7
