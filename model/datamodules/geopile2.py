"""GeoPile-2 datamodule."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from lightning import LightningDataModule
from torch.utils.data import DataLoader

from model.datasets.batching import (
    DATA_STREAM,
    SENSORS_KEY,
    SensorBatchSampler,
    collate_by_sensor,
    step_seed,
)
from model.datasets.geopile2 import GeoPile2
from model.datasets.transforms import (
    SensorNormalize,
    evaluation_crop,
    pretraining_augmentation,
)


class GeoPile2DataModule(LightningDataModule):
    """GeoPile-2 for pretraining: every sensor in every batch, normalised and augmented.

    Batches are ``{"sensors": {name: sub_batch}, "skipped": n}`` (see
    :func:`~model.datasets.batching.collate_by_sensor`), their chips as stored (a 16-bit
    sensor's batch is half the bytes of float32 to pin and transfer). On the device, each
    sub-batch is converted to the model's unit, normalised with its sensor's band statistics
    from the store (nodata -> 0, recorded in ``valid`` / ``valid_<partner>`` for the loss) and
    augmented:
    in training a random resized crop to ``crop_px`` and flips, otherwise the centre crop,
    drawn per chip and applied identically to its partners.

    With DDP the sampler splits each epoch across ranks itself: run the Trainer with
    ``use_distributed_sampler=False``.
    """

    def __init__(
        self,
        root: Path | str = "data/geopile2.zarr",
        sensors: Sequence[str] | None = None,
        batch_size: int = 64,
        shares: Mapping[str, float] | None = None,
        num_workers: int = 0,
        crop_px: int = 192,
        crop_scale: tuple[float, float] = (0.67, 1.0),
        paired_only: bool = False,
        seed: int = 0,
        on_error: str = "raise",
        pin_memory: bool = False,
        min_chips_per_sensor: int = 1,
    ) -> None:
        """Initialize a new GeoPile2DataModule.

        Args:
            root: the GeoPile-2 store.
            sensors: sensors to train on (default: all in the store).
            batch_size: samples per batch and rank, all sensors together.
            shares: each sensor's share of the samples (default: by its number of chips).
            num_workers: DataLoader worker processes.
            crop_px: side of the training crop (the paper: 192).
            crop_scale: area range of the random resized crop.
            paired_only: only chips that have a partner.
            seed: seed of the batch order (with the epoch).
            on_error: ``"raise"`` or ``"skip"`` damaged chips (see :class:`GeoPile2`).
            pin_memory: pin batches in page-locked memory (for GPU training).
            min_chips_per_sensor: fewest chips of each sensor per batch (see
                :class:`~model.datasets.batching.SensorBatchSampler`).
        """
        super().__init__()
        self.save_hyperparameters()
        self.root = Path(root)
        self.datasets: dict[str, GeoPile2] = {}
        self.normalize: SensorNormalize | None = None
        self._resume: dict[str, int] = {}
        self.train_augmentation = pretraining_augmentation(crop_px, crop_scale)
        self.eval_augmentation = evaluation_crop(crop_px)

    def setup(self, stage: str) -> None:
        """Open the splits a stage needs (``fit``: train and val; ``validate``, ``test``)."""
        splits = {"fit": ("train", "val"), "validate": ("val",), "test": ("test",)}
        for split in splits.get(stage, ("train",)):
            self.datasets[split] = GeoPile2(
                self.root,
                sensors=self.hparams["sensors"],
                partner_sensors=self.hparams["sensors"],
                split=split,
                paired_only=self.hparams["paired_only"],
                on_error=self.hparams["on_error"],
                stored=True,
            )
        self.normalize = SensorNormalize(
            next(iter(self.datasets.values())).manifest.sensors, stored=True
        )

    def train_dataloader(self) -> DataLoader[Any]:
        """Batches of the train split, reshuffled each epoch."""
        return self._loader("train")

    def val_dataloader(self) -> DataLoader[Any]:
        """Batches of the val split (the same order every epoch)."""
        return self._loader("val")

    def test_dataloader(self) -> DataLoader[Any]:
        """Batches of the test split."""
        return self._loader("test")

    def on_after_batch_transfer(self, batch: dict[str, Any], dataloader_idx: int) -> dict[str, Any]:
        """Convert, normalise and augment each sensor's sub-batch on the device."""
        assert self.normalize is not None, "setup() first"
        training = self.trainer is not None and self.trainer.training
        if training:  # the augmentation of a step depends on (seed, step, rank) only
            trainer = self.trainer
            torch.manual_seed(
                step_seed(
                    self.hparams["seed"], trainer.global_step, trainer.global_rank, DATA_STREAM
                )
            )
        augment = self.train_augmentation if training else self.eval_augmentation
        sub_batches = {
            sensor: augment(self.normalize(sensor, sub_batch))
            for sensor, sub_batch in batch[SENSORS_KEY].items()
        }
        return dict(batch, **{SENSORS_KEY: sub_batches})

    def state_dict(self) -> dict[str, int]:
        """Where training is in its epoch, saved in checkpoints.

        Returns:
            ``epoch`` and ``batches_done`` (the batches of it this rank has trained on); empty
            without a trainer.
        """
        if self.trainer is None:
            return {}
        progress = self.trainer.fit_loop.epoch_loop.batch_progress.current
        return {"epoch": self.trainer.current_epoch, "batches_done": progress.processed}

    def load_state_dict(self, state_dict: dict[str, int]) -> None:
        """Resume the train sampler where the checkpoint was taken."""
        self._resume = dict(state_dict)

    def _loader(self, split: str) -> DataLoader[Any]:
        if split not in self.datasets:
            raise RuntimeError(f"the {split} split is not set up: call setup() first")
        dataset = self.datasets[split]
        sampler = SensorBatchSampler(
            dataset.sensor_counts,
            self.hparams["batch_size"],
            shares=self.hparams["shares"],
            seed=self.hparams["seed"],
            min_chips_per_sensor=self.hparams["min_chips_per_sensor"],
        )
        if split == "train" and self._resume:
            sampler.resume(self._resume["epoch"], self._resume["batches_done"])
            self._resume = {}
        workers = self.hparams["num_workers"]
        return DataLoader(
            dataset,
            batch_sampler=sampler,
            collate_fn=collate_by_sensor,
            num_workers=workers,
            persistent_workers=workers > 0,
            pin_memory=self.hparams["pin_memory"],
        )
