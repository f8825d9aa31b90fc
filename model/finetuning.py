"""Fine-tuning msGFM on the four downstream benchmarks as LightningModules.

One base class holds what the tasks share: the network (a pretrained export through
:func:`model.load_pretrained`, or the same architecture at random init), input normalisation
with the training set's band statistics,
AdamW with warm-up and cosine decay, and metrics accumulated over the whole evaluation set
(never averaged per batch). Each task adds its head, loss, metrics and prediction picture:

* :class:`ClassificationTask`: BigEarthNet multi-label (BCE; mAP micro and macro).
* :class:`CloudRemovalTask`: SEN12MS-CR (residual over the cloudy input; L1; MAE, RMSE, PSNR,
  SAM, SSIM).
* :class:`PanSharpeningTask`: SpaceNet 2, Wald's protocol (residual over the upsampled MS; L1
  on the real pixels; PSNR, SSIM, SAM, ERGAS).
* :class:`SegmentationTask`: Vaihingen IR-R-G + DSM (cross-entropy; mIoU and OA without
  clutter).

The network is built in :meth:`DownstreamTask.configure_model`, once the data module says which
sensors come in and what the target is.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import matplotlib
import torch
from lightning import LightningModule
from matplotlib import pyplot as plt
from torch import Tensor
from torch.nn import functional as F
from torch.optim.lr_scheduler import LambdaLR
from torchmetrics import Metric

from catalogs.atomic_files import finite_or_none, save_figure, write_json
from catalogs.sensors import get_sensor
from model.evaluation.metrics import ClassificationMetrics, RestorationMetrics, SegmentationMetrics
from model.export import load_pretrained
from model.nn.downstream import DownstreamNetwork, HeadKind
from model.nn.encoder import EncoderConfig, encoder_config
from model.prediction_figures import (
    classification_figure,
    cloud_removal_figure,
    pansharpening_figure,
    segmentation_figure,
)
from model.pretraining import warmup_cosine

Init = Literal["pretrained", "random"]
METRICS_FILE = "metrics.json"
FIGURE_FILE = "prediction.png"


class DownstreamTask(LightningModule):
    """What the four fine-tuning tasks share; subclasses set the head, loss and metrics."""

    head_kind: HeadKind = "dense"
    main_metric: str = ""

    def __init__(self, pretrained: str | None = None, init: Init = "pretrained",
                 preset: str = "tiny", input_px: int = 192, lr: float = 1e-3,
                 weight_decay: float = 0.05, warmup_share: float = 0.1, aux_weight: float = 0.01,
                 out_dir: str | None = None) -> None:
        """Configure the task; the network is built when the data is known.

        Args:
            pretrained: a pretrained export (folder or its ``model_card.json``). With
                ``init="random"`` only its architecture is used, so both variants are the
                same network.
            init: ``pretrained`` (load the export's weights) or ``random``.
            preset: encoder preset when no export is given (random init only).
            input_px: side of the input images (the data module's ``input_px``).
            lr: peak learning rate of AdamW.
            weight_decay: AdamW weight decay (not on norms, biases and tokens).
            warmup_share: share of the steps of linear warm-up before the cosine decay.
            aux_weight: weight of the MoE load-balancing loss (when the encoder has MoE).
            out_dir: where :meth:`on_test_epoch_end` writes ``metrics.json`` and
                ``prediction.png`` (default: the log directory).

        Raises:
            ValueError: for an unknown ``init``, or ``init="pretrained"`` without an export.
        """
        super().__init__()
        if init not in ("pretrained", "random"):
            raise ValueError(f"init must be 'pretrained' or 'random', got {init!r}")
        if init == "pretrained" and pretrained is None:
            raise ValueError("init='pretrained' needs --model.pretrained (an export folder); "
                             "use --model.init random to train from scratch")
        self.save_hyperparameters()
        self.network: DownstreamNetwork | None = None
        self.normalisation: dict[str, tuple[Tensor, Tensor]] = {}
        self.test_metrics: Metric | None = None
        self.val_metrics: Metric | None = None
        self._figure_batch: tuple[dict[str, Any], Tensor] | None = None

    # --- building -------------------------------------------------------------------------

    def configure_model(self) -> None:
        """Build the network for the data module's sensors and target (once)."""
        if self.network is not None:
            return
        data = self.trainer.datamodule
        info = data.target_info
        source = self.hparams["pretrained"]
        exported = load_pretrained(source) if source else None
        config = self._encoder_config(exported.encoder.config if exported else None)
        channels = {sensor: get_sensor(sensor).num_bands for sensor in data.input_sensors}
        network = DownstreamNetwork(config, channels, self.head_kind, self.output_channels(info))
        if exported is not None and self.hparams["init"] == "pretrained":
            network.load_pretrained(exported)
        # Each input is normalised with the downstream training set's own band statistics
        # (as fine-tuning recipes do), not the pretraining store's: a downstream set may shift
        # a sensor's values (e.g. Vaihingen's DSM relative to the area's lowest point).
        self.normalisation = dict(data.statistics())
        self.network = network
        self.target_info = info
        self.val_metrics = self.build_metrics(info)
        self.test_metrics = self.build_metrics(info)

    def _encoder_config(self, exported: EncoderConfig | None) -> EncoderConfig:
        config = exported or encoder_config(self.hparams["preset"],
                                            input_px=self.hparams["input_px"])
        if config.input_px != self.hparams["input_px"]:
            raise ValueError(f"the encoder takes {config.input_px} px inputs but the data "
                             f"gives {self.hparams['input_px']} px (set data.input_px)")
        return config

    def output_channels(self, info: dict[str, Any]) -> int:
        """Channels of the head's output for this task."""
        raise NotImplementedError

    def build_metrics(self, info: dict[str, Any]) -> Metric:
        """A fresh metric accumulating over one evaluation set."""
        raise NotImplementedError

    # --- forward ----------------------------------------------------------------------------

    def normalise(self, sensor: str, image: Tensor) -> Tensor:
        """``(image - mean) / std`` per band; non-finite values (nodata) become 0."""
        mean, std = (t.to(image.device, image.dtype)[:, None, None]
                     for t in self.normalisation[sensor])
        return torch.nan_to_num((image - mean) / std, nan=0.0, posinf=0.0, neginf=0.0)

    def denormalise(self, sensor: str, image: Tensor) -> Tensor:
        """The inverse of :meth:`normalise` (in the sensor's model unit)."""
        mean, std = (t.to(image.device, image.dtype)[:, None, None]
                     for t in self.normalisation[sensor])
        return image * std + mean

    def forward(self, batch: dict[str, Any]) -> Tensor:
        """The task's prediction in the target's own unit (logits for classes)."""
        inputs = {s: self.normalise(s, x) for s, x in batch["inputs"].items()
                  if s in self.network.embeddings}
        return self.predict_from(self.network(inputs), batch)

    def predict_from(self, output: Tensor, batch: dict[str, Any]) -> Tensor:
        """Turn the head's output into the prediction (identity by default)."""
        return output

    def loss(self, prediction: Tensor, batch: dict[str, Any]) -> Tensor:
        """The task loss of a prediction."""
        raise NotImplementedError

    def scored(self, prediction: Tensor, batch: dict[str, Any]) -> tuple[Tensor, Tensor]:
        """(prediction, target) as the metrics take them."""
        return prediction, batch["target"]

    # --- steps ------------------------------------------------------------------------------

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> Tensor:
        """Task loss plus the MoE load-balancing loss."""
        prediction = self(batch)
        loss = self.loss(prediction, batch)
        self.log("train/loss", loss, prog_bar=True, batch_size=len(batch["target"]))
        if self.network.encoder.moe_layers():
            aux = self.network.encoder.aux_loss()
            self.log("train/aux", aux, batch_size=len(batch["target"]))
            loss = loss + self.hparams["aux_weight"] * aux
        return loss

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        """Accumulate the validation metrics."""
        prediction = self(batch)
        self.log("val/loss", self.loss(prediction, batch), batch_size=len(batch["target"]))
        self.val_metrics.update(*self.scored(prediction, batch))

    def on_validation_epoch_end(self) -> None:
        """Log the validation metrics of the whole set."""
        for name, value in self.val_metrics.compute().items():
            self.log(f"val/{name}", value)
        self.val_metrics.reset()

    def test_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        """Accumulate the test metrics; keep the first batch for the picture."""
        prediction = self(batch)
        self.test_metrics.update(*self.scored(prediction, batch))
        if self._figure_batch is None:
            self._figure_batch = (batch, prediction.detach())

    def on_test_epoch_end(self) -> None:
        """Log the test metrics; write them (strict JSON: an unmeasurable one as null) and the
        prediction picture to ``out_dir``, each file replaced atomically."""
        results = {name: float(value) for name, value in self.test_metrics.compute().items()}
        self.test_metrics.reset()
        for name, value in results.items():
            self.log(f"test/{name}", value)
        if not self.trainer.is_global_zero:
            return
        out_dir = Path(self.hparams["out_dir"] or self.trainer.log_dir
                       or self.trainer.default_root_dir)
        record = {"init": self.hparams["init"],
                  "metrics": {name: finite_or_none(value) for name, value in results.items()},
                  "embeddings": dict(self.network.provenance),
                  "train_samples": len(self.trainer.datamodule.train_indices),
                  "steps": self.global_step}
        write_json(out_dir / METRICS_FILE, record)
        if self._figure_batch is not None:
            matplotlib.use("Agg")
            save_figure(self.figure(*self._figure_batch), out_dir / FIGURE_FILE)

    def figure(self, batch: dict[str, Any], prediction: Tensor) -> plt.Figure:
        """A picture of predictions on the first test batch."""
        raise NotImplementedError

    def configure_optimizers(self) -> dict[str, Any]:
        """AdamW (no decay on norms, biases, tokens), linear warm-up then cosine decay."""
        named = list(self.named_parameters())
        decay = [p for n, p in named if p.ndim > 1 and "token" not in n]
        other = [p for n, p in named if p.ndim <= 1 or "token" in n]
        optimizer = torch.optim.AdamW([{"params": decay}, {"params": other, "weight_decay": 0.0}],
                                      lr=self.hparams["lr"],
                                      weight_decay=self.hparams["weight_decay"])
        total = max(int(self.trainer.estimated_stepping_batches), 1)
        warmup = int(total * self.hparams["warmup_share"])
        schedule = LambdaLR(optimizer, lambda step: warmup_cosine(step, warmup, total))
        return {"optimizer": optimizer,
                "lr_scheduler": {"scheduler": schedule, "interval": "step"}}


class ClassificationTask(DownstreamTask):
    """Multi-label scene classification (BigEarthNet, 19 classes): BCE on logits; mAP micro
    (the literature's figure) and macro over the whole evaluation set."""

    head_kind = "classification"
    main_metric = "mAP_micro"

    def output_channels(self, info: dict[str, Any]) -> int:
        return int(info["num_classes"])

    def build_metrics(self, info: dict[str, Any]) -> Metric:
        return ClassificationMetrics(int(info["num_classes"]))

    def loss(self, prediction: Tensor, batch: dict[str, Any]) -> Tensor:
        return F.binary_cross_entropy_with_logits(prediction, batch["target"].float())

    def scored(self, prediction: Tensor, batch: dict[str, Any]) -> tuple[Tensor, Tensor]:
        return prediction, batch["target"].long()  # logits: the metric applies the sigmoid

    def figure(self, batch: dict[str, Any], prediction: Tensor) -> plt.Figure:
        return classification_figure(batch, prediction.sigmoid(),
                                     self.target_info["class_names"])


class _RestorationTask(DownstreamTask):
    """Image-to-image regression as a residual over an input of the target's sensor: the head
    predicts, in normalised units, what to add to that input; the loss is L1 there."""

    main_metric = "PSNR"
    ergas_ratio: float | None = None

    def output_channels(self, info: dict[str, Any]) -> int:
        return int(info["channels"])

    def build_metrics(self, info: dict[str, Any]) -> Metric:
        return RestorationMetrics(float(info["data_range"]), ergas_ratio=self.ergas_ratio)

    def predict_from(self, output: Tensor, batch: dict[str, Any]) -> Tensor:
        sensor = self.target_info["sensor"]
        base = self.normalise(sensor, batch["inputs"][sensor])
        return self.denormalise(sensor, base + output)

    def loss(self, prediction: Tensor, batch: dict[str, Any]) -> Tensor:
        sensor = self.target_info["sensor"]
        error = (self.normalise(sensor, prediction) - self.normalise(sensor, batch["target"])).abs()
        valid = batch.get("valid")
        if valid is None:
            return error.mean()
        weight = valid.to(error.dtype).expand_as(error)
        return (error * weight).sum() / weight.sum().clamp(min=1.0)


class CloudRemovalTask(_RestorationTask):
    """SEN12MS-CR: cloudy Sentinel-2 + Sentinel-1 in, the clear Sentinel-2 out (reflectance);
    MAE, RMSE, PSNR, SAM (degrees) and SSIM over the whole evaluation set."""

    def figure(self, batch: dict[str, Any], prediction: Tensor) -> plt.Figure:
        return cloud_removal_figure(batch, prediction, self.target_info["sensor"])


class PanSharpeningTask(_RestorationTask):
    """SpaceNet 2 pan-sharpening at reduced resolution (Wald's protocol): MS upsampled to the
    PAN grid + PAN in, MS at the PAN grid out; PSNR, SSIM, SAM, ERGAS on the real (unpadded)
    pixels over the whole evaluation set."""

    ergas_ratio = 4.0

    def scored(self, prediction: Tensor, batch: dict[str, Any]) -> tuple[Tensor, Tensor]:
        return valid_crop(prediction, batch["valid"]), valid_crop(batch["target"], batch["valid"])

    def figure(self, batch: dict[str, Any], prediction: Tensor) -> plt.Figure:
        return pansharpening_figure(batch, prediction, self.target_info["sensor"])


class SegmentationTask(DownstreamTask):
    """Semantic segmentation (Vaihingen, 6 classes): cross-entropy over every class; mIoU and
    overall accuracy over the 5 classes without clutter, as the literature reports."""

    main_metric = "mIoU"

    def output_channels(self, info: dict[str, Any]) -> int:
        return int(info["num_classes"])

    def build_metrics(self, info: dict[str, Any]) -> Metric:
        return SegmentationMetrics(int(info["num_classes"]), ignore_index=info["ignore_index"])

    def loss(self, prediction: Tensor, batch: dict[str, Any]) -> Tensor:
        return F.cross_entropy(prediction, batch["target"])

    def scored(self, prediction: Tensor, batch: dict[str, Any]) -> tuple[Tensor, Tensor]:
        """Class indices; pixels outside ``valid`` (tile overlaps) are left out."""
        return prediction.argmax(dim=1), ignore_invalid(batch, self.target_info["ignore_index"])

    def figure(self, batch: dict[str, Any], prediction: Tensor) -> plt.Figure:
        return segmentation_figure(batch, prediction.argmax(dim=1),
                                   self.target_info["class_names"])


def ignore_invalid(batch: dict[str, Any], ignore_index: int) -> Tensor:
    """The target with ``ignore_index`` wherever ``batch["valid"]`` (if given) is False."""
    target = batch["target"]
    valid = batch.get("valid")
    return target if valid is None else target.masked_fill(~valid[:, 0], ignore_index)


def valid_crop(image: Tensor, valid: Tensor) -> Tensor:
    """The top-left block of real pixels of a padded batch (padding is at the bottom/right).

    Args:
        image: (B, C, H, W).
        valid: (B, 1, H, W) bool, True on real pixels.

    Raises:
        ValueError: when the samples of the batch have real blocks of different sizes.
    """
    rows = valid[:, 0].any(dim=2).sum(dim=1)
    cols = valid[:, 0].any(dim=1).sum(dim=1)
    if (rows != rows[0]).any() or (cols != cols[0]).any():
        raise ValueError("the batch mixes images of different real sizes: "
                         f"{sorted(set(zip(rows.tolist(), cols.tolist(), strict=True)))}")
    return image[..., : int(rows[0]), : int(cols[0])]
