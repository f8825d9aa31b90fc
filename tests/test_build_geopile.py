"""The GeoPile builder, on a tiny copy in the official layout."""

from __future__ import annotations

from pathlib import Path

import pystac
import pytest

from catalogs.builders import geopile
from tests.data import checks
from tests.data.geopile import data

VALID_IDS = [
    "geopile_MLRSNet_bridge_bridge_00001",
    "geopile_MLRSNet_loose_0001",
    "geopile_NAIP_images_m_3807504_ne_18_1_0001",
    "geopile_NAIP_images_m_3807504_ne_18_1_0002",
    "geopile_PatternNet_beach_beach001",
    "geopile_RESISC45_church_church_001",
    "geopile_RESISC45_church_church_002",
    "geopile_RSD46-WHU_airport_airport_0001",
]


@pytest.fixture
def root(tmp_path: Path) -> Path:
    return data.make_geopile(tmp_path / "GeoPile")


@pytest.fixture
def broken_root(tmp_path: Path) -> Path:
    return data.make_geopile(tmp_path / "GeoPile", broken=True)


def test_one_item_per_image(root: Path) -> None:
    checks.assert_one_item_per_picture(geopile.build(root), VALID_IDS, root, data.VALID_IMAGES)


def test_constituent_label_and_gsd_range(root: Path) -> None:
    properties = {item.id: item.properties for item in geopile.build(root).items}
    assert {
        key: (p["geopile:constituent"], p.get("geopile:label"), p["geopile:gsd_range_m"])
        for key, p in properties.items()
    } == {
        "geopile_MLRSNet_bridge_bridge_00001": ("MLRSNet", "bridge", [0.1, 10.0]),
        "geopile_MLRSNet_loose_0001": ("MLRSNet", None, [0.1, 10.0]),
        "geopile_NAIP_images_m_3807504_ne_18_1_0001": ("NAIP", None, [1.0, 1.0]),
        "geopile_NAIP_images_m_3807504_ne_18_1_0002": ("NAIP", None, [1.0, 1.0]),
        "geopile_PatternNet_beach_beach001": ("PatternNet", "beach", [0.1, 0.8]),
        "geopile_RESISC45_church_church_001": ("RESISC45", "church", [0.2, 30.0]),
        "geopile_RESISC45_church_church_002": ("RESISC45", "church", [0.2, 30.0]),
        "geopile_RSD46-WHU_airport_airport_0001": ("RSD46-WHU", "airport", [0.5, 2.0]),
    }


def test_pictures_have_no_georeference_and_a_date_range(root: Path) -> None:
    checks.assert_undated_pictures(
        geopile.build(root).items, "1990-01-01T00:00:00Z", "2023-02-28T23:59:59Z"
    )


def test_image_asset_fields_match_the_file(root: Path) -> None:
    media_types = {
        ".jpg": pystac.MediaType.JPEG,
        ".png": pystac.MediaType.PNG,
        ".tif": pystac.MediaType.TIFF,
    }
    for item in geopile.build(root).items:
        asset = item.assets["image"]
        assert asset.media_type == media_types[Path(asset.href).suffix]
        checks.assert_picture_fields(asset, [data.SIZE[1], data.SIZE[0]])
        checks.assert_file_fields(asset)
        assert "sar:polarizations" not in asset.extra_fields


def test_naip_has_a_single_gsd_and_may_carry_near_infrared(root: Path) -> None:
    assets = {item.id: item.assets["image"].extra_fields for item in geopile.build(root).items}
    rgbn = assets["geopile_NAIP_images_m_3807504_ne_18_1_0001"]
    rgb = assets["geopile_NAIP_images_m_3807504_ne_18_1_0002"]
    assert rgbn["msgfm:sensor"] == "rgb_nir"
    assert [band["name"] for band in rgbn["bands"]] == ["red", "green", "blue", "nir"]
    assert rgb["msgfm:sensor"] == "rgb"
    assert [band["name"] for band in rgb["bands"]] == ["red", "green", "blue"]
    assert rgbn["gsd"] == rgb["gsd"] == 1.0
    others = [fields for key, fields in assets.items() if "_NAIP_" not in key]
    assert {fields["msgfm:sensor"] for fields in others} == {"rgb"}
    assert all("gsd" not in fields for fields in others)


def test_damaged_and_unexpected_files_are_reported(broken_root: Path) -> None:
    result = geopile.build(broken_root)
    assert [item.id for item in result.items] == VALID_IDS
    assert checks.problems(result) == [
        (str(broken_root / data.NOT_AN_IMAGE), "suffix '.txt' is not one of an image"),
        (str(broken_root / data.GRAYSCALE_NAIP), "1 bands, expected 3 (rgb) or 4 (rgb_nir)"),
        (str(broken_root / data.RGBA_OUTSIDE_NAIP), "4 bands, expected 3 (rgb)"),
        (str(broken_root / data.TRUNCATED), checks.StartsWith("undecodable image (")),
        (
            str(broken_root / data.DUPLICATE_ID),
            "a second image with the Item id 'geopile_RSD46-WHU_airport_airport_0001'",
        ),
        (
            str(broken_root / data.STRAY_FOLDER),
            "not a GeoPile constituent ['NAIP', 'RSD46-WHU', 'MLRSNet', 'RESISC45', 'PatternNet']",
        ),
    ]


def test_cli_writes_a_valid_catalog(broken_root: Path, tmp_path: Path) -> None:
    _, reported = checks.build_with_cli("geopile", broken_root, tmp_path / "catalog", VALID_IDS)
    assert len(reported) == 6
