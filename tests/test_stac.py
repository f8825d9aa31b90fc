"""Shared STAC helpers: assets from files, catalog writing, offline validation."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest
from affine import Affine
from rasterio.transform import from_origin

from catalogs.collections import source_collection
from catalogs.sensors import get_sensor
from catalogs.stac import (
    SourceFileError,
    make_item,
    raster_asset,
    validate_core,
    write_catalog,
)
from tests.data import checks
from tests.data.rasters import write_geotiff


def _dsm(path: Path, crs: str | None = "EPSG:32632", count: int = 1) -> Path:
    transform = from_origin(700_000, 5_350_000, 0.5, 0.5) if crs else None
    return write_geotiff(path, np.ones((count, 6, 8), dtype=np.float32), crs, transform)


def test_raster_asset_reads_the_grid(tmp_path: Path) -> None:
    asset = raster_asset(_dsm(tmp_path / "dsm.tif"), get_sensor("dsm"))
    fields = asset.extra_fields
    assert fields["proj:code"] == "EPSG:32632" and fields["proj:shape"] == [6, 8]
    assert fields["proj:transform"] == [0.5, 0.0, 700_000.0, 0.0, -0.5, 5_350_000.0]
    assert fields["proj:bbox"] == [700_000.0, 5_349_997.0, 700_004.0, 5_350_000.0]
    assert fields["gsd"] == 0.5 and fields["msgfm:sensor"] == "dsm"


def test_raster_asset_gsd_is_in_metres_in_a_geographic_crs(tmp_path: Path) -> None:
    pixel_deg, north = 1e-5, 48.0
    path = write_geotiff(
        tmp_path / "wgs84.tif",
        np.ones((1, 6, 8), dtype=np.float32),
        "EPSG:4326",
        Affine(pixel_deg, 0.0, 11.0, 0.0, -pixel_deg, north),
    )
    fields = raster_asset(path, get_sensor("dsm")).extra_fields
    assert fields["proj:code"] == "EPSG:4326"
    assert fields["proj:transform"] == [pixel_deg, 0.0, 11.0, 0.0, -pixel_deg, north]
    centre_lat = north - (6 // 2 + 0.5) * pixel_deg  # of the centre pixel, row 3
    expected = checks.wgs84_pixel_side_m(pixel_deg, centre_lat)
    assert fields["gsd"] == pytest.approx(expected, abs=6e-5)
    assert fields["gsd"] == 0.9109  # rounded to 0.1 mm


def test_raster_asset_errors_name_file_and_reason(tmp_path: Path) -> None:
    with pytest.raises(SourceFileError, match=r"nocrs\.tif: raster has no CRS"):
        raster_asset(_dsm(tmp_path / "nocrs.tif", crs=None), get_sensor("dsm"))
    with pytest.raises(SourceFileError, match=r"two\.tif: 2 bands, expected 1 \(dsm\)"):
        raster_asset(_dsm(tmp_path / "two.tif", count=2), get_sensor("dsm"))
    broken = tmp_path / "broken.tif"
    broken.write_bytes(_dsm(tmp_path / "ok.tif").read_bytes()[:200])
    with pytest.raises(SourceFileError, match=r"broken\.tif: unreadable raster"):
        raster_asset(broken, get_sensor("dsm"))


def test_catalog_in_a_dotted_folder_with_relative_and_absolute_hrefs(tmp_path: Path) -> None:
    out = tmp_path / "catalog.v1"
    (out / "raw").mkdir(parents=True)
    inside = _dsm(out / "raw" / "in.tif")
    outside = _dsm(tmp_path / "out.tif")
    when = datetime(2018, 5, 7, tzinfo=UTC)
    items = [
        make_item(
            "in", {"dsm": raster_asset(inside, get_sensor("dsm"))}, when, footprint_asset="dsm"
        ),
        make_item(
            "out", {"dsm": raster_asset(outside, get_sensor("dsm"))}, when, footprint_asset="dsm"
        ),
    ]
    root = write_catalog(out, [source_collection("mdas", items, sample=True)], "test", "test")
    assert root == out.resolve() / "catalog.json" and root.is_file()
    hrefs = {
        p.parent.name: json.loads(p.read_text())["assets"]["dsm"]["href"]
        for p in out.rglob("*.json")
        if p.parent.name in ("in", "out")
    }
    assert hrefs == {"in": "../../raw/in.tif", "out": str(outside.resolve())}
    assert checks.validate_tree(out) == {}


def test_validate_core_reports_what_is_wrong() -> None:
    item = {
        "type": "Feature",
        "stac_version": "1.1.0",
        "id": "x",
        "geometry": None,
        "properties": {"datetime": None},
        "links": [],
        "assets": {},
    }
    errors = validate_core(item)
    assert any("start_datetime" in e or "datetime" in e for e in errors), errors
    item["properties"] = {"datetime": "2018-05-07T00:00:00Z"}
    assert validate_core(item) == []
    assert validate_core({"type": "Thing"}) == [
        "not a STAC item, collection or catalog (type='Thing')"
    ]
