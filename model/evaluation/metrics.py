"""Metrics of the four downstream benchmarks, accumulated over a whole evaluation set.

Each class is a torchmetrics object: call ``update`` once per batch and ``compute`` once at the
end; every score is computed from the state of the whole set (global sums, per-image scores or
stored rankings), never as a mean of per-batch values. ``compute`` returns a flat mapping of
name -> scalar tensor.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor
from torchmetrics import MeanAbsoluteError, MeanSquaredError, Metric, MetricCollection
from torchmetrics.classification import MulticlassConfusionMatrix, MultilabelAveragePrecision
from torchmetrics.functional.image import error_relative_global_dimensionless_synthesis
from torchmetrics.image import (
    PeakSignalNoiseRatio,
    StructuralSimilarityIndexMeasure,
)

__all__ = ["ClassificationMetrics", "RestorationMetrics", "SegmentationMetrics"]


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
        if num_classes < 2:
            raise ValueError(f"num_classes must be >= 2, got {num_classes}")
        super().__init__({
            f"mAP_{average}": MultilabelAveragePrecision(num_classes, average=average)
            for average in ("micro", "macro")
        })
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
            raise ValueError(f"targets must have shape {tuple(scores.shape)} as scores, "
                             f"got {tuple(targets.shape)}")
        if not scores.is_floating_point():
            raise ValueError(f"scores must be a float tensor, got {scores.dtype}")
        if targets.is_floating_point() or not bool(((targets == 0) | (targets == 1)).all()):
            raise ValueError("targets must be an integer tensor of 0 and 1")
        if self.from_logits:
            return torch.sigmoid(scores.double()), targets.long()
        if not bool(((scores >= 0) & (scores <= 1)).all()):
            raise ValueError("scores must lie in [0, 1] with from_logits=False")
        return scores, targets.long()


class _MeanSpectralAngle(Metric):
    """Mean spectral angle over all pixels of all images, in degrees, with bounded memory.

    The angle of a pixel is ``arccos(<p, t> / (|p| |t|))``, as torchmetrics'
    ``SpectralAngleMapper`` computes it; that class keeps every image until ``compute`` (tens
    of GB for SEN12MS-CR's test set) and gives NaN for an all-zero spectrum. Here a running sum
    is kept, and a pixel whose spectrum is all zero in either image scores 90 degrees (no
    direction in common), so one dark predicted pixel cannot turn the set's SAM into NaN.
    """

    full_state_update = False

    def __init__(self) -> None:
        super().__init__()
        self.add_state("sum_degrees", torch.tensor(0.0, dtype=torch.float64),
                       dist_reduce_fx="sum")
        self.add_state("num_pixels", torch.tensor(0), dist_reduce_fx="sum")

    def update(self, preds: Tensor, target: Tensor) -> None:
        """Add the angles of every pixel of a (B, C, H, W) batch."""
        preds, target = preds.double(), target.double()
        dot = (preds * target).sum(dim=1)
        norms = preds.norm(dim=1) * target.norm(dim=1)
        cosine = torch.where(norms > 0, dot / norms.clamp(min=torch.finfo(norms.dtype).tiny),
                             torch.zeros_like(dot))
        self.sum_degrees += torch.rad2deg(torch.arccos(cosine.clamp(-1.0, 1.0))).sum()
        self.num_pixels += dot.numel()

    def compute(self) -> Tensor:
        """Mean angle in degrees."""
        return self.sum_degrees / self.num_pixels


class _MeanERGAS(Metric):
    """ERGAS per image (torchmetrics' formula), averaged over images with bounded memory.

    torchmetrics' ``ErrorRelativeGlobalDimensionlessSynthesis`` stores every image until
    ``compute``; its score is the mean of per-image ERGAS, so a running sum gives the same value.
    """

    full_state_update = False

    def __init__(self, ratio: float) -> None:
        super().__init__()
        self.ratio = ratio
        self.add_state("sum_ergas", torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("num_images", torch.tensor(0), dist_reduce_fx="sum")

    def update(self, preds: Tensor, target: Tensor) -> None:
        """Add the per-image ERGAS of a batch."""
        self.sum_ergas += error_relative_global_dimensionless_synthesis(
            preds, target, ratio=self.ratio, reduction="sum")
        self.num_images += preds.shape[0]

    def compute(self) -> Tensor:
        """Mean ERGAS over the images seen."""
        return self.sum_ergas / self.num_images


class RestorationMetrics(MetricCollection):
    """Image restoration scores: cloud removal (SEN12MS-CR) and pan-sharpening (SpaceNet2).

    Inputs are (B, C, H, W) float images in physical units (e.g. S2 reflectance, ``data_range``
    1); both are clamped to [0, ``data_range``] before scoring, so out-of-range predictions (and
    saturated targets) count at the edge of the range. Keys of ``compute()``:

    - ``MAE``, ``RMSE``: global, over all pixels and bands of the set
      (``sqrt(sum of squared errors / number of values)``).
    - ``PSNR`` (dB): per image, ``10 log10(data_range^2 / MSE_image)``, then averaged over the
      images of the set, as the SEN12MS-CR literature reports it (Ebel et al., 2021 and 2023);
      a perfect image scores +inf, and so does the mean.
    - ``SSIM``: torchmetrics' SSIM (Gaussian window of 11 taps, sigma 1.5, K1 = 0.01, K2 = 0.03,
      ``data_range``) per image, mean of the SSIM map over bands and pixels, then averaged over
      images. torchmetrics reflect-pads the images and keeps the border in that mean, whereas
      scikit-image crops a 5-pixel border; the interior SSIM maps agree.
    - ``SAM`` (degrees): the angle between the predicted and target spectra of each pixel,
      ``arccos(<p, t> / (|p| |t|))``, averaged over all pixels of all images (torchmetrics'
      ``SpectralAngleMapper``, which it equals on spectra that are not all zero). Needs C >= 2; a
      pixel whose spectrum is all zero in either image counts as 90 degrees.
    - ``ERGAS`` (only with ``ergas_ratio``): per image
      ``100 / ergas_ratio * sqrt(mean_b(RMSE_b^2 / mu_b^2))`` with ``mu_b`` the target mean of
      band b (torchmetrics' formula), averaged over images. The textbook ERGAS (Wald, 2002) is
      ``100 (h / l) sqrt(...)`` with h / l the high- over low-resolution pixel size, so
      ``ergas_ratio`` is l / h, the pixel size of the low-resolution input over that of the
      output: 4 for 1.2 m MS sharpened to 0.3 m PAN. A band of zero target mean gives +inf.

    Args:
        data_range: upper bound of valid values (the lower bound is 0).
        ergas_ratio: low- over high-resolution pixel size (>= 1), or None to skip ERGAS.

    Raises:
        ValueError: if ``data_range`` <= 0 or ``ergas_ratio`` < 1.
    """

    def __init__(self, data_range: float, ergas_ratio: float | None = None) -> None:
        if not data_range > 0:
            raise ValueError(f"data_range must be > 0, got {data_range}")
        if ergas_ratio is not None and not ergas_ratio >= 1:
            raise ValueError(
                f"ergas_ratio must be the low- over high-resolution pixel size (>= 1, e.g. 4 for "
                f"1.2 m MS to 0.3 m PAN), got {ergas_ratio}")
        metrics: dict[str, Metric] = {
            "MAE": MeanAbsoluteError(),
            "RMSE": MeanSquaredError(squared=False),
            "PSNR": PeakSignalNoiseRatio(data_range=data_range, dim=(1, 2, 3)),
            "SSIM": StructuralSimilarityIndexMeasure(
                gaussian_kernel=True, sigma=1.5, kernel_size=11, data_range=data_range),
            "SAM": _MeanSpectralAngle(),
        }
        if ergas_ratio is not None:
            metrics["ERGAS"] = _MeanERGAS(ergas_ratio)
        super().__init__(metrics, compute_groups=False)
        self.data_range = data_range

    def update(self, preds: Tensor, targets: Tensor) -> None:  # type: ignore[override]
        """Add a batch.

        Args:
            preds: (B, C, H, W) float predictions, C >= 2.
            targets: (B, C, H, W) float references.

        Raises:
            ValueError: if a shape or dtype does not match.
        """
        super().update(*self._prepare(preds, targets))

    def forward(self, preds: Tensor, targets: Tensor) -> dict[str, Any]:  # type: ignore[override]
        """Add a batch and return the metrics of that batch alone."""
        return super().forward(*self._prepare(preds, targets))

    def _prepare(self, preds: Tensor, targets: Tensor) -> tuple[Tensor, Tensor]:
        if preds.ndim != 4 or preds.shape[1] < 2:
            raise ValueError(f"preds must have shape (B, C, H, W) with C >= 2, "
                             f"got {tuple(preds.shape)}")
        if targets.shape != preds.shape:
            raise ValueError(f"targets must have shape {tuple(preds.shape)} as preds, "
                             f"got {tuple(targets.shape)}")
        for name, tensor in (("preds", preds), ("targets", targets)):
            if not tensor.is_floating_point():
                raise ValueError(f"{name} must be a float tensor, got {tensor.dtype}")
        dtype = torch.promote_types(preds.dtype, targets.dtype)
        return (preds.to(dtype).clamp(0, self.data_range),
                targets.to(dtype).clamp(0, self.data_range))


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
            raise ValueError(f"target must be an integer tensor (B, H, W), "
                             f"got {target.dtype} {tuple(target.shape)}")
        if preds.is_floating_point():
            expected = (target.shape[0], self.num_classes, *target.shape[1:])
            if preds.shape != expected:
                raise ValueError(f"preds (logits) must have shape {expected}, "
                                 f"got {tuple(preds.shape)}")
            preds = preds.argmax(dim=1)
        elif preds.shape != target.shape:
            raise ValueError(f"preds (class indices) must have shape {tuple(target.shape)}, "
                             f"got {tuple(preds.shape)}")
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

