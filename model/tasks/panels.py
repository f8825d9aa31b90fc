"""Drawing helpers shared by the downstream tasks' prediction pictures.

A row per test sample: its inputs, the prediction and the truth side by side.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from matplotlib import pyplot as plt
from torch import Tensor

from catalogs.sensors import get_sensor
from model.datasets.display import composite, rgb_band_indices

ROWS = 3  # samples per picture


def grid(rows: int, titles: Sequence[str]) -> tuple[plt.Figure, np.ndarray]:
    """A figure of ``rows`` x ``len(titles)`` axes without ticks, the columns titled."""
    figure, axes = plt.subplots(
        rows, len(titles), figsize=(3 * len(titles), 3 * rows), squeeze=False
    )
    for ax in axes.ravel():
        ax.axis("off")
    for ax, title in zip(axes[0], titles, strict=True):
        ax.set_title(title)
    return figure, axes


def picture(image: Tensor, sensor: str) -> np.ndarray:
    """A (H, W, 3) picture of one image (C, H, W) in the sensor's model unit."""
    spec = get_sensor(sensor)
    return composite(image.detach().float().cpu().numpy(), sensor, spec.kind, spec.band_names)


def true_colour(images: Sequence[Tensor], sensor: str) -> list[np.ndarray]:
    """True-colour pictures of several images of one sensor on one shared brightness scale.

    The scale is the last image's 2nd-98th percentiles, so cloudy, predicted and clear compare.
    """
    bands = rgb_band_indices(sensor, get_sensor(sensor).band_names)
    arrays = [np.moveaxis(image.detach().float().cpu().numpy()[bands], 0, -1) for image in images]
    low, high = np.nanpercentile(arrays[-1], (2, 98), axis=(0, 1))
    return [np.clip((a - low) / np.maximum(high - low, 1e-6), 0, 1) for a in arrays]


def restoration_figure(
    batch: dict, prediction: Tensor, sensor: str, other: str, titles: Sequence[str]
) -> plt.Figure:
    """Per sample: the input of the target's sensor, the ``other`` input, prediction, target.

    The three images of ``sensor`` are on one brightness scale.
    """
    rows = min(ROWS, len(prediction))
    figure, axes = grid(rows, titles)
    for row in range(rows):
        given, predicted, target = true_colour(
            [batch["inputs"][sensor][row], prediction[row], batch["target"][row]], sensor
        )
        axes[row, 0].imshow(given)
        axes[row, 1].imshow(picture(batch["inputs"][other][row], other))
        axes[row, 2].imshow(predicted)
        axes[row, 3].imshow(target)
    figure.tight_layout()
    return figure
