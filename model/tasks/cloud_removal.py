"""SEN12MS-CR cloud removal (cloudy Sentinel-2 + Sentinel-1 -> clear Sentinel-2).

The task, its picture and baseline; the metrics are
:class:`~model.tasks.restoration.RestorationMetrics`.
"""

from __future__ import annotations

from typing import Any

from lightning import LightningDataModule
from matplotlib import pyplot as plt
from torch import Tensor

from model.tasks.downstream import Scores, TaskSpec, score
from model.tasks.panels import restoration_figure
from model.tasks.restoration import MAIN_METRIC, RestorationMetrics, RestorationTask

RADAR = "sentinel1_grd"


class CloudRemovalTask(RestorationTask):
    """SEN12MS-CR: cloudy Sentinel-2 + Sentinel-1 in, the clear Sentinel-2 out (reflectance).

    MAE, RMSE, PSNR, SAM (degrees) and SSIM over the whole evaluation set.
    """

    mlm_task = "generative"

    def figure(self, batch: dict[str, Any], prediction: Tensor) -> plt.Figure:
        """Cloudy input, Sentinel-1, prediction and the clear target."""
        return cloud_removal_figure(batch, prediction, self.target_info["sensor"])


def cloud_removal_figure(batch: dict[str, Any], prediction: Tensor, sensor: str) -> plt.Figure:
    """Cloudy input, Sentinel-1, prediction and the clear target."""
    return restoration_figure(
        batch,
        prediction,
        sensor,
        RADAR,
        ["cloudy input", "sentinel-1", "predicted", "clear target"],
    )


def cloudy_input(cloudy: Tensor) -> Tensor:
    """The cloud-removal baseline: the cloudy image itself, unchanged.

    Args:
        cloudy: (B, C, H, W) cloudy optical image, in the units of the target.

    Returns:
        ``cloudy`` (the same tensor).

    Raises:
        ValueError: if ``cloudy`` is not (B, C, H, W).
    """
    if cloudy.ndim != 4:
        raise ValueError(f"cloudy must have shape (B, C, H, W), got {tuple(cloudy.shape)}")
    return cloudy


def cloud_removal_baselines(data: LightningDataModule) -> Scores:
    """Cloudy input: the cloudy Sentinel-2 itself as the prediction."""
    info = data.target_info
    pairs = (
        (cloudy_input(b["inputs"][info["sensor"]]), b["target"]) for b in data.test_dataloader()
    )
    return {"cloudy_input": score(RestorationMetrics(info["data_range"]), pairs)}


SPEC = TaskSpec(
    name="cloud_removal",
    task_class=CloudRemovalTask,
    title="SEN12MS-CR",
    columns=(("MAE", False), ("RMSE", False), ("PSNR", True), ("SAM", False), ("SSIM", True)),
    main_metric=MAIN_METRIC,
    baselines=cloud_removal_baselines,
    paper="MAE 0.026",
)
