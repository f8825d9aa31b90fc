"""The GeoPile builder, on a tiny copy in the official layout."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pystac
import pytest
from PIL import Image

from catalogs.build import main
from catalogs.builders import geopile
from catalogs.stac import BuildResult, validate_core
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


def _problems(result: BuildResult) -> list[tuple[str, str]]:
    return [(p.path, p.reason) for p in result.problems]


def test_one_item_per_image(root: Path) -> None:
    result = geopile.build(root)
    assert result.problems == []
    assert [item.id for item in result.items] == VALID_IDS
    assert [item.assets["image"].href for item in result.items] == [
        str(root / relative) for relative in data.VALID_IMAGES]


def test_constituent_label_and_gsd_range(root: Path) -> None:
    properties = {item.id: item.properties for item in geopile.build(root).items}
    assert {key: (p["geopile:constituent"], p.get("geopile:label"), p["geopile:gsd_range_m"])
            for key, p in properties.items()} == {
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
    for item in geopile.build(root).items:
        stac = item.to_dict()
        assert stac["geometry"] is None
        assert "bbox" not in stac
        assert stac["properties"]["datetime"] is None
        assert stac["properties"]["start_datetime"] == "1990-01-01T00:00:00Z"
        assert stac["properties"]["end_datetime"] == "2023-02-28T23:59:59Z"


def test_image_asset_fields_match_the_file(root: Path) -> None:
    media_types = {".jpg": pystac.MediaType.JPEG, ".png": pystac.MediaType.PNG, ".tif": pystac.MediaType.TIFF}
    for item in geopile.build(root).items:
        asset = item.assets["image"]
        content = Path(asset.href).read_bytes()
        with Image.open(asset.href) as image:
            shape = [image.height, image.width]
        assert asset.media_type == media_types[Path(asset.href).suffix]
        assert asset.extra_fields["proj:code"] is None
        assert asset.extra_fields["proj:shape"] == shape == [data.SIZE[1], data.SIZE[0]]
        assert asset.extra_fields["file:checksum"] == "1220" + hashlib.sha256(content).hexdigest()
        assert asset.extra_fields["file:size"] == len(content)
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
    problems = _problems(result)
    truncated = str(broken_root / data.TRUNCATED)
    assert problems[3][0] == truncated
    assert problems[3][1].startswith("undecodable image (")
    assert problems[:3] + problems[4:] == [
        (str(broken_root / data.NOT_AN_IMAGE), "suffix '.txt' is not one of an image"),
        (str(broken_root / data.GRAYSCALE_NAIP), "1 bands, expected 3 (rgb) or 4 (rgb_nir)"),
        (str(broken_root / data.RGBA_OUTSIDE_NAIP), "4 bands, expected 3 (rgb)"),
        (str(broken_root / data.DUPLICATE_ID),
         "a second image with the Item id 'geopile_RSD46-WHU_airport_airport_0001'"),
        (str(broken_root / data.STRAY_FOLDER),
         "not a GeoPile constituent ['NAIP', 'RSD46-WHU', 'MLRSNet', 'RESISC45', 'PatternNet']"),
    ]


def test_cli_writes_a_valid_catalog(broken_root: Path, tmp_path: Path) -> None:
    out = tmp_path / "catalog"
    assert main(["geopile", "--root", str(broken_root), "--out", str(out)]) == 0
    stac = [p for p in sorted(out.rglob("*.json")) if p.name != "problems.json"]
    assert len(stac) == 1 + 1 + len(VALID_IDS)  # catalog, collection, items
    assert {str(p): validate_core(json.loads(p.read_text())) for p in stac} == {
        str(p): [] for p in stac}
    catalog = pystac.Catalog.from_file(str(out / "catalog.json"))
    items = list(catalog.get_items(recursive=True))
    assert sorted(item.id for item in items) == sorted(VALID_IDS)
    assert all(Path(item.assets["image"].get_absolute_href()).is_file() for item in items)
    assert len(json.loads((out / "problems.json").read_text())) == 6
