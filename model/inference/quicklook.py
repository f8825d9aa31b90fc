"""A PNG quicklook of a prediction COG, read from its overviews.

A class map is drawn in its colour table; an image in the composite its sensor's pictures use
(:func:`model.datasets.display.composite`: true colour, SAR false colour); class probabilities as
the most probable class. Pixels without data are transparent.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import rasterio
from matplotlib import colormaps
from PIL import Image

from catalogs.atomic_files import atomic_path
from catalogs.sensors import get_sensor
from model.datasets.display import composite

QUICKLOOK_PX = 1024  # longest side of the quicklook


def write_quicklook(cog: Path | str, png: Path | str, max_px: int = QUICKLOOK_PX) -> Path:
    """Draw ``cog`` at most ``max_px`` a side into ``png`` (RGBA).

    Args:
        cog: a COG written by :func:`model.inference.scene_prediction.predict_scene`.
        png: the picture to write (replaced atomically).
        max_px: longest side of the picture.

    Returns:
        ``png``.
    """
    with rasterio.open(cog) as src:
        factor = max(1, math.ceil(max(src.height, src.width) / max_px))
        shape = (max(1, src.height // factor), max(1, src.width // factor))
        data = src.read(out_shape=(src.count, *shape), resampling=rasterio.enums.Resampling.nearest)
        valid = src.dataset_mask(out_shape=shape) > 0
        sensor = src.tags().get("sensor")
        colormap = src.colormap(1) if src.count == 1 and _has_colormap(src) else None
        scales, offsets = src.scales, src.offsets
    if colormap is not None:
        lookup = np.zeros((256, 4), dtype=np.uint8)
        for value, colour in colormap.items():
            lookup[value] = colour
        rgb = lookup[data[0]][..., :3]
    elif sensor is not None:
        physical = data.astype(np.float32) * np.asarray(scales, np.float32)[:, None, None]
        physical += np.asarray(offsets, np.float32)[:, None, None]
        physical[:, ~valid] = np.nan
        spec = get_sensor(sensor)
        rgb = (composite(physical, sensor, spec.kind, spec.band_names) * 255).astype(np.uint8)
    else:  # class probabilities: the most probable class
        colours = colormaps["tab20"](np.arange(data.shape[0]) % 20)[:, :3]
        rgb = (colours[data.argmax(axis=0)] * 255).astype(np.uint8)
    rgba = np.dstack([rgb, np.where(valid, 255, 0).astype(np.uint8)])
    with atomic_path(png) as path:
        Image.fromarray(rgba, "RGBA").save(path, format="PNG")
    return Path(png)


def _has_colormap(src: rasterio.DatasetReader) -> bool:
    try:
        src.colormap(1)
    except ValueError:
        return False
    return True
