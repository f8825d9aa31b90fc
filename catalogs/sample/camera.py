"""From physical values to the numbers a product stores: sensor noise and quantisation."""

from __future__ import annotations

import numpy as np

from catalogs.sensors import Sensor


def to_scaled_integers(
    physical: np.ndarray, sensor: Sensor, noise: float, rng: np.random.Generator
) -> np.ndarray:
    """Physical values plus Gaussian ``noise`` stored with the registry's scale/offset and dtype.

    Valid pixels never take the nodata value (they are clipped to the next valid one).
    """
    noisy = physical + rng.normal(0.0, noise, size=physical.shape)
    stored = np.rint((noisy - sensor.offset) / sensor.scale)
    info = np.iinfo(np.dtype(sensor.dtype))
    low = info.min + 1 if sensor.nodata == info.min else info.min
    return np.clip(stored, low, info.max).astype(sensor.dtype)


def to_display_8bit(
    reflectance: np.ndarray, rng: np.random.Generator, white: float = 0.45, noise: float = 1.0
) -> np.ndarray:
    """An 8-bit camera: gamma-encoded (1/2.2) reflectance with ``white`` mapped to 255."""
    encoded = 255.0 * np.clip(reflectance / white, 0.0, 1.0) ** (1.0 / 2.2)
    return np.clip(np.rint(encoded + rng.normal(0.0, noise, reflectance.shape)), 0, 255).astype(
        np.uint8
    )


def to_linear_counts(
    reflectance: np.ndarray,
    rng: np.random.Generator,
    full_scale: float = 0.8,
    bits: int = 11,
    noise: float = 2.0,
) -> np.ndarray:
    """A linear ``bits``-bit sensor (as WorldView-3 delivers).

    Counts = reflectance * gain, at least 1 so that 0 stays nodata.
    """
    top = 2**bits - 1
    counts = reflectance * (top / full_scale) + rng.normal(0.0, noise, reflectance.shape)
    return np.clip(np.rint(counts), 1, top).astype(np.uint16)


def quantize_db(db: np.ndarray) -> np.ndarray:
    """float32 dB rounded to 1/64 dB.

    Far below speckle, and the zeroed low mantissa bits make the GeoTIFF compress about twice as
    well.
    """
    return (np.rint(db * 64.0) / 64.0).astype(np.float32)
