"""Pictures of masked reconstruction, laid out like Figure 3 of the msGFM paper: input, masked
input, reconstruction and target, for each sensor and each cross-sensor pair."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import matplotlib
import numpy as np
from matplotlib import pyplot as plt

from catalogs.atomic_files import save_figure
from catalogs.store_format import SensorManifest
from model.datasets.display import composite
from model.nn.msgfm import Reconstruction

COLUMNS = ("input", "masked input", "reconstruction", "target")
ROWS = 2  # examples per picture
MASK_GREY = 0.5


def save_reconstruction_figures(groups: Sequence[Reconstruction],
                                sensors: Mapping[str, SensorManifest], folder: Path,
                                step: int) -> list[Path]:
    """One PNG per (encoded sensor, decoded sensor) group:
    ``folder/step<step>_<source>_to_<target>.png``; returns their paths."""
    matplotlib.use("Agg")
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for group in groups:
        path = folder / f"step{step:07d}_{group.source}_to_{group.target_sensor}.png"
        save_figure(reconstruction_figure(group, sensors), path)
        paths.append(path)
    return paths


def reconstruction_figure(group: Reconstruction,
                          sensors: Mapping[str, SensorManifest]) -> plt.Figure:
    """The four columns of :data:`COLUMNS` for the first :data:`ROWS` chips of ``group``."""
    rows = min(ROWS, len(group.rows))
    figure, axes = plt.subplots(rows, len(COLUMNS), figsize=(3 * len(COLUMNS), 3 * rows),
                                squeeze=False)
    source, target = sensors[group.source], sensors[group.target_sensor]
    patch = group.image.shape[-1] // group.mask.shape[-1]
    for row in range(rows):
        mask = np.kron(group.mask[row].cpu().numpy(), np.ones((patch, patch))).astype(bool)
        picture = _picture(group.image[row], source)
        masked = np.where(mask[..., None], MASK_GREY, picture)
        panels = (picture, masked, _picture(group.prediction[row], target),
                  _picture(group.target[row], target))
        for column, (ax, panel) in enumerate(zip(axes[row], panels, strict=True)):
            ax.imshow(panel)
            ax.axis("off")
            if row == 0:
                sensor = source if column < 2 else target
                ax.set_title(f"{COLUMNS[column]}\n{sensor.name}")
    figure.suptitle(f"{group.source} -> {group.target_sensor}")
    figure.tight_layout()
    return figure


def _picture(image: object, sensor: SensorManifest) -> np.ndarray:
    values = np.asarray(image.detach().float().cpu(), dtype=np.float32)
    return composite(values, sensor.name, sensor.kind, sensor.band_names)
