"""BigEarthNet multi-label scene classification: the task, its metrics, picture and baseline."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from lightning import LightningDataModule
from matplotlib import pyplot as plt
from torch import Tensor
from torch.nn import functional as F
from torchmetrics import MetricCollection
from torchmetrics.classification import MultilabelAveragePrecision

from model.tasks.downstream import DownstreamTask, Scores, TaskSpec, score
from model.tasks.panels import ROWS, grid, picture


class ClassificationMetrics(MetricCollection):
    """Multi-label mean average precision (BigEarthNet-19).

    Keys of ``compute()``: ``mAP_micro`` (AP of all (sample, class) pairs ranked together) and
    ``mAP_macro`` (mean over classes of the per-class AP), both from torchmetrics'
    ``MultilabelAveragePrecision`` with exact thresholds (scores of the whole set are stored and
    ranked once at ``compute``), as ``sklearn.metrics.average_precision_score`` defines AP.

    AP depends on the ranking of the scores only. torchmetrics decides per batch whether scores
    are logits (any value outside [0, 1]) and applies a sigmoid then, which would rank batches on
    different scales; this class fixes the scale once instead: with ``from_logits=True`` every
    batch goes through a sigmoid in float64 (distinct up to logits of about 36, where float32
    probabilities would already tie at about 17), with ``from_logits=False`` scores must lie in
    [0, 1] and are used as they are.

    Args:
        num_classes: number of labels K.
        from_logits: whether scores are logits (True) or probabilities (False).

    Raises:
        ValueError: if ``num_classes`` < 2.
    """

    def __init__(self, num_classes: int, *, from_logits: bool = True) -> None:
        """Initialize a new ClassificationMetrics instance (arguments as on the class)."""
        if num_classes < 2:
            raise ValueError(f"num_classes must be >= 2, got {num_classes}")
        super().__init__(
            {
                f"mAP_{average}": MultilabelAveragePrecision(num_classes, average=average)
                for average in ("micro", "macro")
            }
        )
        self.num_classes = num_classes
        self.from_logits = from_logits

    def update(self, scores: Tensor, targets: Tensor) -> None:  # type: ignore[override]
        """Add a batch.

        Args:
            scores: (B, K) float logits or probabilities (see ``from_logits``).
            targets: (B, K) integer labels in {0, 1}.

        Raises:
            ValueError: if a shape, dtype or value range does not match.
        """
        super().update(*self._prepare(scores, targets))

    def forward(self, scores: Tensor, targets: Tensor) -> dict[str, Any]:  # type: ignore[override]
        """Add a batch and return the metrics of that batch alone."""
        return super().forward(*self._prepare(scores, targets))

    def _prepare(self, scores: Tensor, targets: Tensor) -> tuple[Tensor, Tensor]:
        shape = f"(B, {self.num_classes})"
        if scores.ndim != 2 or scores.shape[1] != self.num_classes:
            raise ValueError(f"scores must have shape {shape}, got {tuple(scores.shape)}")
        if targets.shape != scores.shape:
            raise ValueError(
                f"targets must have shape {tuple(scores.shape)} as scores, "
                f"got {tuple(targets.shape)}"
            )
        if not scores.is_floating_point():
            raise ValueError(f"scores must be a float tensor, got {scores.dtype}")
        if targets.is_floating_point() or not bool(((targets == 0) | (targets == 1)).all()):
            raise ValueError("targets must be an integer tensor of 0 and 1")
        if self.from_logits:
            return torch.sigmoid(scores.double()), targets.long()
        if not bool(((scores >= 0) & (scores <= 1)).all()):
            raise ValueError("scores must lie in [0, 1] with from_logits=False")
        return scores, targets.long()


class ClassificationTask(DownstreamTask):
    """Multi-label scene classification (BigEarthNet, 19 classes).

    BCE on logits; mAP micro (the literature's figure) and macro over the whole evaluation set.
    """

    head_kind = "classification"
    mlm_task = "scene-classification"
    prediction = "One logit per class (multi-label: its sigmoid is the class's probability)."

    def output_channels(self, info: dict[str, Any]) -> int:
        """One logit per class."""
        return int(info["num_classes"])

    def configure_metrics(self, info: dict[str, Any]) -> MetricCollection:
        """Mean average precision (mAP), micro and macro, over the classes."""
        return ClassificationMetrics(int(info["num_classes"]))

    def loss(self, prediction: Tensor, batch: dict[str, Any]) -> Tensor:
        """Binary cross-entropy on the logits."""
        return F.binary_cross_entropy_with_logits(prediction, batch["target"].float())

    def scored(self, prediction: Tensor, batch: dict[str, Any]) -> tuple[Tensor, Tensor]:
        """The logits and the integer labels (the metric applies the sigmoid)."""
        return prediction, batch["target"].long()  # logits: the metric applies the sigmoid

    def figure(self, batch: dict[str, Any], prediction: Tensor) -> plt.Figure:
        """Each sample's input(s) with its true labels and the labels scored above 0.5."""
        return classification_figure(batch, prediction.sigmoid(), self.target_info["class_names"])


def classification_figure(
    batch: dict[str, Any], scores: Tensor, class_names: Sequence[str]
) -> plt.Figure:
    """Each sample's input(s) with its true labels and the labels scored above 0.5."""
    sensors = list(batch["inputs"])
    rows = min(ROWS, len(scores))
    figure, axes = grid(rows, [*sensors, "labels"])
    for row in range(rows):
        for column, sensor in enumerate(sensors):
            axes[row, column].imshow(picture(batch["inputs"][sensor][row], sensor))
        truth = {class_names[k] for k in batch["target"][row].nonzero().ravel().tolist()}
        predicted = {class_names[k] for k in (scores[row] > 0.5).nonzero().ravel().tolist()}
        lines = [("✓ " if name in truth else "✗ ") + name for name in sorted(predicted)]
        lines += ["missed: " + name for name in sorted(truth - predicted)]
        axes[row, -1].text(
            0, 1, "\n".join(lines) or "(none)", va="top", fontsize=7, family="monospace"
        )
    figure.tight_layout()
    return figure


def majority_scores(train_targets: Tensor) -> Tensor:
    """The multi-label prior: how often each class is present in the training set.

    Used as the same score vector for every evaluation sample, it ranks classes by training
    frequency and carries no information about the sample: the per-class AP it reaches is the
    class prevalence of the evaluation set, the chance level of ``mAP_macro``.

    Args:
        train_targets: (N, K) labels in {0, 1} of the training set, N >= 1.

    Returns:
        (K,) float32 label frequencies in [0, 1].

    Raises:
        ValueError: if ``train_targets`` is not (N, K) of 0 and 1.
    """
    if train_targets.ndim != 2 or train_targets.shape[0] == 0:
        raise ValueError(
            f"train_targets must have shape (N, K) with N >= 1, got {tuple(train_targets.shape)}"
        )
    if not bool(((train_targets == 0) | (train_targets == 1)).all()):
        raise ValueError("train_targets must hold only 0 and 1")
    return train_targets.float().mean(dim=0)


def classification_baselines(data: LightningDataModule) -> Scores:
    """Majority: every test sample gets the training set's label frequencies as scores."""
    prior = majority_scores(torch.cat([b["target"] for b in data.train_dataloader()]))
    info = data.target_info
    pairs = ((prior.expand_as(b["target"]), b["target"].long()) for b in data.test_dataloader())
    metric = ClassificationMetrics(info["num_classes"], from_logits=False)
    return {"majority": score(metric, pairs)}


SPEC = TaskSpec(
    name="classification",
    task_class=ClassificationTask,
    title="BigEarthNet (S1+S2)",
    columns=(("mAP_micro", True), ("mAP_macro", True)),
    main_metric="mAP_micro",
    baselines=classification_baselines,
    paper="mAP 92.9 (100% of the training set), 87.5 (10%)",
)
