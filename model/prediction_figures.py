"""Pictures of fine-tuned predictions on test samples, one layout per downstream task: a row per
sample, its inputs, the prediction and the truth side by side."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from matplotlib import pyplot as plt
from matplotlib.colors import ListedColormap
from torch import Tensor

from catalogs.sensors import get_sensor
from model.datasets.display import composite, rgb_band_indices

ROWS = 3  # samples per picture
ISPRS_COLOURS = ((255, 0, 0), (255, 255, 255), (0, 0, 255), (0, 255, 255), (0, 255, 0),
                 (255, 255, 0))  # clutter, impervious, building, low vegetation, tree, car


def _grid(rows: int, titles: Sequence[str]) -> tuple[plt.Figure, np.ndarray]:
    figure, axes = plt.subplots(rows, len(titles), figsize=(3 * len(titles), 3 * rows),
                                squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    for ax, title in zip(axes[0], titles, strict=True):
        ax.set_title(title)
    return figure, axes


def _picture(image: Tensor, sensor: str) -> np.ndarray:
    """A (H, W, 3) picture of one image (C, H, W) in the sensor's model unit."""
    spec = get_sensor(sensor)
    return composite(image.detach().float().cpu().numpy(), sensor, spec.kind, spec.band_names)


def _true_colour(images: Sequence[Tensor], sensor: str) -> list[np.ndarray]:
    """True-colour pictures of several images of one sensor on one shared brightness scale
    (the last image's 2nd-98th percentiles), so cloudy, predicted and clear compare."""
    bands = rgb_band_indices(sensor, get_sensor(sensor).band_names)
    arrays = [np.moveaxis(image.detach().float().cpu().numpy()[bands], 0, -1) for image in images]
    low, high = np.nanpercentile(arrays[-1], (2, 98), axis=(0, 1))
    return [np.clip((a - low) / np.maximum(high - low, 1e-6), 0, 1) for a in arrays]


def classification_figure(batch: dict[str, Any], scores: Tensor,
                          class_names: Sequence[str]) -> plt.Figure:
    """Each sample's input(s) with its true labels and the labels scored above 0.5."""
    sensors = list(batch["inputs"])
    rows = min(ROWS, len(scores))
    figure, axes = _grid(rows, [*sensors, "labels"])
    for row in range(rows):
        for column, sensor in enumerate(sensors):
            axes[row, column].imshow(_picture(batch["inputs"][sensor][row], sensor))
        truth = {class_names[k] for k in batch["target"][row].nonzero().ravel().tolist()}
        predicted = {class_names[k] for k in (scores[row] > 0.5).nonzero().ravel().tolist()}
        lines = [("✓ " if name in truth else "✗ ") + name for name in sorted(predicted)]
        lines += ["missed: " + name for name in sorted(truth - predicted)]
        axes[row, -1].text(0, 1, "\n".join(lines) or "(none)", va="top", fontsize=7,
                           family="monospace")
    figure.tight_layout()
    return figure


def cloud_removal_figure(batch: dict[str, Any], prediction: Tensor,
                         sensor: str) -> plt.Figure:
    """Cloudy input, Sentinel-1, prediction and the clear target."""
    rows = min(ROWS, len(prediction))
    figure, axes = _grid(rows, ["cloudy input", "sentinel-1", "predicted", "clear target"])
    for row in range(rows):
        cloudy, predicted, clear = _true_colour(
            [batch["inputs"][sensor][row], prediction[row], batch["target"][row]], sensor)
        axes[row, 0].imshow(cloudy)
        axes[row, 1].imshow(_picture(batch["inputs"]["sentinel1_grd"][row], "sentinel1_grd"))
        axes[row, 2].imshow(predicted)
        axes[row, 3].imshow(clear)
    figure.tight_layout()
    return figure


def pansharpening_figure(batch: dict[str, Any], prediction: Tensor,
                         sensor: str) -> plt.Figure:
    """Upsampled low-resolution MS, PAN, prediction and the full-resolution MS target."""
    rows = min(ROWS, len(prediction))
    figure, axes = _grid(rows, ["MS upsampled (input)", "PAN (input)", "predicted", "target"])
    pan = next(s for s in batch["inputs"] if s != sensor)
    for row in range(rows):
        upsampled, predicted, target = _true_colour(
            [batch["inputs"][sensor][row], prediction[row], batch["target"][row]], sensor)
        axes[row, 0].imshow(upsampled)
        axes[row, 1].imshow(_picture(batch["inputs"][pan][row], pan))
        axes[row, 2].imshow(predicted)
        axes[row, 3].imshow(target)
    figure.tight_layout()
    return figure


def segmentation_figure(batch: dict[str, Any], prediction: Tensor,
                        class_names: Sequence[str]) -> plt.Figure:
    """Each input sensor, the predicted and the true class maps in the ISPRS colours."""
    sensors = list(batch["inputs"])
    rows = min(ROWS, len(prediction))
    figure, axes = _grid(rows, [*sensors, "predicted", "truth"])
    colours = ListedColormap(np.array(ISPRS_COLOURS[: len(class_names)]) / 255)
    style = {"cmap": colours, "vmin": 0, "vmax": len(class_names) - 1, "interpolation": "none"}
    for row in range(rows):
        for column, sensor in enumerate(sensors):
            axes[row, column].imshow(_picture(batch["inputs"][sensor][row], sensor))
        axes[row, -2].imshow(prediction[row].cpu().numpy(), **style)
        axes[row, -1].imshow(batch["target"][row].cpu().numpy(), **style)
    figure.tight_layout()
    return figure
