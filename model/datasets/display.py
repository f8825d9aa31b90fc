"""Chips as pictures: an RGB composite per sensor kind, for plots and the pretraining figures."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from matplotlib import pyplot as plt
from matplotlib.colors import LightSource
from matplotlib.figure import Figure
from matplotlib.image import AxesImage

from catalogs.sensors import RegistryError, get_sensor

RGB_COMMON_NAMES = ("red", "green", "blue")
SAR_FALSE_COLOUR = ("VV", "VH")  # red = VV, green = VH, blue = VV - VH (the ratio in dB)
STRETCH_PERCENTILES = (2.0, 98.0)


def stretch(values: np.ndarray, reference: np.ndarray | None = None) -> np.ndarray:
    """Each band (last axis) scaled to [0, 1] between its 2nd and 98th percentiles.

    Non-finite values (nodata) become 0.

    Args:
        values: (..., bands) values.
        reference: values of the same bands whose percentiles to use instead (default:
            ``values``' own), so that two pictures drawn with one reference compare.

    Returns:
        The scaled values, float32.
    """
    reference = values if reference is None else reference
    out = np.zeros(values.shape, dtype=np.float32)
    for band in range(values.shape[-1]):
        channel, limits_from = values[..., band], reference[..., band]
        finite = np.isfinite(channel)
        if not np.isfinite(limits_from).any():
            continue
        low, high = np.percentile(limits_from[np.isfinite(limits_from)], STRETCH_PERCENTILES)
        scaled = (channel - low) / (high - low) if high > low else channel * 0.0
        out[..., band] = np.where(finite, np.clip(scaled, 0.0, 1.0), 0.0)
    return out


def rgb_band_indices(sensor: str, band_names: Sequence[str]) -> list[int]:
    """Indices of the red, green and blue bands of an optical sensor.

    Found by the registry's common names; else its first three bands (first band thrice for one
    band).
    """
    try:
        common = {band.name: band.common_name for band in get_sensor(sensor).bands}
    except (KeyError, RegistryError):
        common = {}
    by_common = {common.get(name): i for i, name in enumerate(band_names)}
    if all(name in by_common for name in RGB_COMMON_NAMES):
        return [by_common[name] for name in RGB_COMMON_NAMES]
    return [min(i, len(band_names) - 1) for i in range(3)] if len(band_names) >= 3 else [0] * 3


def composite(
    image: np.ndarray,
    sensor: str,
    kind: str,
    band_names: Sequence[str],
    reference: np.ndarray | None = None,
) -> np.ndarray:
    """A (H, W, 3) picture in [0, 1] of one chip (C, H, W) in the model's unit.

    Optical: true colour. SAR: VV, VH and VV - VH (dB) as red, green and blue. Elevation: a
    hillshade tinted by height. Anything else: the first band in grey.

    Args:
        image: the chip.
        sensor: its sensor.
        kind: the sensor's kind (``optical``, ``sar``, ``elevation``, ...).
        band_names: the chip's bands.
        reference: a chip of the same bands whose stretch (2-98 % limits, the height tint's
            range) to draw ``image`` with (default: its own), e.g. a prediction drawn as its
            target is.

    Returns:
        The picture.
    """
    reference = image if reference is None else reference
    if kind == "optical":
        bands = rgb_band_indices(sensor, band_names)
        return stretch(np.moveaxis(image[bands], 0, -1), np.moveaxis(reference[bands], 0, -1))
    if kind == "sar" and all(p in band_names for p in SAR_FALSE_COLOUR):
        return stretch(
            _sar_false_colour(image, band_names), _sar_false_colour(reference, band_names)
        )
    if kind == "elevation":
        return hillshade(image[0], reference[0])
    return np.repeat(stretch(image[0][..., None], reference[0][..., None]), 3, axis=-1)


def _sar_false_colour(image: np.ndarray, band_names: Sequence[str]) -> np.ndarray:
    vv, vh = (image[list(band_names).index(p)] for p in SAR_FALSE_COLOUR)
    return np.stack([vv, vh, vv - vh], axis=-1)


def panel_figure(
    panels: Sequence[tuple[str, np.ndarray, Mapping[str, Any]]],
    show_titles: bool = True,
    suptitle: str | None = None,
) -> tuple[Figure, list[AxesImage]]:
    """One row of pictures, 4 inches each, as the datasets' ``plot`` draws them.

    Args:
        panels: per panel, its title, the picture and ``imshow`` keywords (cmap, vmin, ...).
        show_titles: title each panel.
        suptitle: title of the figure.

    Returns:
        The figure and each panel's image (for colour bars).
    """
    figure, axes = plt.subplots(ncols=len(panels), figsize=(4 * len(panels), 4), squeeze=False)
    images = []
    for ax, (title, picture, style) in zip(axes[0], panels, strict=True):
        images.append(ax.imshow(picture, **style))
        ax.axis("off")
        if show_titles:
            ax.set_title(title)
    if suptitle is not None:
        figure.suptitle(suptitle)
    return figure, images


def hillshade(elevation: np.ndarray, reference: np.ndarray | None = None) -> np.ndarray:
    """A (H, W, 3) hillshade of a height field in metres, tinted by height (terrain colours).

    Nodata (non-finite) shows black. The tint spans the 2-98 % heights of ``reference``
    (default: ``elevation`` itself).
    """
    from matplotlib import colormaps

    finite = np.isfinite(elevation)
    filled = np.where(finite, elevation, np.nanmedian(elevation) if finite.any() else 0.0)
    limits_from = None if reference is None else reference[..., None]
    tint = colormaps["terrain"](stretch(filled[..., None], limits_from)[..., 0])[..., :3]
    shaded = LightSource(azdeg=315, altdeg=45).shade_rgb(tint, filled, blend_mode="soft")
    return np.where(finite[..., None], shaded, 0.0).astype(np.float32)
