"""The sensor registry."""

from pathlib import Path

import numpy as np
import pytest
import yaml

from catalogs.sensors import REGISTRY_PATH, RegistryError, get_sensor, load_registry, registry


def test_sentinel2_levels() -> None:
    l1c, l2a = get_sensor("sentinel2_l1c"), get_sensor("sentinel2_l2a")
    assert l1c.num_bands == 13 and l2a.num_bands == 12
    assert set(l1c.band_names) - set(l2a.band_names) == {"B10"}
    assert l2a.band("B8A").center_wavelength_nm == 864.7
    assert l2a.band("B04").gsd_m == 10.0 and l2a.band("B01").gsd_m == 60.0
    assert (l2a.dtype, l2a.nodata, l2a.scale) == ("uint16", 0.0, 1e-4)


def test_resampling_rules_follow_the_physics() -> None:
    rules = {name: (s.resampling.method, s.resampling.domain) for name, s in registry().items()}
    assert rules["sentinel1_grd"] == ("average", "linear_power")
    assert rules["sentinel2_l2a"] == ("bilinear", "as_stored")
    assert rules["dsm"] == ("bilinear", "as_stored")
    for sensor in registry().values():
        if sensor.kind == "mask":
            assert sensor.resampling.method == "nearest", sensor.name


def test_stac_bands_in_micrometres_and_sar_polarisations() -> None:
    blue = get_sensor("sentinel2_l2a").stac_bands()[1]
    assert blue == {
        "name": "B02",
        "eo:common_name": "blue",
        "eo:center_wavelength": 0.4924,
        "eo:full_width_half_max": 0.066,
        "gsd": 10.0,
        "data_type": "uint16",
        "nodata": 0.0,
        "unit": "reflectance",
        "raster:scale": 0.0001,
        "raster:offset": 0.0,
    }
    vv, vh = get_sensor("sentinel1_grd").stac_bands()
    assert vv["sar:polarizations"] == ["VV"] and vh["sar:polarizations"] == ["VH"]
    assert "nodata" not in vv and vv["unit"] == "dB"


def test_to_physical_scales_and_masks_nodata() -> None:
    stored = np.array([0, 1234, 10000], dtype=np.uint16)
    physical = get_sensor("sentinel2_l2a").to_physical(stored)
    assert np.isnan(physical[0])
    np.testing.assert_allclose(physical[1:], [0.1234, 1.0], rtol=1e-6)


def test_adding_a_sensor_is_one_entry(tmp_path: Path) -> None:
    entries = yaml.safe_load(REGISTRY_PATH.read_text())
    entries["landsat8_oli"] = {
        "title": "Landsat 8 OLI",
        "kind": "optical",
        "dtype": "uint16",
        "nodata": 0,
        "scale": 2.75e-5,
        "offset": -0.2,
        "unit": "reflectance",
        "model_unit": "reflectance",
        "gsd_m": 30.0,
        "resampling": {"method": "bilinear"},
        "bands": [
            {
                "name": "SR_B4",
                "common_name": "red",
                "center_wavelength_nm": 654.6,
                "full_width_half_max_nm": 37.5,
            }
        ],
    }
    path = tmp_path / "sensors.yaml"
    path.write_text(yaml.safe_dump(entries))
    sensor = load_registry(path)["landsat8_oli"]
    assert sensor.band_names == ("SR_B4",) and sensor.resampling.domain == "as_stored"


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"kind": "lidar"}, "kind 'lidar'"),
        ({"resampling": {"method": "bilinear", "domain": "log"}}, "domain 'log'"),
        ({"dtype": "uint17"}, "uint17"),
        ({"bands": []}, "no bands"),
    ],
)
def test_invalid_entry_names_the_sensor(tmp_path: Path, change: dict, message: str) -> None:
    entry = yaml.safe_load(REGISTRY_PATH.read_text())["dsm"] | change
    path = tmp_path / "sensors.yaml"
    path.write_text(yaml.safe_dump({"my_dsm": entry}))
    with pytest.raises(RegistryError, match=rf"sensor 'my_dsm'.*{message}"):
        load_registry(path)


def test_unknown_sensor_lists_the_known_ones() -> None:
    with pytest.raises(KeyError, match="unknown sensor 'landsat9'.*sentinel1_grd"):
        get_sensor("landsat9")
    with pytest.raises(KeyError, match="no band 'B10'"):
        get_sensor("sentinel2_l2a").band("B10")
