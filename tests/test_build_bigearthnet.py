"""The BigEarthNet v1.0 catalog builder, on a tiny copy in the official layout."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pystac
import pytest
import torch
from pyproj import Transformer

from catalogs.builders import bigearthnet
from catalogs.stac import BuildResult
from tests.data import checks
from tests.data.bigearthnet import data

S2_BANDS = ("B01", "B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B09", "B11", "B12")


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The intact copy (read-only: tests that damage it work on a copy)."""
    return data.make_bigearthnet(tmp_path_factory.mktemp("bigearthnet"))


@pytest.fixture(scope="module")
def result(root: Path) -> BuildResult:
    return bigearthnet.build(root)


@pytest.fixture
def items(result: BuildResult) -> dict[str, pystac.Item]:
    return checks.items_by_id(result)


def test_one_item_per_s2_patch(result: BuildResult) -> None:
    checks.assert_builds_cleanly(result, [patch.s2 for patch in data.PATCHES])


def test_asset_keys(items: dict[str, pystac.Item]) -> None:
    s2_keys = [f"s2_{band}" for band in S2_BANDS]
    for patch in data.PATCHES:
        expected = s2_keys + (["s1_VV", "s1_VH"] if patch.s1 else [])
        assert list(items[patch.s2].assets) == expected


def test_proj_fields_are_the_files(items: dict[str, pystac.Item]) -> None:
    for index, patch in enumerate(data.PATCHES):
        for key, asset in items[patch.s2].assets.items():
            band = key.split("_")[1]
            gsd_m = data.S2_BAND_GSD_M.get(band, 10.0)
            side = round(data.PATCH_M / gsd_m)
            checks.assert_proj_fields(asset)
            assert asset.extra_fields["proj:code"] == data.CRS
            assert asset.extra_fields["proj:transform"] == data.band_transform(index, gsd_m)
            assert asset.extra_fields["proj:shape"] == [side, side]
            assert asset.extra_fields["gsd"] == gsd_m


def test_checksums(items: dict[str, pystac.Item]) -> None:
    for asset in checks.assets_of(items.values()):
        checks.assert_file_fields(asset)


def test_bands_and_polarizations(items: dict[str, pystac.Item]) -> None:
    item = items[data.PATCHES[0].s2]
    for band in S2_BANDS:
        fields = item.assets[f"s2_{band}"].extra_fields
        assert fields["msgfm:sensor"] == "sentinel2_l2a"
        assert [b["name"] for b in fields["bands"]] == [band]
    assert item.assets["s2_B8A"].extra_fields["bands"][0]["eo:center_wavelength"] == 0.8647
    for polarization in ("VV", "VH"):
        fields = item.assets[f"s1_{polarization}"].extra_fields
        assert fields["msgfm:sensor"] == "sentinel1_grd"
        assert [b["name"] for b in fields["bands"]] == [polarization]
        assert fields["sar:polarizations"] == [polarization]
        assert fields["sar:instrument_mode"] == "IW"


def test_labels_split_and_times(items: dict[str, pystac.Item]) -> None:
    for patch in data.PATCHES:
        item = items[patch.s2]
        assert item.properties["bigearthnet:labels"] == list(patch.labels)
        assert item.properties["bigearthnet:split"] == patch.split
        assert item.datetime == data.S2_ACQUIRED
        if patch.s1:
            for key in ("s1_VV", "s1_VH"):
                assert item.assets[key].extra_fields["datetime"] == "2017-06-13T16:50:43Z"


def test_footprint_is_the_b02_grid(items: dict[str, pystac.Item]) -> None:
    to_wgs84 = Transformer.from_crs(data.CRS, "EPSG:4326", always_xy=True)
    for index, patch in enumerate(data.PATCHES):
        west, north = data.WEST + index * data.PATCH_M, data.NORTH
        corners = [
            to_wgs84.transform(west + dx, north - dy)
            for dx in (0.0, data.PATCH_M)
            for dy in (0.0, data.PATCH_M)
        ]
        lons, lats = zip(*corners, strict=True)
        expected = [min(lons), min(lats), max(lons), max(lats)]
        assert items[patch.s2].bbox == pytest.approx(expected, abs=1e-6)  # ~0.1 m


def test_class_names_are_torchgeos() -> None:
    from torchgeo.datasets import BigEarthNet

    assert list(bigearthnet.CLC_CLASSES) == BigEarthNet.class_sets[43]


def test_torchgeo_reads_the_layout(root: Path) -> None:
    from torchgeo.datasets import BigEarthNet

    dataset = BigEarthNet(root=root, split="train", bands="all", num_classes=43)
    assert len(dataset) == 2
    sample = dataset[0]
    assert sample["image"].shape == (14, 120, 120)
    b02 = data.s2_values(0, "B02")[0].astype(np.float32)
    assert torch.equal(sample["image"][3], torch.from_numpy(b02))  # VV, VH, B01, B02, ...
    expected = torch.zeros(43, dtype=torch.long)
    expected[[bigearthnet.CLC_CLASSES.index(label) for label in data.PATCHES[0].labels]] = 1
    assert torch.equal(sample["label"], expected)


def test_damaged_files_are_reported_and_the_rest_builds(root: Path, tmp_path: Path) -> None:
    copy = shutil.copytree(root, tmp_path / "copy")
    data.damage(copy)
    result = bigearthnet.build(copy)
    s2, s1 = copy / "BigEarthNet-v1.0", copy / "BigEarthNet-S1-v1.0"
    orphan = s1 / data.ORPHAN_S1 / f"{data.ORPHAN_S1}_labels_metadata.json"
    assert checks.problems(result) == [
        (
            str(copy / "bigearthnet-test.csv"),
            f"line 1: no S2 patch {data.MISSING_S2!r} under BigEarthNet-v1.0",
        ),
        (str(orphan), f"no S2 patch {data.MISSING_S2!r} under BigEarthNet-v1.0"),
        (str(s2 / data.STRAY), "not a file of the BigEarthNet layout"),
        (str(s1 / data.WRONG_BAND_COUNT), "2 bands, expected 1; S1 patch left out"),
        (str(s2 / data.TRUNCATED), checks.StartsWith("unreadable raster (", "; S2 patch skipped")),
        (
            str(s2 / data.WRONG_SIZE),
            "120x120 pixels, expected 60x60 for a 20 m band; S2 patch skipped",
        ),
    ]
    assert [item.id for item in result.items] == [data.PATCHES[0].s2, data.PATCHES[3].s2]
    assert "s1_VV" not in result.items[0].assets and "s2_B10" not in result.items[0].assets


def test_invalid_metadata_is_reported(root: Path, tmp_path: Path) -> None:
    copy = shutil.copytree(root, tmp_path / "copy")
    patch = data.PATCHES[3].s2
    metadata = data.s2_path(copy, patch, "labels_metadata.json")
    metadata.write_text(json.dumps({"labels": ["Urban"], "acquisition_date": "2017-06-13"}))
    result = bigearthnet.build(copy)
    assert checks.problems(result) == [
        (str(metadata), "labels ['Urban'] are not CLC 43-class names; S2 patch skipped")
    ]
    assert patch not in [item.id for item in result.items]


def test_cli_writes_a_valid_catalog(root: Path, tmp_path: Path) -> None:
    items, reported = checks.build_with_cli(
        "bigearthnet", root, tmp_path / "catalog", [patch.s2 for patch in data.PATCHES]
    )
    href = items[0].assets["s2_B02"].get_absolute_href()
    assert Path(href) == data.s2_path(root, data.PATCHES[0].s2, "B02.tif")
    assert reported == []
