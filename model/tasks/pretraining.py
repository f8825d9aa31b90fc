"""msGFM pretraining as a LightningModule.

The loss, its logs, the optimiser and schedule, the Figure-3 pictures of masked reconstruction
and the export at the end.

The pictures are laid out like Figure 3 of the msGFM paper: input, masked input, reconstruction
and target, for each sensor and each cross-sensor pair.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import matplotlib
import numpy as np
import torch
from lightning import LightningModule
from matplotlib import pyplot as plt

from catalogs.atomic_files import save_figure
from catalogs.store_format import SensorManifest, acquisition_range, read_manifest
from model.datasets.batching import MODEL_STREAM, step_seed
from model.datasets.display import composite
from model.export import export_pretrained
from model.nn.encoder import encoder_config
from model.nn.msgfm import MsGFM, PretrainOutput, Reconstruction, SensorWeighting
from model.tasks.optimization import adamw_warmup_cosine

REFERENCE_BATCH = 512  # the paper's learning rate is given per 512 samples
FIGURE_COLUMNS = ("input", "masked input", "reconstruction", "target")
FIGURE_ROWS = 2  # examples per picture
MASK_GREY = 0.5


class MsGFMPretraining(LightningModule):
    """SimMIM pretraining of msGFM on GeoPile-2, every sensor in every step."""

    def __init__(
        self,
        store: Path | str = "data/geopile2.zarr",
        sensors: Sequence[str] | None = None,
        preset: str = "tiny",
        version: str = "v2",
        input_px: int = 192,
        window_size: int = 6,
        seed: int = 0,
        moe: bool = True,
        num_experts: int = 8,
        top_k: int = 1,
        cross_sensor_rate: float = 0.5,
        mask_ratio: float = 0.6,
        aux_weight: float = 0.01,
        balance_loss: str = "switch",
        sensor_weighting: SensorWeighting = "sensor",
        base_lr: float = 2e-4,
        batch_size: int = 64,
        weight_decay: float = 0.05,
        warmup_share: float = 0.1,
        warmup_epochs: float | None = None,
        figure_every_n_steps: int = 0,
        export_dir: str | None = None,
    ) -> None:
        """Build the network for the sensors of a store.

        Args:
            store: the GeoPile-2 store (its manifest gives each sensor's bands).
            sensors: sensors to pretrain on (default: all in the store).
            preset: encoder preset (``tiny`` for CPU, ``base``: Swin-B as the paper).
            version: Swin ``v2`` (the paper) or ``v1``.
            input_px: side of the (cropped) input chips.
            window_size: attention window in tokens.
            seed: with the global step and the rank, seeds each step's randomness (masks,
                cross-sensor draws, gate noise, drop path; a stream of its own, apart from the
                datamodule's augmentation), so a resumed run repeats the uninterrupted one.
            moe: sparse MoE MLPs where Swin-MoE puts them (False: a dense encoder).
            num_experts: experts per MoE layer.
            top_k: experts per token.
            cross_sensor_rate: probability that a paired chip reconstructs its partner.
            mask_ratio: SimMIM mask ratio.
            aux_weight: weight of the MoE load-balancing loss.
            balance_loss: that loss, ``"switch"`` or ``"importance_load"`` (see
                :class:`~model.nn.moe.SparseMoE`).
            sensor_weighting: how the sensors' losses combine, ``"sensor"`` or ``"sample"``
                (see :class:`~model.nn.msgfm.MsGFM`).
            base_lr: learning rate per 512 samples (scaled by the global batch).
            batch_size: samples per step and device (for the learning-rate scaling).
            weight_decay: AdamW weight decay (not on norms, biases, the mask token and what
                the network's ``no_weight_decay()`` lists).
            warmup_share: share of the steps of linear warm-up before the cosine decay.
            warmup_epochs: epochs of warm-up instead (SimMIM, GFM: 10), when set.
            figure_every_n_steps: write the Figure-3 pictures every N steps (0: at the end only).
            export_dir: where the end of training exports the encoder (default: the log
                directory's ``export``).
        """
        super().__init__()
        self.save_hyperparameters()
        self.hparams["store"] = str(store)  # plain types only: checkpoints load weights_only
        manifest = read_manifest(store).sensors
        names = list(manifest) if sensors is None else list(sensors)
        unknown = [name for name in names if name not in manifest]
        if unknown:
            raise ValueError(f"{store}: no sensor {unknown}; the store has {list(manifest)}")
        self.sensor_manifests = {name: manifest[name] for name in names}
        moe_config = encoder_config(preset).moe if moe else None
        if moe_config is not None:
            moe_config = replace(
                moe_config, num_experts=num_experts, top_k=top_k, balance_loss=balance_loss
            )
        config = encoder_config(
            preset, version=version, input_px=input_px, window_size=window_size, moe=moe_config
        )
        self._channels = {name: len(m.band_names) for name, m in self.sensor_manifests.items()}
        self._config = config
        self.network = self._new_network()
        self._last_batch: dict[str, Any] | None = None

    def on_fit_start(self) -> None:
        """Where figures and the export go, decided on every rank (``log_dir`` broadcasts)."""
        root = Path(self.trainer.log_dir or self.trainer.default_root_dir)
        self.figures_dir = root / "figures"
        explicit = self.hparams["export_dir"]
        self.export_dir = Path(explicit) if explicit else root / "export"

    def on_train_batch_start(self, batch: Any, batch_idx: int) -> None:
        """Seed this step's randomness from (seed, step, rank)."""
        torch.manual_seed(
            step_seed(self.hparams["seed"], self.global_step, self.global_rank, MODEL_STREAM)
        )

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor:
        """One optimiser step over every sensor of the batch."""
        figures = self._figure_step()
        out = self.network(batch, keep=figures)
        self._log(out, batch)
        if figures:
            self._save_figures(out)
        self._last_batch = batch
        return out.loss

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        """The masked reconstruction loss on held-out locations."""
        out = self.network(batch, generator=torch.Generator().manual_seed(batch_idx))
        self.log("val/loss", out.loss, batch_size=_batch_rows(batch), sync_dist=True)
        self.log("val/mim", out.mim_loss, batch_size=_batch_rows(batch), sync_dist=True)

    def configure_optimizers(self) -> dict[str, Any]:
        """AdamW at ``base_lr x global batch / 512``, linear warm-up, then cosine decay.

        No decay on norms, biases, the mask token and what the network exempts. The warm-up
        lasts ``warmup_epochs`` epochs where set, else ``warmup_share`` of the steps.
        """
        world = self.trainer.world_size if self.trainer else 1
        lr = self.hparams["base_lr"] * self.hparams["batch_size"] * world / REFERENCE_BATCH
        total = int(self.trainer.estimated_stepping_batches) if self.trainer else 1
        per_epoch = (
            optimizer_steps_per_epoch(self.trainer)
            if self.trainer and self.hparams["warmup_epochs"] is not None
            else None
        )
        warmup = warmup_steps(
            total, self.hparams["warmup_share"], self.hparams["warmup_epochs"], per_epoch
        )
        return adamw_warmup_cosine(self.network, lr, self.hparams["weight_decay"], warmup, total)

    def _new_network(self) -> MsGFM:
        return MsGFM(
            self._channels,
            self._config,
            cross_sensor_rate=self.hparams["cross_sensor_rate"],
            mask_ratio=self.hparams["mask_ratio"],
            aux_weight=self.hparams["aux_weight"],
            sensor_weighting=self.hparams["sensor_weighting"],
        )

    def on_train_end(self) -> None:
        """Pictures of the last batch and the export of the encoder, on rank 0.

        The pictures show each sensor and each cross pair; both come from a whole copy of the
        trained network on rank 0. Under FSDP each rank holds a shard and gathering them is
        collective, so every rank asks the strategy for the state dict first.
        """
        state = self.trainer.strategy.lightning_module_state_dict()
        if not self.trainer.is_global_zero:
            return
        network = self._new_network().to(self.device)
        network.load_state_dict(
            {key.removeprefix("network."): value for key, value in state.items()}
        )
        network.eval()
        if self._last_batch is not None:
            with torch.no_grad():
                for rate in (0.0, 1.0):  # every sensor's own reconstruction, every cross pair
                    network.cross_sensor_rate = rate
                    self._save_figures(
                        network(
                            self._last_batch, keep=True, generator=torch.Generator().manual_seed(0)
                        )
                    )
        export_pretrained(
            network,
            self.export_dir,
            self.sensor_manifests,
            acquired=acquisition_range(self.hparams["store"], self.sensor_manifests),
            training={
                "store": str(self.hparams["store"]),
                "steps": self.global_step,
                "hyperparameters": dict(self.hparams),
            },
        )

    def _figure_step(self) -> bool:
        every = self.hparams["figure_every_n_steps"]
        return bool(every) and self.global_step % every == 0 and self.trainer.is_global_zero

    def _save_figures(self, out: PretrainOutput) -> None:
        save_reconstruction_figures(
            out.reconstructions, self.sensor_manifests, self.figures_dir, step=self.global_step
        )

    def _log(self, out: PretrainOutput, batch: dict[str, Any]) -> None:
        rows = _batch_rows(batch)
        self.log("train/loss", out.loss, prog_bar=True, batch_size=rows)
        self.log("train/mim", out.mim_loss, batch_size=rows)
        self.log("train/aux", out.aux_loss, batch_size=rows)
        self.log("train/cross_share", out.cross_share, batch_size=rows)
        for sensor, loss in out.mim_per_sensor.items():
            self.log(f"train/mim_{sensor}", loss, batch_size=rows)
        layers = self.network.encoder.moe_layers()
        if layers:
            load = torch.stack([layer.expert_load for layer in layers])
            self.log("moe/max_expert_load", load.max(), batch_size=rows)
            self.log("moe/min_expert_load", load.min(), batch_size=rows)
            self.log(
                "moe/dropped_fraction",
                torch.stack([layer.dropped_fraction for layer in layers]).float().mean(),
                batch_size=rows,
            )


def warmup_steps(
    total_steps: int,
    warmup_share: float,
    warmup_epochs: float | None = None,
    steps_per_epoch: int | None = None,
) -> int:
    """Optimiser steps of linear warm-up.

    Args:
        total_steps: optimiser steps of the run.
        warmup_share: share of ``total_steps`` (used when ``warmup_epochs`` is None).
        warmup_epochs: epochs of warm-up: ``round(warmup_epochs * steps_per_epoch)`` steps.
        steps_per_epoch: optimiser steps per epoch (needed with ``warmup_epochs``).

    Returns:
        The warm-up steps.

    Raises:
        ValueError: for a negative ``warmup_epochs``, one without ``steps_per_epoch``, or one
            longer than the run.
    """
    if warmup_epochs is None:
        return int(total_steps * warmup_share)
    if warmup_epochs < 0 or steps_per_epoch is None:
        raise ValueError(
            f"warmup_epochs {warmup_epochs} needs to be non-negative, with the steps per epoch "
            f"(got {steps_per_epoch})"
        )
    steps = round(warmup_epochs * steps_per_epoch)
    if steps > total_steps:
        raise ValueError(
            f"warmup_epochs {warmup_epochs} is {steps} steps ({steps_per_epoch} per epoch), "
            f"more than the run's {total_steps}: lower it, or raise max_epochs / max_steps"
        )
    return steps


def optimizer_steps_per_epoch(trainer: Any) -> int:
    """Optimiser steps in one epoch of ``trainer``'s train loader (after its batch limits).

    Read after ``estimated_stepping_batches``, which sets the loader up; a ``max_steps`` cut
    shortens the run, not its epochs.

    Raises:
        ValueError: for a train loader without a length.
    """
    batches = trainer.num_training_batches
    if not math.isfinite(batches):
        raise ValueError("warmup_epochs needs a train loader with a length (epochs of known size)")
    return math.ceil(batches / trainer.accumulate_grad_batches)


def _batch_rows(batch: dict[str, Any]) -> int:
    return sum(sub["image"].shape[0] for sub in batch["sensors"].values())


def save_reconstruction_figures(
    groups: Sequence[Reconstruction], sensors: Mapping[str, SensorManifest], folder: Path, step: int
) -> list[Path]:
    """One PNG per (encoded sensor, decoded sensor) group; returns their paths.

    Each is ``folder/step<step>_<source>_to_<target>.png``.
    """
    matplotlib.use("Agg")
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for group in groups:
        path = folder / f"step{step:07d}_{group.source}_to_{group.target_sensor}.png"
        save_figure(reconstruction_figure(group, sensors), path)
        paths.append(path)
    return paths


def reconstruction_figure(
    group: Reconstruction, sensors: Mapping[str, SensorManifest]
) -> plt.Figure:
    """A figure of the first :data:`FIGURE_ROWS` chips of ``group``.

    Its four columns are those of :data:`FIGURE_COLUMNS` (see :func:`reconstruction_panels`).
    """
    rows = min(FIGURE_ROWS, len(group.rows))
    columns = len(FIGURE_COLUMNS)
    figure, axes = plt.subplots(rows, columns, figsize=(3 * columns, 3 * rows), squeeze=False)
    source, target = sensors[group.source], sensors[group.target_sensor]
    for row in range(rows):
        panels = reconstruction_panels(group, sensors, row)
        for column, (ax, panel) in enumerate(zip(axes[row], panels, strict=True)):
            ax.imshow(panel)
            ax.axis("off")
            if row == 0:
                sensor = source if column < 2 else target
                ax.set_title(f"{FIGURE_COLUMNS[column]}\n{sensor.name}")
    figure.suptitle(f"{group.source} -> {group.target_sensor}")
    figure.tight_layout()
    return figure


def reconstruction_panels(
    group: Reconstruction, sensors: Mapping[str, SensorManifest], row: int
) -> tuple[np.ndarray, ...]:
    """The (H, W, 3) pictures of chip ``row`` of ``group``, one per :data:`FIGURE_COLUMNS`.

    The reconstruction shows what the loss sees, as SimMIM draws it: the prediction on the
    masked patches, the target's own values on the visible ones (``target * (1 - mask) +
    prediction * mask``), drawn with the target's stretch, so a prediction near the band mean
    looks flat, not like full-contrast noise.
    """
    source, target = sensors[group.source], sensors[group.target_sensor]
    patch = group.image.shape[-1] // group.mask.shape[-1]
    mask = np.kron(group.mask[row].cpu().numpy(), np.ones((patch, patch))).astype(bool)
    picture = _picture(group.image[row], source)
    truth = _values(group.target[row])
    reconstruction = np.where(mask, _values(group.prediction[row]), truth)
    return (
        picture,
        np.where(mask[..., None], MASK_GREY, picture),
        composite(reconstruction, target.name, target.kind, target.band_names, truth),
        composite(truth, target.name, target.kind, target.band_names),
    )


def _values(image: torch.Tensor) -> np.ndarray:
    return np.asarray(image.detach().float().cpu(), dtype=np.float32)


def _picture(image: torch.Tensor, sensor: SensorManifest) -> np.ndarray:
    return composite(_values(image), sensor.name, sensor.kind, sensor.band_names)
