"""Sensor physics: render the world onto a sensor's own pixel grid.

A pixel integrates the ground inside its footprint: each renderer samples the world at
``supersample`` x ``supersample`` points per pixel (in the grid's own CRS, transformed into the
world CRS) and averages the physical quantity the sensor measures (reflectance; linear
backscatter power; height). Noise (sensor noise, SAR speckle) is drawn per pixel afterwards.
"""

from __future__ import annotations

from functools import cache, lru_cache

import numpy as np
from pyproj import Transformer

from catalogs.grid import Grid
from catalogs.sample import spectra
from catalogs.sample.world import WORLD_CRS, Ground, World
from catalogs.sensors import Sensor


@cache
def _to_world(crs: str) -> Transformer:
    return Transformer.from_crs(crs, WORLD_CRS, always_xy=True)


def sample_points(grid: Grid, supersample: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """World-CRS coordinates of ``supersample``^2 points per pixel, shaped (rows*k, cols*k)."""
    rows, cols = grid.shape
    k = supersample
    sub_cols = (np.arange(cols * k) + 0.5) / k
    sub_rows = (np.arange(rows * k) + 0.5) / k
    cc, rr = np.meshgrid(sub_cols, sub_rows)
    x, y = grid.transform @ (cc, rr)
    if grid.crs == WORLD_CRS:
        return x, y
    return _to_world(grid.crs).transform(x, y)


@lru_cache(maxsize=2)
def observe(
    world: World, grid: Grid, supersample: int = 1
) -> tuple[np.ndarray, np.ndarray, Ground]:
    """The world's ground at ``supersample``^2 points per pixel of ``grid``: (x, y, ground).

    Cached for the last grids, so several sensors rendered over one grid (optical, DSM, labels)
    evaluate the world once. The arrays are shared: treat them as read-only.
    """
    x, y = sample_points(grid, supersample)
    return x, y, world.ground(x, y)


def pixel_mean(values: np.ndarray, supersample: int) -> np.ndarray:
    """Average (..., rows*k, cols*k) sub-pixel values to (..., rows, cols)."""
    k = supersample
    if k == 1:
        return values
    *lead, h, w = values.shape
    return values.reshape(*lead, h // k, k, w // k, k).mean(axis=(-3, -1))


def _band_reflectance(ground: Ground, sensor: Sensor) -> np.ndarray:
    table = spectra.SPECTRA @ spectra.response_matrix(sensor).T  # (materials, bands)
    reflectance = table[ground.material] * ground.albedo[..., None]
    return np.moveaxis(reflectance, -1, 0)


def surface_reflectance(
    world: World, grid: Grid, sensor: Sensor, supersample: int = 2, cloud_scene: int | None = None
) -> np.ndarray:
    """Bottom-of-atmosphere reflectance (bands, rows, cols) seen by an optical ``sensor``.

    With ``cloud_scene``, that scene's clouds are composited over the ground and their shadows
    darken it (the cloud field displaced by the sun's direction and the cloud height).
    """
    x, y, ground = observe(world, grid, supersample)
    reflectance = _band_reflectance(ground, sensor)
    if cloud_scene is not None:
        opacity = world.cloud_opacity(x, y, cloud_scene)
        shadow = world.cloud_opacity(
            x - CLOUD_SHADOW_OFFSET_M[0], y - CLOUD_SHADOW_OFFSET_M[1], cloud_scene
        )
        cloud = (spectra.response_matrix(sensor) @ spectra.CLOUD_SPECTRUM)[:, None, None]
        reflectance = reflectance * (1.0 - 0.7 * shadow * (1.0 - opacity))
        reflectance = reflectance * (1.0 - opacity) + cloud * opacity
    return pixel_mean(reflectance, supersample)


# A cloud 2 km up under a sun 60 deg high in the south-south-east casts its shadow 1.15 km
# to the north-north-west.
CLOUD_SHADOW_OFFSET_M = (-390.0, 1080.0)


def top_of_atmosphere(reflectance: np.ndarray, sensor: Sensor) -> np.ndarray:
    """Top-of-atmosphere reflectance: two-way transmittance plus Rayleigh path reflectance."""
    t = spectra.transmittance(sensor)[:, None, None]
    return reflectance * t + spectra.path_reflectance(sensor)[:, None, None]


def backscatter_db(
    world: World, grid: Grid, sensor: Sensor, rng: np.random.Generator, supersample: int = 2
) -> np.ndarray:
    """SAR sigma0 in dB (polarisations, rows, cols) of the ground under ``grid``.

    Mean linear power over the footprint, times Gamma-distributed speckle (``SPECKLE_LOOKS``
    looks), converted to dB. SAR sees through clouds, so nothing here depends on the sky.
    """
    _, _, ground = observe(world, grid, supersample)
    texture = 0.75 + 0.5 * (ground.albedo - 0.85) / 0.3  # same ground texture as optical
    power = spectra.BACKSCATTER_LINEAR[ground.material] * texture[..., None]
    power = pixel_mean(np.moveaxis(power, -1, 0), supersample)
    polarizations = [b.polarization for b in sensor.bands]
    columns = {"VV": 0, "VH": 1}
    power = power[[columns[p] for p in polarizations]]
    looks = spectra.SPECKLE_LOOKS
    speckle = rng.gamma(shape=looks, scale=1.0 / looks, size=power.shape)
    return 10.0 * np.log10(power * speckle)


def landcover(world: World, grid: Grid) -> np.ndarray:
    """Land-cover class at each pixel centre (nearest-neighbour semantics, no mixing)."""
    return observe(world, grid, 1)[2].landcover
