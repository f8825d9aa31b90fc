"""Patch embeddings for sensors the model never saw.

Initialised from a pretrained optical embedding by matching band wavelengths.

Band mapping (:func:`band_mapping`): each band of the target sensor takes its weights from
source bands chosen by the registry's centre wavelengths and widths (FWHM):

1. A source band with the target band's centre and width is the same band and is taken alone
   (Sentinel-2 L1C B08 against L2A B08, although its 106 nm width also spans B07 and B8A: the
   target has those bands itself, so summing them into B08 would count them twice).
2. A target band whose interval ``[centre - fwhm / 2, centre + fwhm / 2]`` holds the centres of
   two or more source bands is a wide band (WorldView-3 PAN, 450-800 nm): it takes all of them,
   since it records the light those narrow bands record separately.
3. Otherwise the source band with the nearest centre: the closest spectral response available.

Weights (:func:`init_embedding_by_wavelength`): the convolution column of a target band is the
SUM of the columns of its source bands. A wide band's value is about the mean of the narrow
bands it covers; where each of them is about the wide band's value ``v``, the source embedding
sees ``sum_s w_s * v`` from them, and the target sees ``(sum_s w_s) * v``: the same response, so
the encoder downstream gets tokens like those it was trained on. (A mean of the columns would
scale that contribution down by the number of bands.) Exactly: a one-band target (PAN) embeds
its image as the source embeds an image whose covered bands all equal it and whose other bands
are 0 (the band mean after normalisation). Bias and token norm are copied.

Source sensor (:func:`closest_optical_sensor`): the candidate whose bands all have wavelengths
with the smallest total distance to the target, a target band's distance being the mean
``|centre - source centre|`` over its source bands (a mean, so that covering a wide band with
more narrow bands is not penalised).
"""

from __future__ import annotations

import copy
from collections.abc import Iterable

import torch

from catalogs.sensors import Band, Sensor, get_sensor
from model.nn.sensors import SensorPatchEmbed


def band_mapping(source: Sensor, target: Sensor) -> list[list[int]]:
    """For each band of ``target``, the indices of the ``source`` bands it takes weights from.

    Args:
        source: the sensor of the pretrained embedding.
        target: the sensor that needs an embedding.

    Returns:
        One ascending list of source band indices per target band, in target band order.

    Raises:
        ValueError: naming the sensor and band, for a band without a centre wavelength.
    """
    source_centres = [_centre_nm(source, band) for band in source.bands]
    mapping = []
    for band in target.bands:
        centre = _centre_nm(target, band)
        same = [
            i
            for i, s in enumerate(source.bands)
            if s.center_wavelength_nm == centre
            and s.full_width_half_max_nm == band.full_width_half_max_nm
        ]
        half_width = (band.full_width_half_max_nm or 0.0) / 2.0
        covered = [i for i, c in enumerate(source_centres) if abs(c - centre) <= half_width]
        if same:
            mapping.append(same[:1])
        elif len(covered) >= 2:
            mapping.append(covered)
        else:
            mapping.append(
                [min(range(len(source_centres)), key=lambda i: abs(source_centres[i] - centre))]
            )
    return mapping


def init_embedding_by_wavelength(
    source_embed: SensorPatchEmbed, source: Sensor, target: Sensor
) -> SensorPatchEmbed:
    """A new patch embedding for ``target`` built from ``source_embed`` by :func:`band_mapping`.

    Each target band's convolution column is the sum of its source bands' columns; bias and
    norm are copied. ``source_embed`` is left unchanged.

    Args:
        source_embed: the pretrained embedding of ``source``.
        source: the sensor ``source_embed`` was trained on.
        target: the sensor to embed.

    Returns:
        A :class:`SensorPatchEmbed` with ``target.num_bands`` input channels, on the source's
        device and dtype.

    Raises:
        ValueError: if ``source_embed`` does not take ``source``'s bands, or for a band without
            a centre wavelength.
    """
    if source_embed.in_channels != source.num_bands:
        raise ValueError(
            f"the embedding takes {source_embed.in_channels} bands, sensor "
            f"{source.name!r} has {source.num_bands}"
        )
    mapping = band_mapping(source, target)
    projection = source_embed.projection
    embed = SensorPatchEmbed(
        target.num_bands,
        projection.out_channels,
        source_embed.patch_px,
        norm_layer=lambda _: copy.deepcopy(source_embed.norm),
    )
    embed.to(device=projection.weight.device, dtype=projection.weight.dtype)
    with torch.no_grad():
        embed.projection.weight.copy_(
            torch.stack([projection.weight[:, bands].sum(dim=1) for bands in mapping], dim=1)
        )
        embed.projection.bias.copy_(projection.bias)
    return embed


def closest_optical_sensor(candidates: Iterable[str], target: Sensor) -> str:
    """The registry sensor among ``candidates`` spectrally closest to ``target``.

    Candidates with a band lacking a wavelength (SAR, DSM, an alpha band) are skipped; the rest
    are ranked by the total distance of :func:`band_mapping` (see the module docstring), ties
    broken by more bands, then by name.

    Args:
        candidates: registry names of the pretrained sensors.
        target: the sensor that needs an embedding.

    Returns:
        The name of the closest candidate.

    Raises:
        ValueError: naming the sensor and band, for a target band without a wavelength, or
            naming the candidates, if none has wavelengths for all bands.
    """
    for band in target.bands:
        _centre_nm(target, band)
    names = list(candidates)
    ranked = []
    for name in names:
        source = get_sensor(name)
        if any(band.center_wavelength_nm is None for band in source.bands):
            continue
        distance = sum(
            sum(
                abs(source.bands[i].center_wavelength_nm - band.center_wavelength_nm) for i in bands
            )
            / len(bands)
            for band, bands in zip(target.bands, band_mapping(source, target), strict=True)
        )
        ranked.append((distance, -source.num_bands, name))
    if not ranked:
        raise ValueError(
            f"none of the sensors {names} has wavelengths for all its "
            f"bands to match {target.name!r} against"
        )
    return min(ranked)[2]


def _centre_nm(sensor: Sensor, band: Band) -> float:
    if band.center_wavelength_nm is None:
        raise ValueError(
            f"band {band.name!r} of sensor {sensor.name!r} has no centre wavelength to match by"
        )
    return band.center_wavelength_nm
