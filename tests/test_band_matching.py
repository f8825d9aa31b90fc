"""Patch embeddings for unseen sensors, initialised by matching band wavelengths."""

from __future__ import annotations

import pytest
import torch

from catalogs.sensors import Sensor, get_sensor
from model.nn.band_matching import (
    band_mapping,
    closest_optical_sensor,
    init_embedding_by_wavelength,
)
from model.nn.sensors import SensorPatchEmbed

PRETRAINED = ("sentinel2_l2a", "sentinel1_grd", "rgb", "dsm")


def _mapped_names(source: str, target: str) -> dict[str, list[str]]:
    source_sensor, target_sensor = get_sensor(source), get_sensor(target)
    mapping = band_mapping(source_sensor, target_sensor)
    return {
        band.name: [source_sensor.bands[i].name for i in bands]
        for band, bands in zip(target_sensor.bands, mapping, strict=True)
    }


def _source_embed(sensor: Sensor) -> SensorPatchEmbed:
    torch.manual_seed(0)
    embed = SensorPatchEmbed(sensor.num_bands, 16, patch_px=4)
    with torch.no_grad():  # a norm that is not the identity, to see it copied
        embed.norm.weight.uniform_(0.5, 1.5)
        embed.norm.bias.uniform_(-0.5, 0.5)
    return embed


def test_worldview3_ms_bands_map_to_the_nearest_or_covered_sentinel2_bands() -> None:
    # rededge (725 nm, 705-745) holds only B06 (740.5) but not B05 (704.1): nearest is B06.
    # nir1 (832.5 +- 62.5) spans B07, B08, B8A; nir2 (950 +- 90) spans B8A and B09: wide bands.
    assert _mapped_names("sentinel2_l2a", "worldview3_ms") == {
        "coastal": ["B01"],
        "blue": ["B02"],
        "green": ["B03"],
        "yellow": ["B03"],
        "red": ["B04"],
        "rededge": ["B06"],
        "nir1": ["B07", "B08", "B8A"],
        "nir2": ["B8A", "B09"],
    }


def test_the_wide_pan_band_takes_every_sentinel2_band_inside_450_to_800_nm() -> None:
    assert _mapped_names("sentinel2_l2a", "worldview3_pan") == {
        "PAN": ["B02", "B03", "B04", "B05", "B06", "B07"]
    }


def test_cir_and_l1c_bands_map_to_sentinel2_l2a() -> None:
    assert _mapped_names("sentinel2_l2a", "cir") == {
        "nir": ["B07", "B08", "B8A"],
        "red": ["B04"],
        "green": ["B03"],
    }
    # Same bands map to themselves (B08's width spans B07 and B8A, which L1C has as well); the
    # cirrus band B10 (1373.5 nm), missing from L2A, takes the nearest: B11 (1613.7 nm).
    expected = {name: [name] for name in get_sensor("sentinel2_l2a").band_names}
    assert _mapped_names("sentinel2_l2a", "sentinel2_l1c") == {**expected, "B10": ["B11"]}


def test_the_closest_pretrained_optical_sensor_is_chosen_by_wavelength() -> None:
    assert closest_optical_sensor(PRETRAINED, get_sensor("cir")) == "sentinel2_l2a"
    assert closest_optical_sensor(PRETRAINED, get_sensor("worldview3_ms")) == "sentinel2_l2a"
    assert closest_optical_sensor(PRETRAINED, get_sensor("sentinel2_l1c")) == "sentinel2_l2a"
    assert closest_optical_sensor(iter(["rgb", "rgb_alpha"]), get_sensor("rgb")) == "rgb"


def test_new_columns_are_source_columns_or_their_sums_and_the_source_is_untouched() -> None:
    source, target = get_sensor("sentinel2_l2a"), get_sensor("worldview3_ms")
    source_embed = _source_embed(source)
    before = {key: value.clone() for key, value in source_embed.state_dict().items()}
    embed = init_embedding_by_wavelength(source_embed, source, target)
    weight = source_embed.projection.weight
    assert embed.projection.weight.shape == (16, 8, 4, 4) and embed.in_channels == 8
    torch.testing.assert_close(embed.projection.weight[:, 0], weight[:, 0])  # coastal <- B01
    torch.testing.assert_close(
        embed.projection.weight[:, 6],  # nir1 <- B07 + B08 + B8A
        weight[:, 6] + weight[:, 7] + weight[:, 8],
    )
    torch.testing.assert_close(embed.projection.bias, source_embed.projection.bias)
    torch.testing.assert_close(embed.norm.state_dict(), source_embed.norm.state_dict())
    assert embed.norm is not source_embed.norm
    torch.testing.assert_close(source_embed.state_dict(), before)


def test_l1c_keeps_the_l2a_columns_and_embeds_l2a_bands_as_l2a_does() -> None:
    source, target = get_sensor("sentinel2_l2a"), get_sensor("sentinel2_l1c")
    source_embed = _source_embed(source)
    embed = init_embedding_by_wavelength(source_embed, source, target)
    cirrus = target.band_names.index("B10")
    image = torch.randn(2, source.num_bands, 8, 8)
    with_cirrus = torch.cat([image[:, :cirrus], torch.zeros(2, 1, 8, 8), image[:, cirrus:]], 1)
    torch.testing.assert_close(embed(with_cirrus), source_embed(image))


def test_a_wide_band_embeds_like_the_narrow_bands_it_covers_when_they_agree() -> None:
    source, target = get_sensor("sentinel2_l2a"), get_sensor("worldview3_pan")
    source_embed = _source_embed(source)
    embed = init_embedding_by_wavelength(source_embed, source, target)
    pan = torch.randn(2, 1, 16, 16)
    narrow = torch.zeros(2, source.num_bands, 16, 16)
    narrow[:, band_mapping(source, target)[0]] = pan
    torch.testing.assert_close(embed(pan), source_embed(narrow))


def test_bands_without_wavelengths_are_refused_by_name() -> None:
    s2, s1 = get_sensor("sentinel2_l2a"), get_sensor("sentinel1_grd")
    with pytest.raises(ValueError, match="band 'VV' of sensor 'sentinel1_grd'"):
        band_mapping(s2, s1)
    with pytest.raises(ValueError, match="band 'VV' of sensor 'sentinel1_grd'"):
        band_mapping(s1, s2)
    with pytest.raises(ValueError, match="band 'VV' of sensor 'sentinel1_grd'"):
        closest_optical_sensor(PRETRAINED, s1)
    with pytest.raises(ValueError, match=r"none of the sensors \['sentinel1_grd', 'dsm'\]"):
        closest_optical_sensor(["sentinel1_grd", "dsm"], get_sensor("cir"))
    with pytest.raises(ValueError, match="takes 2 bands, sensor 'sentinel2_l2a' has 12"):
        init_embedding_by_wavelength(SensorPatchEmbed(2, 16), s2, get_sensor("cir"))
