"""What the downstream tasks share: the LightningModule base and the spec each task declares.

:class:`DownstreamTask` holds the network (a pretrained export through
:func:`model.load_pretrained`, or the same architecture at random init), input normalisation
with the training set's band statistics, the optimiser (:mod:`model.tasks.optimization`) and
metrics accumulated over the whole evaluation set (never averaged per batch), one
``MetricCollection`` per stage cloned from the task's :meth:`~DownstreamTask.configure_metrics`.
Each task module adds its head, loss, metrics, prediction picture, classical baselines and a
:class:`TaskSpec` that the report (:mod:`model.evaluate`) reads.

The network is built in :meth:`DownstreamTask.configure_model`, once the data module says which
sensors come in and what the target is.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, ClassVar, Literal

import matplotlib
import torch
from lightning import LightningDataModule, LightningModule
from matplotlib import pyplot as plt
from torch import Tensor
from torchmetrics import Metric, MetricCollection

from catalogs.atomic_files import finite_or_none, save_figure, write_json
from catalogs.sensors import get_sensor
from model.export import load_pretrained
from model.nn.downstream import DownstreamNetwork, HeadKind, MissingEmbeddings
from model.nn.encoder import EncoderConfig, encoder_config
from model.tasks.optimization import adamw_warmup_cosine

Init = Literal["pretrained", "random"]
Scores = dict[str, dict[str, float]]  # {baseline: {metric: value}}
METRICS_FILE = "metrics.json"
FIGURE_FILE = "prediction.png"
VAL_PREFIX = "val/"
TEST_PREFIX = "test/"


@dataclass(frozen=True)
class TaskSpec:
    """What the benchmark report needs to know of one downstream task.

    Attributes:
        name: the task's name (``configs/finetune/<name with dashes>-sample.yaml``).
        task_class: the task's LightningModule (what an exported model card may name).
        title: the benchmark dataset, as the report's heading names it.
        columns: the report's columns: (metric, higher is better).
        main_metric: the metric that decides which init wins.
        baselines: scores the classical baselines on a data module's test split.
        paper: msGFM's published result on the real dataset, quoted for reference.
    """

    name: str
    task_class: type[DownstreamTask]
    title: str
    columns: tuple[tuple[str, bool], ...]
    main_metric: str
    baselines: Callable[[LightningDataModule], Scores]
    paper: str

    def higher_is_better(self, metric: str) -> bool:
        """Whether a larger ``metric`` is better."""
        return dict(self.columns)[metric]


def score(metric: Metric, pairs: Iterable[tuple[Tensor, Tensor]]) -> dict[str, float]:
    """Feed every (prediction, target) pair to ``metric``; its values over all of them."""
    for prediction, target in pairs:
        metric.update(prediction, target)
    return {name: float(value) for name, value in metric.compute().items()}


class DownstreamTask(LightningModule):
    """What the fine-tuning tasks share; subclasses set the head, loss, metrics and figure.

    After :meth:`configure_model` (or :meth:`build`): ``network``, ``normalisation``,
    ``target_info`` (the data module's) and ``relative_inputs`` (the input sensors the data
    module makes relative to their lowest valid value).
    """

    head_kind: ClassVar[HeadKind] = "dense"
    # The STAC MLM task of the exported model, and what its prediction is (model card).
    mlm_task: ClassVar[str]
    prediction: ClassVar[str]

    def __init__(
        self,
        pretrained: str | None = None,
        init: Init = "pretrained",
        preset: str = "tiny",
        input_px: int = 192,
        lr: float = 1e-3,
        weight_decay: float = 0.05,
        warmup_share: float = 0.1,
        layer_decay: float | None = 0.9,
        drop_path_rate: float = 0.1,
        missing_embeddings: MissingEmbeddings = "error",
        aux_weight: float = 0.01,
        out_dir: str | None = None,
    ) -> None:
        """Configure the task; the network is built when the data is known.

        Args:
            pretrained: a pretrained export (folder or its ``model_card.json``). With
                ``init="random"`` only its architecture is used, so both variants are the
                same network.
            init: ``pretrained`` (load the export's weights) or ``random``.
            preset: encoder preset when no export is given (random init only).
            input_px: side of the input images (the data module's ``input_px``).
            lr: peak learning rate of AdamW.
            weight_decay: AdamW weight decay (not on norms, biases, tokens and what the
                network's ``no_weight_decay()`` lists).
            warmup_share: share of the steps of linear warm-up before the cosine decay
                (rounded down to whole steps).
            layer_decay: layer-wise learning-rate decay: the head trains at ``lr``, the last
                Swin block at ``lr * layer_decay``, each block below at one more factor, the
                patch embeddings at the lowest (SimMIM and GFM fine-tune Swin with 0.9);
                1.0 or None: ``lr`` everywhere.
            drop_path_rate: stochastic depth of the encoder's last block (linear from 0 at the
                first), replacing the export's or preset's pretraining rate.
            missing_embeddings: what to do with an input sensor the pretrained model has no
                embedding for and none can be matched by wavelength: ``error`` (raise
                :class:`~model.nn.downstream.MissingEmbeddingError`) or ``random`` (keep its
                random init, e.g. to fine-tune single-sensor-pretrained models everywhere).
            aux_weight: weight of the MoE load-balancing loss (when the encoder has MoE).
            out_dir: where :meth:`on_test_epoch_end` writes ``metrics.json`` and
                ``prediction.png`` (default: the log directory).

        Raises:
            ValueError: for an unknown ``init`` or ``missing_embeddings``, or
                ``init="pretrained"`` without an export.
        """
        super().__init__()
        if init not in ("pretrained", "random"):
            raise ValueError(f"init must be 'pretrained' or 'random', got {init!r}")
        if missing_embeddings not in ("error", "random"):
            raise ValueError(
                f"missing_embeddings must be 'error' or 'random', got {missing_embeddings!r}"
            )
        if init == "pretrained" and pretrained is None:
            raise ValueError(
                "init='pretrained' needs --model.pretrained (an export folder); "
                "use --model.init random to train from scratch"
            )
        self.save_hyperparameters()
        self.network: DownstreamNetwork | None = None
        self.normalisation: dict[str, tuple[Tensor, Tensor]] = {}
        self.target_info: dict[str, Any] = {}
        self.relative_inputs: tuple[str, ...] = ()
        self.val_metrics: MetricCollection | None = None
        self.test_metrics: MetricCollection | None = None
        self._figure_batch: tuple[dict[str, Any], Tensor] | None = None

    # --- building -------------------------------------------------------------------------

    def configure_model(self) -> None:
        """Build the network and the metrics for the data module's sensors and target (once)."""
        if self.network is not None:
            return
        data = self.trainer.datamodule
        source = self.hparams["pretrained"]
        exported = load_pretrained(source) if source else None
        # Each input is normalised with the downstream training set's own band statistics
        # (as fine-tuning recipes do), not the pretraining store's: a downstream set may shift
        # a sensor's values (e.g. Vaihingen's DSM relative to the area's lowest point).
        self.build(
            self._encoder_config(exported.encoder.config if exported else None),
            {sensor: get_sensor(sensor).num_bands for sensor in data.input_sensors},
            data.statistics(),
            data.target_info,
            data.relative_inputs,
        )
        if exported is not None and self.hparams["init"] == "pretrained":
            self.network.load_pretrained(exported, self.hparams["missing_embeddings"])

    def build(
        self,
        config: EncoderConfig,
        input_channels: Mapping[str, int],
        normalisation: Mapping[str, tuple[Tensor, Tensor]],
        target_info: Mapping[str, Any],
        relative_inputs: Iterable[str] = (),
    ) -> None:
        """Build the network (at random init) and the metrics for known inputs and target.

        Args:
            config: the encoder's configuration.
            input_channels: ``{sensor: channels}`` of the inputs, in batch order.
            normalisation: ``{sensor: (mean, std)}`` per band, in the model's unit.
            target_info: the data module's ``target_info``.
            relative_inputs: the input sensors made relative to their lowest valid value.
        """
        info = dict(target_info)
        self.network = DownstreamNetwork(
            config, input_channels, self.head_kind, self.output_channels(info)
        )
        self.normalisation = dict(normalisation)
        self.target_info = info
        self.relative_inputs = tuple(relative_inputs)
        metrics = self.configure_metrics(info)
        self.val_metrics = metrics.clone(prefix=VAL_PREFIX)
        self.test_metrics = metrics.clone(prefix=TEST_PREFIX)

    def _encoder_config(self, exported: EncoderConfig | None) -> EncoderConfig:
        config = replace(
            exported or encoder_config(self.hparams["preset"], input_px=self.hparams["input_px"]),
            drop_path_rate=self.hparams["drop_path_rate"],
        )
        if config.input_px != self.hparams["input_px"]:
            raise ValueError(
                f"the encoder takes {config.input_px} px inputs but the data "
                f"gives {self.hparams['input_px']} px (set data.input_px)"
            )
        return config

    def output_channels(self, info: dict[str, Any]) -> int:
        """Channels of the head's output for this task."""
        raise NotImplementedError

    def configure_metrics(self, info: dict[str, Any]) -> MetricCollection:
        """The task's metrics over one evaluation set (cloned per stage)."""
        raise NotImplementedError

    # --- forward ----------------------------------------------------------------------------

    def normalise(self, sensor: str, image: Tensor) -> Tensor:
        """``(image - mean) / std`` per band; non-finite values (nodata) become 0."""
        mean, std = (
            t.to(image.device, image.dtype)[:, None, None] for t in self.normalisation[sensor]
        )
        return torch.nan_to_num((image - mean) / std, nan=0.0, posinf=0.0, neginf=0.0)

    def denormalise(self, sensor: str, image: Tensor) -> Tensor:
        """The inverse of :meth:`normalise` (in the sensor's model unit)."""
        mean, std = (
            t.to(image.device, image.dtype)[:, None, None] for t in self.normalisation[sensor]
        )
        return image * std + mean

    def forward(self, batch: dict[str, Any]) -> Tensor:
        """The task's prediction in the target's own unit (logits for classes)."""
        inputs = {
            s: self.normalise(s, x)
            for s, x in batch["inputs"].items()
            if s in self.network.embeddings
        }
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
            self.log(name, value)
        self.val_metrics.reset()

    def test_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        """Accumulate the test metrics; keep the first batch for the picture."""
        prediction = self(batch)
        self.test_metrics.update(*self.scored(prediction, batch))
        if self._figure_batch is None:
            self._figure_batch = (batch, prediction.detach())

    def on_test_epoch_end(self) -> None:
        """Log the test metrics; write them, the prediction picture and the model to ``out_dir``.

        The metrics are strict JSON: an unmeasurable one as null. The model goes to
        ``out_dir/model`` (:func:`model.finetuned.export_finetuned`). Each file is replaced
        atomically.
        """
        from model.finetuned import export_finetuned  # it imports this module

        results = {
            name.removeprefix(TEST_PREFIX): float(value)
            for name, value in self.test_metrics.compute().items()
        }
        self.test_metrics.reset()
        for name, value in results.items():
            self.log(f"{TEST_PREFIX}{name}", value)
        if not self.trainer.is_global_zero:
            return
        out_dir = Path(
            self.hparams["out_dir"] or self.trainer.log_dir or self.trainer.default_root_dir
        )
        record = {
            "init": self.hparams["init"],
            "metrics": {name: finite_or_none(value) for name, value in results.items()},
            "embeddings": dict(self.network.provenance),
            "train_samples": len(self.trainer.datamodule.train_indices),
            "steps": self.global_step,
        }
        write_json(out_dir / METRICS_FILE, record)
        if self._figure_batch is not None:
            matplotlib.use("Agg")
            save_figure(self.figure(*self._figure_batch), out_dir / FIGURE_FILE)
        export_finetuned(self, out_dir)

    def figure(self, batch: dict[str, Any], prediction: Tensor) -> plt.Figure:
        """A picture of predictions on the first test batch."""
        raise NotImplementedError

    def configure_optimizers(self) -> dict[str, Any]:
        """AdamW with layer-wise learning-rate decay, linear warm-up then cosine decay.

        No decay on norms, biases, tokens and what the network exempts.
        """
        total = max(int(self.trainer.estimated_stepping_batches), 1)
        return adamw_warmup_cosine(
            self.network,
            self.hparams["lr"],
            self.hparams["weight_decay"],
            int(total * self.hparams["warmup_share"]),
            total,
            self.hparams["layer_decay"],
        )
