"""Vaihingen semantic segmentation (IR-R-G + DSM): the task, its metrics, picture and baseline."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from lightning import LightningDataModule
from matplotlib import pyplot as plt
from matplotlib.colors import ListedColormap
from torch import Tensor
from torch.nn import functional as F
from torchmetrics import MetricCollection
from torchmetrics.classification import MulticlassConfusionMatrix

from model.tasks.downstream import DownstreamTask, Scores, TaskSpec, score
from model.tasks.panels import ROWS, grid, picture

ISPRS_COLOURS = (
    (255, 0, 0),
    (255, 255, 255),
    (0, 0, 255),
    (0, 255, 255),
    (0, 255, 0),
    (255, 255, 0),
)  # clutter, impervious, building, low vegetation, tree, car


class SegmentationMetrics(MulticlassConfusionMatrix):
    """Semantic segmentation scores from one confusion matrix of the set (ISPRS Vaihingen).

    Pixels whose target is ``ignore_index`` (Vaihingen: 0, clutter/background, excluded as the
    literature does) are dropped entirely; a prediction of ``ignore_index`` on any other pixel
    stays in the matrix as an error of that pixel's class. Keys of ``compute()``:

    - ``IoU_<k>`` for every class k but ``ignore_index``: ``TP / (TP + FP + FN)``, NaN for a
      class absent from both predictions and targets of the set.
    - ``mIoU``: mean of the ``IoU_<k>`` that are not NaN.
    - ``OA``: correctly classified pixels over all non-ignored pixels.

    Args:
        num_classes: number of classes K, ``ignore_index`` included.
        ignore_index: class whose target pixels are ignored, or None to score all.

    Raises:
        ValueError: if ``num_classes`` < 2 or ``ignore_index`` is not a class.
    """

    def __init__(self, num_classes: int = 6, ignore_index: int | None = 0) -> None:
        """Initialize a new SegmentationMetrics instance (arguments as on the class)."""
        if num_classes < 2:
            raise ValueError(f"num_classes must be >= 2, got {num_classes}")
        if ignore_index is not None and not 0 <= ignore_index < num_classes:
            raise ValueError(f"ignore_index must be in [0, {num_classes}), got {ignore_index}")
        super().__init__(num_classes, ignore_index=ignore_index)
        self.scored_classes = [k for k in range(num_classes) if k != ignore_index]

    def update(self, preds: Tensor, target: Tensor) -> None:
        """Add a batch.

        Args:
            preds: (B, K, H, W) float logits or scores, or (B, H, W) integer class indices.
            target: (B, H, W) integer class indices.

        Raises:
            ValueError: if a shape or dtype does not match.
        """
        if target.ndim != 3 or target.is_floating_point():
            raise ValueError(
                f"target must be an integer tensor (B, H, W), "
                f"got {target.dtype} {tuple(target.shape)}"
            )
        if preds.is_floating_point():
            expected = (target.shape[0], self.num_classes, *target.shape[1:])
            if preds.shape != expected:
                raise ValueError(
                    f"preds (logits) must have shape {expected}, got {tuple(preds.shape)}"
                )
            preds = preds.argmax(dim=1)
        elif preds.shape != target.shape:
            raise ValueError(
                f"preds (class indices) must have shape {tuple(target.shape)}, "
                f"got {tuple(preds.shape)}"
            )
        super().update(preds, target)

    def compute(self) -> dict[str, Tensor]:  # type: ignore[override]
        """mIoU, OA and per-class IoU of the set."""
        confmat = self.confmat.double()
        true_positives = confmat.diagonal()
        union = confmat.sum(dim=0) + confmat.sum(dim=1) - true_positives
        iou = true_positives / union  # 0 / 0 -> NaN for a class seen nowhere
        scored = iou[self.scored_classes]
        result = {f"IoU_{k}": iou[k] for k in self.scored_classes}
        result["mIoU"] = scored.nanmean()
        result["OA"] = true_positives.sum() / confmat.sum()
        return result


class SegmentationTask(DownstreamTask):
    """Semantic segmentation (Vaihingen, 6 classes).

    Cross-entropy over every class; mIoU and overall accuracy over the 5 classes without
    clutter, as the literature reports.
    """

    mlm_task = "semantic-segmentation"
    prediction = "One logit per class and pixel (their argmax is the class map)."

    def output_channels(self, info: dict[str, Any]) -> int:
        """One logit per class."""
        return int(info["num_classes"])

    def configure_metrics(self, info: dict[str, Any]) -> MetricCollection:
        """:class:`SegmentationMetrics`, without the data's ``ignore_index`` class."""
        return MetricCollection(
            {
                "confusion": SegmentationMetrics(
                    int(info["num_classes"]), ignore_index=info["ignore_index"]
                )
            }
        )

    def loss(self, prediction: Tensor, batch: dict[str, Any]) -> Tensor:
        """Cross-entropy over every class."""
        return F.cross_entropy(prediction, batch["target"])

    def scored(self, prediction: Tensor, batch: dict[str, Any]) -> tuple[Tensor, Tensor]:
        """Class indices; pixels outside ``valid`` (tile overlaps) are left out."""
        return prediction.argmax(dim=1), ignore_invalid(batch, self.target_info["ignore_index"])

    def figure(self, batch: dict[str, Any], prediction: Tensor) -> plt.Figure:
        """Each input sensor, the predicted and the true class maps in the ISPRS colours."""
        return segmentation_figure(batch, prediction.argmax(dim=1), self.target_info["class_names"])


def ignore_invalid(batch: dict[str, Any], ignore_index: int) -> Tensor:
    """The target with ``ignore_index`` wherever ``batch["valid"]`` (if given) is False."""
    target = batch["target"]
    valid = batch.get("valid")
    return target if valid is None else target.masked_fill(~valid[:, 0], ignore_index)


def segmentation_figure(
    batch: dict[str, Any], prediction: Tensor, class_names: Sequence[str]
) -> plt.Figure:
    """Each input sensor, the predicted and the true class maps in the ISPRS colours."""
    sensors = list(batch["inputs"])
    rows = min(ROWS, len(prediction))
    figure, axes = grid(rows, [*sensors, "predicted", "truth"])
    colours = ListedColormap(np.array(ISPRS_COLOURS[: len(class_names)]) / 255)
    style = {"cmap": colours, "vmin": 0, "vmax": len(class_names) - 1, "interpolation": "none"}
    for row in range(rows):
        for column, sensor in enumerate(sensors):
            axes[row, column].imshow(picture(batch["inputs"][sensor][row], sensor))
        axes[row, -2].imshow(prediction[row].cpu().numpy(), **style)
        axes[row, -1].imshow(batch["target"][row].cpu().numpy(), **style)
    figure.tight_layout()
    return figure


def majority_class(train_masks: Tensor | Sequence[Tensor], ignore_index: int | None = 0) -> int:
    """The most frequent class of the training masks, ``ignore_index`` left out.

    The segmentation baseline predicts it on every pixel. Ties go to the smallest class index.

    Args:
        train_masks: (N, H, W) integer class indices, or a sequence of (H, W) or (N, H, W)
            masks of different sizes (e.g. Vaihingen tiles).
        ignore_index: class never returned (Vaihingen: 0, clutter/background), or None.

    Returns:
        The class index.

    Raises:
        ValueError: if a mask is not an integer (H, W) / (N, H, W) tensor of non-negative
            indices, or no pixel has a class other than ``ignore_index``.
    """
    masks = [train_masks] if isinstance(train_masks, Tensor) else list(train_masks)
    counts = torch.zeros(0, dtype=torch.long)
    for i, mask in enumerate(masks):
        if mask.ndim not in (2, 3) or mask.is_floating_point() or mask.dtype == torch.bool:
            raise ValueError(
                f"train_masks[{i}] must be an integer (H, W) or (N, H, W) tensor, "
                f"got {mask.dtype} {tuple(mask.shape)}"
            )
        if mask.numel() and int(mask.min()) < 0:
            raise ValueError(f"train_masks[{i}] holds negative class indices")
        mask_counts = torch.bincount(mask.flatten().long().cpu(), minlength=len(counts))
        mask_counts[: len(counts)] += counts
        counts = mask_counts
    if ignore_index is not None and ignore_index < len(counts):
        counts[ignore_index] = 0
    if not bool((counts > 0).any()):
        raise ValueError(f"train_masks hold no pixel of a class other than {ignore_index}")
    return int(counts.argmax())


def segmentation_baselines(data: LightningDataModule) -> Scores:
    """Majority: the most frequent (non-clutter) training class everywhere."""
    info = data.target_info
    masks = [b["target"] for b in data.train_dataloader()]
    label = majority_class(masks, ignore_index=info["ignore_index"])
    pairs = (
        (torch.full_like(b["target"], label), ignore_invalid(b, info["ignore_index"]))
        for b in data.test_dataloader()
    )
    return {
        "majority": score(
            SegmentationMetrics(info["num_classes"], ignore_index=info["ignore_index"]), pairs
        )
    }


SPEC = TaskSpec(
    name="segmentation",
    task_class=SegmentationTask,
    title="Vaihingen (IR-R-G+DSM)",
    columns=(("mIoU", True), ("OA", True)),
    main_metric="mIoU",
    baselines=segmentation_baselines,
    paper="mIoU 75.8",
)
