"""The ISPRS Vaihingen catalog builder, on a tiny copy in the layout TorchGeo reads."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pystac
import pytest
import torch
from pyproj import Transformer

from catalogs.builders import vaihingen
from catalogs.stac import BuildResult
from tests.data import checks
from tests.data.vaihingen import data

IDS = ["vaihingen_area1", "vaihingen_area2", "vaihingen_area4"]


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return data.make_vaihingen(tmp_path_factory.mktemp("vaihingen"))


@pytest.fixture(scope="module")
def result(root: Path) -> BuildResult:
    return vaihingen.build(root)


@pytest.fixture
def items(result: BuildResult) -> dict[str, pystac.Item]:
    return checks.items_by_id(result)


def test_one_item_per_area(result: BuildResult) -> None:
    checks.assert_builds_cleanly(result, IDS)  # the archive at the root is not read


def test_assets(root: Path, items: dict[str, pystac.Item]) -> None:
    areas = {**data.GEOREFERENCED_AREAS, **data.UNGEOREFERENCED_AREAS}
    for area, label_folder in areas.items():
        item = items[f"vaihingen_area{area}"]
        expected = {
            "cir": data.area_path(root, area, "cir"),
            "dsm": data.area_path(root, area, "dsm"),
        }
        if label_folder is not None:
            expected["labels"] = data.area_path(root, area, "labels", label_folder)
        assert {key: Path(asset.href) for key, asset in item.assets.items()} == expected
    labels = items["vaihingen_area1"].assets["labels"]
    assert labels.roles == ["labels"]
    assert labels.extra_fields["msgfm:sensor"] == "isprs_labels"


def test_proj_fields_of_georeferenced_files(items: dict[str, pystac.Item]) -> None:
    for area in data.GEOREFERENCED_AREAS:
        for asset in items[f"vaihingen_area{area}"].assets.values():
            checks.assert_proj_fields(asset)
            fields = asset.extra_fields
            assert fields["proj:code"] == data.CRS
            assert fields["proj:transform"] == data.area_transform(area)
            assert fields["proj:shape"] == [data.HEIGHT, data.WIDTH]
            assert fields["gsd"] == data.GSD_M


def test_ungeoreferenced_files_have_shape_only(items: dict[str, pystac.Item]) -> None:
    item = items["vaihingen_area4"]
    assert item.geometry is None and item.bbox is None
    for asset in item.assets.values():
        assert asset.media_type == pystac.MediaType.TIFF
        checks.assert_picture_fields(asset, [data.HEIGHT, data.WIDTH])
        assert asset.extra_fields["gsd"] == data.GSD_M


def test_footprint_is_the_cir_grid(items: dict[str, pystac.Item]) -> None:
    _, _, west, _, _, north = data.area_transform(1)
    east, south = west + data.WIDTH * data.GSD_M, north - data.HEIGHT * data.GSD_M
    to_wgs84 = Transformer.from_crs(data.CRS, "EPSG:4326", always_xy=True)
    lons, lats = zip(
        *(to_wgs84.transform(x, y) for x in (west, east) for y in (south, north)), strict=True
    )
    assert items["vaihingen_area1"].bbox == pytest.approx(
        [min(lons), min(lats), max(lons), max(lats)], abs=2e-7
    )


def test_checksums(items: dict[str, pystac.Item]) -> None:
    for asset in checks.assets_of(items.values()):
        checks.assert_file_fields(asset)


def test_bands(items: dict[str, pystac.Item]) -> None:
    for area in ("vaihingen_area1", "vaihingen_area4"):
        assets = items[area].assets
        assert [b["name"] for b in assets["cir"].extra_fields["bands"]] == ["nir", "red", "green"]
        assert [b["name"] for b in assets["dsm"].extra_fields["bands"]] == ["elevation"]
        assert assets["dsm"].extra_fields["bands"][0]["unit"] == "m"
        assert "sar:polarizations" not in assets["cir"].extra_fields
    labels = items["vaihingen_area1"].assets["labels"].extra_fields
    assert [b["name"] for b in labels["bands"]] == ["red", "green", "blue"]


def test_properties(items: dict[str, pystac.Item]) -> None:
    for area, split in ((1, "train"), (2, "test"), (4, "test")):
        item = items[f"vaihingen_area{area}"]
        assert item.properties["vaihingen:area"] == area
        assert item.properties["vaihingen:split"] == split
        assert item.datetime is None
        assert (item.properties["start_datetime"], item.properties["end_datetime"]) == (
            "2008-06-01T00:00:00Z",
            "2008-08-31T23:59:59Z",
        )


def test_train_areas_are_torchgeos() -> None:
    from torchgeo.datasets import Vaihingen2D

    train = {
        int(name.removeprefix("top_mosaic_09cm_area").removesuffix(".tif"))
        for name in Vaihingen2D.splits["train"]
    }
    assert train == vaihingen.TRAIN_AREAS


def test_torchgeo_reads_the_layout(root: Path) -> None:
    from torchgeo.datasets import Vaihingen2D

    dataset = Vaihingen2D(root=root, split="train")
    assert len(dataset) == 1  # area 1: orthophoto in top/, ground truth at the root
    sample = dataset[0]
    assert torch.equal(sample["image"], torch.from_numpy(data.cir_values(1).astype(np.float32)))
    expected = torch.full((data.HEIGHT, data.WIDTH), 4, dtype=torch.long)  # tree
    expected[:, : data.WIDTH // 2] = 2  # building
    assert torch.equal(sample["mask"], expected)


def test_damaged_files_are_reported_and_the_rest_builds(root: Path, tmp_path: Path) -> None:
    copy = shutil.copytree(root, tmp_path / "copy")
    data.damage(copy)
    result = vaihingen.build(copy)
    assert [item.id for item in result.items] == ["vaihingen_area1", "vaihingen_area4"]
    assert list(result.items[0].assets) == ["cir", "labels"]
    assert checks.problems(result) == [
        (str(copy / data.MISNAMED), "name is not top_mosaic_09cm_area<N>.tif"),
        (
            str(copy / data.ORPHAN_DSM),
            "dsm of area 9, which has no orthophoto top/top_mosaic_09cm_area9.tif",
        ),
        (str(copy / data.WRONG_BAND_COUNT), "2 bands, expected 1 (dsm)"),
        (str(copy / data.TRUNCATED), checks.StartsWith("unreadable raster (", "; area 2 skipped")),
    ]


def test_damaged_ungeoreferenced_files_are_reported(root: Path, tmp_path: Path) -> None:
    copy = shutil.copytree(root, tmp_path / "copy")
    dsm = data.area_path(copy, 4, "dsm")
    labels = data.area_path(copy, 4, "labels", "gts_for_participants")
    data.write_tiff(dsm, np.zeros((3, data.HEIGHT, data.WIDTH), "float32"), None)
    data.write_tiff(labels, data.label_values(), None)
    labels.write_bytes(labels.read_bytes()[: labels.stat().st_size // 2])
    result = vaihingen.build(copy)
    assert [item.id for item in result.items] == IDS
    assert list(result.items[2].assets) == ["cir"]
    assert checks.problems(result) == [
        (str(dsm), "3 bands, expected 1 (dsm)"),
        (str(labels), checks.StartsWith("undecodable image (")),
    ]


def test_cli_writes_a_valid_catalog(root: Path, tmp_path: Path) -> None:
    items, reported = checks.build_with_cli("vaihingen", root, tmp_path / "catalog", IDS)
    assert items[2].geometry is None
    assert Path(items[0].assets["labels"].get_absolute_href()) == data.area_path(root, 1, "labels")
    assert reported == []
