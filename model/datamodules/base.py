"""The base of the downstream benchmark data modules: task samples, training subsets, statistics."""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, ClassVar

import torch
from lightning import LightningDataModule
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from catalogs.sensors import Sensor, get_sensor

INPUTS = "inputs"
TARGET = "target"
VALID = "valid"
SPLITS = ("train", "val", "test")
# A task sample: {"inputs": {sensor: (C, H, W)}, "target": ..., **extras}.
Sample = dict[str, Any]
# (index into the source dataset, what the view needs to cut the item: None or a tile).
Item = tuple[int, Any]


def subset_indices(count: int, keep: int, seed: int) -> list[int]:
    """A seeded random subset of ``keep`` of the indices ``range(count)``, sorted.

    Args:
        count: the number of samples to draw from.
        keep: how many to draw (at most ``count``).
        seed: seed of the draw.

    Returns:
        the drawn indices in increasing order
    """
    order = torch.randperm(count, generator=torch.Generator().manual_seed(seed))
    return sorted(order[:keep].tolist())


def missing_values(values: Tensor, sensor: Sensor) -> Tensor:
    """Where ``values`` (in the sensor's physical unit) are missing.

    A value is missing if it is NaN, or the registry's nodata value times its scale plus its
    offset.
    """
    missing = torch.isnan(values)
    if sensor.nodata is not None and not math.isnan(sensor.nodata):
        missing |= values == sensor.nodata * sensor.scale + sensor.offset
    return missing


def relative_to_lowest(values: Tensor, sensor: Sensor) -> Tensor:
    """``values`` minus their lowest valid value (0 where none is valid); missing ones as NaN.

    What a data module's :attr:`~DownstreamDataModule.relative_inputs` go through (e.g.
    heights above the lowest point of a DSM), over one whole scene or area.

    Args:
        values: an image in the sensor's physical unit.
        sensor: its registry sensor (its nodata).

    Returns:
        The relative values, NaN where missing.
    """
    missing = missing_values(values, sensor)
    lowest = values[~missing].min() if bool((~missing).any()) else values.new_zeros(())
    return torch.where(missing, torch.nan, values - lowest)


def map_spatial(sample: Sample, keys: Sequence[str], fn: Callable[[Tensor], Tensor]) -> Sample:
    """Apply ``fn`` to every input and to ``sample[key]`` for ``keys``; the rest as is.

    Args:
        sample: a task sample.
        keys: its keys besides the inputs to map.
        fn: the function, tensor -> tensor.

    Returns:
        the mapped sample (a new dict; ``sample`` is left as it is)
    """
    mapped = dict(sample, **{key: fn(sample[key]) for key in keys})
    mapped[INPUTS] = {name: fn(values) for name, values in sample[INPUTS].items()}
    return mapped


class TaskSamples(Dataset[Sample]):
    """One split of a task: each item is a source sample, prepared, then cut by a view.

    Preparing converts the source sample to the task's format and fills its missing inputs; the
    view applies augmentation, crop, tile or padding.

    The last prepared sample is kept, so the items of one source sample in a row (the tiles of
    a Vaihingen area) read it once.
    """

    def __init__(
        self,
        source: Dataset[dict[str, Tensor]],
        items: Sequence[Item],
        prepare: Callable[[dict[str, Tensor]], Sample],
        view: Callable[[Sample, Any], Sample],
    ) -> None:
        """Initialise the items of a split.

        Args:
            source: the dataset class of the split.
            items: (source index, view key) per item.
            prepare: source sample -> task sample.
            view: (task sample, view key) -> the item.
        """
        self.source = source
        self.items = list(items)
        self.prepare = prepare
        self.view = view
        self._last: tuple[int, Sample] | None = None

    def __len__(self) -> int:
        """Return the number of items."""
        return len(self.items)

    def __getitem__(self, index: int) -> Sample:
        """Return the item at ``index``."""
        source_index, key = self.items[index]
        if self._last is None or self._last[0] != source_index:
            self._last = (source_index, self.prepare(self.source[source_index]))
        return self.view(self._last[1], key)


class DownstreamDataModule(LightningDataModule, ABC):
    """Base of the downstream benchmark datamodules: one batch format for one fine-tuning module.

    Batches are ``{"inputs": {sensor: (B, C, input_px, input_px) float32}, "target": ...,
    **extras}``, sensors named as in the registry and in its model unit (physical values, not
    normalised: :meth:`statistics` gives what normalises them). Input values that are missing
    (NaN, or the sensor's nodata) are replaced with the band's training mean, so they become 0
    once normalised with :meth:`statistics`. Targets are left as they are.

    :meth:`setup` opens the three splits, draws the training subset (:attr:`train_indices`,
    ``train_fraction`` of the training split, seeded) and computes the statistics. Training
    items are augmented (random crop where the sample is larger than ``input_px``, random flips,
    identical for the inputs and a dense target); validation and test items are deterministic.
    After :meth:`setup`, :attr:`train_indices` holds the training subset (indices into the
    training split) and :attr:`datasets` the items of each split.

    Worker processes get the datamodule's methods by fork (Linux' default start method).
    """

    # Input sensor -> the dataset's sample key it comes from (or override input_sensors).
    input_keys: ClassVar[dict[str, str]] = {}
    # Sample keys besides the inputs that lie on the inputs' pixel grid.
    spatial_keys: ClassVar[tuple[str, ...]] = ()
    # Input sensors whose values are made relative to the lowest valid value of each source
    # sample (:func:`relative_to_lowest`); scene inference must do the same over the scene.
    relative_inputs: ClassVar[tuple[str, ...]] = ()

    def __init__(
        self,
        root: Path | str,
        batch_size: int = 8,
        train_fraction: float = 1.0,
        seed: int = 0,
        num_workers: int = 0,
        input_px: int = 192,
        statistics_samples: int = 64,
    ) -> None:
        """Initialise the common arguments.

        Args:
            root: the dataset's folder, in its official layout.
            batch_size: samples per batch.
            train_fraction: share of the training split to train on, in (0, 1] (the paper:
                0.01, 0.1, 1.0); ``max(1, round(train_fraction * n))`` samples.
            seed: seed of the training subset and of the statistics' samples.
            num_workers: DataLoader worker processes.
            input_px: side of the encoder's input; every item is brought to it.
            statistics_samples: training samples the statistics are computed from (at most).

        Raises:
            ValueError: if an argument is out of its range.
        """
        super().__init__()
        if not 0.0 < train_fraction <= 1.0:
            raise ValueError(f"train_fraction must be in (0, 1], got {train_fraction}")
        for name, value, least in (
            ("batch_size", batch_size, 1),
            ("num_workers", num_workers, 0),
            ("input_px", input_px, 1),
            ("statistics_samples", statistics_samples, 1),
        ):
            if value < least:
                raise ValueError(f"{name} must be at least {least}, got {value}")
        self.save_hyperparameters()
        self.root = Path(root)
        self.batch_size = batch_size
        self.train_fraction = train_fraction
        self.seed = seed
        self.num_workers = num_workers
        self.input_px = input_px
        self.statistics_samples = statistics_samples
        self.train_indices: list[int] = []
        self.datasets: dict[str, TaskSamples] = {}
        self._statistics: dict[str, tuple[Tensor, Tensor]] = {}

    @property
    def input_sensors(self) -> tuple[str, ...]:
        """The registry names of the input sensors, in batch order: those of :attr:`input_keys`."""
        return tuple(self.input_keys)

    @property
    @abstractmethod
    def target_info(self) -> dict[str, Any]:
        """What the head needs to know of the target (``task`` and its details)."""

    @abstractmethod
    def _open(self, split: str) -> Dataset[dict[str, Tensor]]:
        """The dataset class of ``split``."""

    @abstractmethod
    def _convert(self, raw: dict[str, Tensor]) -> Sample:
        """A source sample as a task sample at its own size, missing inputs as they come."""

    @abstractmethod
    def _train_view(self, sample: Sample, key: Any) -> Sample:
        """A prepared sample -> a training item of ``input_px`` (random augmentation)."""

    @abstractmethod
    def _eval_view(self, sample: Sample, key: Any) -> Sample:
        """A prepared sample -> a validation or test item of ``input_px`` (deterministic)."""

    def _train_items(self, indices: Sequence[int]) -> list[Item]:
        """The training items of the training subset's ``indices``: one per sample."""
        return [(index, None) for index in indices]

    def _eval_items(self, source: Dataset[dict[str, Tensor]]) -> list[Item]:
        """The items of a validation or test split: one per sample."""
        return [(index, None) for index in range(len(source))]  # type: ignore[arg-type]

    def setup(self, stage: str | None = None) -> None:
        """Open the splits, draw the training subset and compute the statistics.

        This happens once, for any stage: evaluation needs the training statistics too.

        Args:
            stage: the Lightning stage (``fit``, ``validate``, ``test``); all are alike.

        Raises:
            ValueError: if the training split is empty.
        """
        if self.datasets:
            return
        sources = {split: self._open(split) for split in SPLITS}
        train = sources["train"]
        count = len(train)  # type: ignore[arg-type]
        if count == 0:
            raise ValueError(f"{self.root}: the training split holds no sample")
        keep = max(1, round(self.train_fraction * count))
        self.train_indices = subset_indices(count, keep, self.seed)
        self._statistics = self._compute_statistics(train, count)
        self.datasets["train"] = TaskSamples(
            train, self._train_items(self.train_indices), self._prepare, self._train_view
        )
        for split in ("val", "test"):
            self.datasets[split] = TaskSamples(
                sources[split], self._eval_items(sources[split]), self._prepare, self._eval_view
            )

    def statistics(self) -> dict[str, tuple[Tensor, Tensor]]:
        """Per input sensor, the per-band (mean, std) of the training split in model units.

        Computed in :meth:`setup` over the non-missing pixels of up to ``statistics_samples``
        samples of the whole training split (seeded; not only the ``train_fraction`` subset:
        no label is used) as :meth:`_convert` gives them, before any crop, resize or padding.
        The std is floored at 1e-6.

        Returns:
            ``{sensor: (mean, std)}``, each a float32 (C,) tensor

        Raises:
            RuntimeError: if :meth:`setup` has not run.
        """
        if not self._statistics:
            raise RuntimeError("the statistics are computed in setup(): call it first")
        return dict(self._statistics)

    def train_dataloader(self) -> DataLoader[Sample]:
        """Batches of the training subset, reshuffled and re-augmented each epoch."""
        return self._loader("train", shuffle=True)

    def val_dataloader(self) -> DataLoader[Sample]:
        """Batches of the validation split, in order."""
        return self._loader("val")

    def test_dataloader(self) -> DataLoader[Sample]:
        """Batches of the test split, in order."""
        return self._loader("test")

    def _loader(self, split: str, shuffle: bool = False) -> DataLoader[Sample]:
        if not self.datasets:
            raise RuntimeError(f"the {split} split is not set up: call setup() first")
        return DataLoader(
            self.datasets[split],
            batch_size=self.batch_size,
            shuffle=shuffle,
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
        )

    def _prepare(self, raw: dict[str, Tensor]) -> Sample:
        """Convert a source sample and fill its missing input values with the training means."""
        sample = self._convert(raw)
        inputs = {}
        for name, values in sample[INPUTS].items():
            mean = self._statistics[name][0][:, None, None]
            inputs[name] = torch.where(missing_values(values, get_sensor(name)), mean, values)
        return dict(sample, **{INPUTS: inputs})

    def _compute_statistics(
        self, train: Dataset[dict[str, Tensor]], count: int
    ) -> dict[str, tuple[Tensor, Tensor]]:
        picks = subset_indices(count, min(self.statistics_samples, count), self.seed)
        sums: dict[str, Tensor] = {}
        squares: dict[str, Tensor] = {}
        counts: dict[str, Tensor] = {}
        for index in picks:
            for name, values in self._convert(train[index])[INPUTS].items():
                present = ~missing_values(values, get_sensor(name))
                kept = torch.where(present, values, 0.0).double()
                sums[name] = sums.get(name, 0.0) + kept.sum((-2, -1))
                squares[name] = squares.get(name, 0.0) + (kept * kept).sum((-2, -1))
                counts[name] = counts.get(name, 0) + present.sum((-2, -1))
        statistics = {}
        for name in self.input_sensors:
            pixels = counts[name].clamp(min=1)
            mean = sums[name] / pixels
            variance = (squares[name] / pixels - mean * mean).clamp(min=0.0)
            statistics[name] = (mean.float(), variance.sqrt().clamp(min=1e-6).float())
        return statistics
