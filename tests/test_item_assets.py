"""Reading STAC items as public APIs publish them (tests/data/stac_items, see SOURCES.md):
which registry sensor and bands each asset holds, and the radiometry to the registry's unit."""

from __future__ import annotations

import copy
import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from catalogs.item_assets import (
    NOT_GEOCODED,
    ItemReadError,
    Radiometry,
    match_sensor,
    sensor_assets,
    to_storage,
)
from catalogs.sensors import RegistryError, get_sensor, load_registry

ITEMS = Path(__file__).parent / "data" / "stac_items"
S2_KEYS_EARTH_SEARCH = [
    "coastal",
    "blue",
    "green",
    "red",
    "rededge1",
    "rededge2",
    "rededge3",
    "nir",
    "nir08",
    "nir09",
    "swir16",
    "swir22",
]
S2_BANDS_L2A = ("B01", "B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B09", "B11", "B12")


def published(name: str) -> dict[str, Any]:
    return json.loads((ITEMS / f"{name}.json").read_text())


def by_key(item: dict[str, Any]) -> dict[str, tuple[str, tuple[str, ...]]]:
    """{asset key: (sensor, registry bands)} of a resolved item."""
    return {
        asset.key: (name, asset.band_names)
        for name, assets in sensor_assets(item).items()
        for asset in assets
    }


@pytest.mark.parametrize(
    ("name", "sensor", "keys"),
    [
        ("es_sentinel-2-l2a", "sentinel2_l2a", S2_KEYS_EARTH_SEARCH),  # COGs over their -jp2 copies
        ("es_sentinel-2-l2a_2025", "sentinel2_l2a", S2_KEYS_EARTH_SEARCH),
        ("es_sentinel-2-c1-l2a", "sentinel2_l2a", S2_KEYS_EARTH_SEARCH),
        (
            "es_sentinel-2-l1c",
            "sentinel2_l1c",
            [*S2_KEYS_EARTH_SEARCH[:10], "cirrus", *S2_KEYS_EARTH_SEARCH[10:]],
        ),
        ("pc_sentinel-2-l2a", "sentinel2_l2a", list(S2_BANDS_L2A)),  # not AOT, SCL, WVP, visual
        (
            "cdse_sentinel-2-l2a",
            "sentinel2_l2a",  # the finest of the 10/20/60 m versions
            [
                "B01_20m",
                "B02_10m",
                "B03_10m",
                "B04_10m",
                "B05_20m",
                "B06_20m",
                "B07_20m",
                "B08_10m",
                "B8A_20m",
                "B09_60m",
                "B11_20m",
                "B12_20m",
            ],
        ),
        (
            "pc_landsat-c2-l2",
            "landsat_c2_l2",
            ["coastal", "blue", "green", "red", "nir08", "swir16", "swir22"],
        ),
        ("pc_sentinel-1-rtc", "sentinel1_rtc", ["vv", "vh"]),
        ("pc_naip", "naip", ["image"]),
        ("pc_3dep-seamless", "dem", ["data"]),
        ("pc_cop-dem-glo-30", "dem", ["data"]),
        ("pc_3dep-lidar-dsm", "dsm", ["data"]),
    ],
)
def test_each_published_item_resolves_to_its_sensor_and_bands(
    name: str, sensor: str, keys: list[str]
) -> None:
    resolved = by_key(published(name))
    registry_bands = get_sensor(sensor).band_names
    assert {value[0] for value in resolved.values()} == {sensor}
    assert set(resolved) == set(keys)
    held = sorted(band for _, bands in resolved.values() for band in bands)
    assert held == sorted(registry_bands)  # every registry band exactly once


def test_bands_are_matched_by_name_common_name_or_wavelength() -> None:
    resolved = by_key(published("es_sentinel-2-l2a"))
    # "blue" by common name; "rededge1..3" share the common name "rededge": by wavelength.
    assert resolved["blue"][1] == ("B02",)
    assert [resolved[f"rededge{i}"][1] for i in (1, 2, 3)] == [("B05",), ("B06",), ("B07",)]
    assert by_key(published("pc_landsat-c2-l2"))["nir08"][1] == ("B5",)  # OLI_B5 by "nir08"


def test_a_multi_band_asset_is_split_into_the_bands_it_holds() -> None:
    item = published("pc_naip")
    item["assets"]["image"]["eo:bands"].insert(1, {"name": "PAN", "common_name": "pan"})
    (asset,) = sensor_assets(item)["naip"]
    assert (asset.band_names, asset.indexes) == (("red", "green", "blue", "nir"), (1, 3, 4, 5))
    assert sensor_assets(published("pc_naip"))["naip"][0].indexes is None  # read every band


@pytest.mark.parametrize("name", ["pc_sentinel-1-grd", "es_sentinel-1-grd"])
def test_sentinel1_grd_in_radar_geometry_is_refused(name: str) -> None:
    item = published(name)
    with pytest.raises(ItemReadError) as caught:
        sensor_assets(item)
    assert (caught.value.item_id, caught.value.reason) == (item["id"], NOT_GEOCODED)
    assert NOT_GEOCODED == "not geocoded: use a terrain-corrected product such as sentinel-1-rtc"


def test_an_item_matching_no_sensor_is_named() -> None:
    item = published("pc_landsat-c2-l2")
    item["properties"]["platform"] = "landsat-7"  # ETM+: other bands than OLI's
    with pytest.raises(ItemReadError) as caught:
        sensor_assets(item)
    assert caught.value.reason == (
        "matches no sensor of the registry ({'collection': 'landsat-c2-l2', 'platform': "
        "'landsat-7', 'instruments': ['oli', 'tirs']}); add a stac rule to "
        "catalogs/sensors.yaml"
    )


def test_an_item_matching_several_sensors_is_named() -> None:
    item = published("es_sentinel-2-l1c")
    item["properties"]["s2:product_type"] = "S2MSI2A"  # an L1C collection holding L2A?
    with pytest.raises(
        ItemReadError,
        match=r"matches several sensors \['sentinel2_l1c', "
        r"'sentinel2_l2a'\]",
    ):
        match_sensor(item)


def test_rules_match_publishers_spellings() -> None:
    item = published("pc_sentinel-2-l2a")  # constellation "Sentinel 2", platform "Sentinel-2B"
    item["collection"] = "my-mirror"
    assert match_sensor(item).name == "sentinel2_l2a"  # by constellation and product type


def test_a_band_missing_from_the_item_is_named() -> None:
    item = published("pc_sentinel-2-l2a")
    del item["assets"]["B09"]
    with pytest.raises(
        ItemReadError,
        match=r"no asset holds the registry's sentinel2_l2a "
        r"bands \['B09'\]",
    ):
        sensor_assets(item)


def test_two_equal_assets_for_one_band_are_ambiguous() -> None:
    item = published("pc_sentinel-2-l2a")
    item["assets"]["B04_copy"] = copy.deepcopy(item["assets"]["B04"])
    with pytest.raises(
        ItemReadError,
        match=r"assets \['B04', 'B04_copy'\] all hold "
        r"sentinel2_l2a band B04",
    ):
        sensor_assets(item)


def _radiometry(
    name: str, key: str, change: dict[str, Any] | None = None
) -> tuple[Radiometry | None, str]:
    item = published(name)
    item["properties"].update(change or {})
    asset = next(a for assets in sensor_assets(item).values() for a in assets if a.key == key)
    return asset.radiometry, asset.sensor.name


# Stored = registry storage of the physical value (S2: reflectance * 10000, DN 0 = nodata).
@pytest.mark.parametrize(
    ("name", "key", "change", "dn", "stored"),
    [
        # Earth Search declares offset -0.1 on pixels it already shifted: applied once (not at all).
        ("es_sentinel-2-l2a", "red", None, [0, 1234, 9000], [0, 1234, 9000]),
        # ... and where it says it has not shifted them, the offset applies.
        (
            "es_sentinel-2-l2a",
            "red",
            {"earthsearch:boa_offset_applied": False},
            [0, 1234, 1001, 1000, 600],
            [0, 234, 1, 1, 1],
        ),  # <= 0 reflectance clips to 1 (0 = nodata)
        # Planetary Computer declares nothing: baseline 05.11 >= 04.00 gives the -1000 DN offset.
        ("pc_sentinel-2-l2a", "B04", None, [0, 1234, 65535], [0, 234, 64535]),
        ("pc_sentinel-2-l2a_baseline0212", "B04", None, [0, 1234], [0, 1234]),
        ("es_sentinel-2-l1c", "red", None, [0, 1234], [0, 234]),
        ("cdse_sentinel-2-l2a", "B04_10m", None, [0, 1234], [0, 234]),  # processing:version 05.00
        ("pc_landsat-c2-l2", "red", None, [0, 7273, 65535], [0, 7273, 65535]),  # = the registry
    ],
)
def test_optical_radiometry_reaches_the_exact_stored_value(
    name: str, key: str, change: dict[str, Any] | None, dn: list[int], stored: list[int]
) -> None:
    radiometry, sensor_name = _radiometry(name, key, change)
    sensor = get_sensor(sensor_name)
    values, invalid = to_storage(
        np.array(dn, dtype=np.uint16).reshape(1, 1, -1), radiometry, sensor
    )
    assert values.dtype == np.uint16 and values.ravel().tolist() == stored
    assert invalid.ravel().tolist() == [v == 0 for v in dn]


def test_landsat_reflectance_is_the_registrys_own_scale() -> None:
    sensor = get_sensor("landsat_c2_l2")
    physical = sensor.to_physical(np.array([20000], dtype=np.uint16))
    assert math.isclose(float(physical[0]), 0.35, rel_tol=1e-6)  # 20000 * 2.75e-05 - 0.2


def test_sentinel1_rtc_linear_power_is_stored_in_db() -> None:
    radiometry, sensor_name = _radiometry("pc_sentinel-1-rtc", "vv")
    assert radiometry == Radiometry(1.0, 0.0, -32768.0, linear_power=True)
    power = np.array([0.01, 1.0, 0.5, -32768.0, 0.0], dtype=np.float32).reshape(1, 1, -1)
    values, invalid = to_storage(power, radiometry, get_sensor(sensor_name))
    expected_db = [10 * math.log10(np.float32(0.01)), 0.0, 10 * math.log10(0.5)]
    assert values.dtype == np.float32
    np.testing.assert_array_equal(values.ravel()[:3], np.float32(expected_db))
    assert np.isnan(values.ravel()[3:]).all()  # nodata and zero power: no data
    assert invalid.ravel().tolist() == [False, False, False, True, True]


def test_stac_1_1_band_fields_give_the_radiometry() -> None:
    item = published("pc_sentinel-2-l2a_baseline0212")
    item["stac_version"] = "1.1.0"
    for key in ("B02", "B03"):
        asset = item["assets"][key]
        asset["bands"] = [
            {**asset.pop("eo:bands")[0], "raster:scale": 0.0002, "raster:offset": 0.0, "nodata": 0}
        ]
    assets = {a.key: a for a in sensor_assets(item)["sentinel2_l2a"]}
    assert assets["B02"].radiometry == Radiometry(0.0002, 0.0, 0.0)
    assert assets["B04"].radiometry is None


def test_bands_of_one_asset_declaring_different_radiometry_are_refused() -> None:
    item = published("pc_naip")
    item["assets"]["image"]["raster:bands"] = [
        {"scale": 1.0},
        {"scale": 2.0},
        {"scale": 1.0},
        {"scale": 1.0},
    ]
    with pytest.raises(ItemReadError, match="declare different scale/offset/nodata"):
        sensor_assets(item)


def test_tagged_assets_keep_our_builders_layout() -> None:
    item = {
        "id": "x",
        "collection": "anything",
        "properties": {},
        "assets": {
            "s1": {"href": "/a.tif", "msgfm:sensor": "sentinel1_grd"},
            "thumbnail": {"href": "/t.png"},
        },
    }
    (asset,) = sensor_assets(item)["sentinel1_grd"]
    assert (asset.key, asset.band_names, asset.indexes, asset.radiometry) == (
        "s1",
        ("VV", "VH"),
        None,
        None,
    )


@pytest.mark.parametrize(
    ("rule", "message"),
    [
        ({}, "a stac rule needs at least one field to match"),
        ({"collections": []}, "stac rule field 'collections' must be a non-empty list"),
        ({"collections": ["x"], "values": "decibel"}, "stac rule values 'decibel' not in"),
        ({"colections": ["x"]}, "unexpected keyword argument 'colections'"),
    ],
)
def test_bad_match_rules_are_named(tmp_path: Path, rule: dict[str, Any], message: str) -> None:
    path = tmp_path / "sensors.yaml"
    path.write_text(
        json.dumps(
            {
                "s": {
                    "title": "t",
                    "kind": "optical",
                    "dtype": "uint8",
                    "nodata": None,
                    "unit": "u",
                    "model_unit": "u",
                    "resampling": {"method": "nearest"},
                    "bands": [{"name": "b"}],
                    "stac": [rule],
                }
            }
        )
    )
    with pytest.raises(RegistryError, match=f"sensor 's' in the registry is invalid: .*{message}"):
        load_registry(path)


def test_nan_holes_of_a_float_raster_take_the_registrys_nodata() -> None:
    dsm = get_sensor("dsm")  # float32, nodata -9999
    values = np.array([[[12.5, np.nan, -9999.0]]], dtype=np.float32)
    stored, invalid = to_storage(values, None, dsm)
    assert stored.ravel().tolist() == [12.5, -9999.0, -9999.0]
    assert invalid.ravel().tolist() == [False, True, True]


def test_whole_step_offsets_give_the_float_arithmetics_values_for_every_dn() -> None:
    s2 = get_sensor("sentinel2_l2a")
    dn = np.arange(65536, dtype=np.uint16).reshape(1, 256, 256)
    stored, invalid = to_storage(dn, Radiometry(0.0001, -0.1, 0.0), s2)
    level = np.clip(np.rint((dn.astype(np.float64) * 0.0001 - 0.1) / 0.0001), 0, 65535)
    level[level == 0] = 1  # a valid pixel never takes the nodata value
    level[dn == 0] = 0
    np.testing.assert_array_equal(stored, level.astype(np.uint16))
    assert invalid.sum() == 1
