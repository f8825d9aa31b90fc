"""The Million-AID builder, on a tiny copy in the official layout."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pystac
import pytest
from PIL import Image

from catalogs.build import main
from catalogs.builders import millionaid
from catalogs.stac import BuildResult, validate_core
from tests.data.millionaid import data

VALID_IDS = ["millionaid_train_P0001", "millionaid_train_P0002", "millionaid_train_P0100",
             "millionaid_test_T0001", "millionaid_test_T0002"]


@pytest.fixture
def root(tmp_path: Path) -> Path:
    return data.make_millionaid(tmp_path / "Million-AID")


@pytest.fixture
def broken_root(tmp_path: Path) -> Path:
    return data.make_millionaid(tmp_path / "Million-AID", broken=True)


def _problems(result: BuildResult) -> list[tuple[str, str]]:
    return [(p.path, p.reason) for p in result.problems]


def test_one_item_per_image(root: Path) -> None:
    result = millionaid.build(root)
    assert result.problems == []
    assert [item.id for item in result.items] == VALID_IDS
    assert [item.assets["image"].href for item in result.items] == [
        str(root / relative) for relative in data.VALID_IMAGES]


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
    assert {key: (p["millionaid:split"], p["millionaid:labels"])
            for key, p in properties.items()} == expected


def test_pictures_have_no_georeference_and_a_date_range(root: Path) -> None:
    for item in millionaid.build(root).items:
        stac = item.to_dict()
        assert stac["geometry"] is None
        assert "bbox" not in stac
        assert stac["properties"]["datetime"] is None
        assert stac["properties"]["start_datetime"] == "1990-01-01T00:00:00Z"
        assert stac["properties"]["end_datetime"] == "2020-06-30T23:59:59Z"


def test_image_asset_fields_match_the_file(root: Path) -> None:
    for item in millionaid.build(root).items:
        asset = item.assets["image"]
        content = Path(asset.href).read_bytes()
        with Image.open(asset.href) as image:
            shape = [image.height, image.width]
        assert asset.media_type == pystac.MediaType.JPEG
        assert asset.extra_fields["proj:code"] is None
        assert asset.extra_fields["proj:shape"] == shape == [data.SIZE[1], data.SIZE[0]]
        assert "proj:transform" not in asset.extra_fields
        assert asset.extra_fields["file:checksum"] == "1220" + hashlib.sha256(content).hexdigest()
        assert asset.extra_fields["file:size"] == len(content)
        assert asset.extra_fields["msgfm:sensor"] == "rgb"
        assert [band["name"] for band in asset.extra_fields["bands"]] == ["red", "green", "blue"]
        assert "sar:polarizations" not in asset.extra_fields


def test_damaged_and_unexpected_files_are_reported(broken_root: Path) -> None:
    result = millionaid.build(broken_root)
    assert [item.id for item in result.items] == VALID_IDS
    problems = _problems(result)
    truncated = str(broken_root / data.TRUNCATED)
    assert problems[2][0] == truncated
    assert problems[2][1].startswith("undecodable image (")
    assert problems[:2] + problems[3:] == [
        (str(broken_root / data.STRAY_FOLDER), "not a Million-AID split folder (train, test)"),
        (str(broken_root / data.TOO_SHALLOW), "under 1 label folders of train/, expected 2 or 3"),
        (str(broken_root / data.GRAYSCALE), "1 bands, but sensor 'rgb' has 3"),
        (str(broken_root / data.PNG_AS_JPG), "not a JPEG (decodes as image/png)"),
        (str(broken_root / data.DUPLICATE_ID),
         "a second image with the Item id 'millionaid_train_P0001'"),
        (str(broken_root / data.NOT_AN_IMAGE), "suffix '.txt' is not .jpg"),
    ]


def test_cli_writes_a_valid_catalog(broken_root: Path, tmp_path: Path) -> None:
    out = tmp_path / "catalog"
    assert main(["millionaid", "--root", str(broken_root), "--out", str(out)]) == 0
    stac = [p for p in sorted(out.rglob("*.json")) if p.name != "problems.json"]
    assert len(stac) == 1 + 1 + len(VALID_IDS)  # catalog, collection, items
    assert {str(p): validate_core(json.loads(p.read_text())) for p in stac} == {
        str(p): [] for p in stac}
    catalog = pystac.Catalog.from_file(str(out / "catalog.json"))
    items = list(catalog.get_items(recursive=True))
    assert sorted(item.id for item in items) == sorted(VALID_IDS)
    assert all(Path(item.assets["image"].get_absolute_href()).is_file() for item in items)
    assert len(json.loads((out / "problems.json").read_text())) == 7
