"""Downstream benchmark datamodules: BigEarthNet, SEN12MS-CR, SpaceNet 2 and Vaihingen."""

from __future__ import annotations

import math
import re
import warnings
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import rasterio
import rasterio.errors
import torch
import torch.nn.functional as F
from lightning import LightningDataModule
from rasterio.enums import Resampling
from torch import Tensor
from torch.utils.data import DataLoader, Dataset
from torchgeo.datasets import BigEarthNet

from catalogs.sensors import Sensor, get_sensor
from model.datasets.sen12ms_cr import SEN12MSCR
from model.datasets.spacenet2 import SpaceNet2PanMS
from model.datasets.vaihingen import VaihingenDSM

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
    """Where ``values`` (in the sensor's physical unit) are missing: NaN, or the registry's
    nodata value times its scale plus its offset."""
    missing = torch.isnan(values)
    if sensor.nodata is not None and not math.isnan(sensor.nodata):
        missing |= values == sensor.nodata * sensor.scale + sensor.offset
    return missing


def wald_degradation(pan: Tensor, ms: Tensor, ratio: int) -> tuple[Tensor, Tensor, Tensor]:
    """Wald's protocol for pan-sharpening with reference: degrade PAN and MS so the original
    MS becomes the target.

    Strictly, the protocol low-passes each band with a Gaussian matched to the sensor's
    modulation transfer function before decimating; here the low-pass is a box filter (the area
    average of ``F.interpolate(mode="area")``), which needs no MTF gains. Area averaging and
    bicubic interpolation are both symmetric, so the three results flip with their inputs.

    Args:
        pan: the panchromatic image, (1, H, W).
        ms: the multispectral image, (C, h, w), ``ratio`` times coarser than PAN (about).
        ratio: the PAN / MS resolution ratio (4 for WorldView-3).

    Returns:
        ``pan_low`` (1, h, w): PAN area-averaged onto the MS grid (exactly its h x w, which may
        differ by a pixel from H / ratio); ``ms_low`` (C, h // ratio, w // ratio): MS
        area-averaged by ``ratio``; ``ms_up`` (C, h, w): ``ms_low`` upsampled bicubically back
        to the MS grid (the network's MS input)

    Raises:
        ValueError: if the MS image is smaller than ``ratio`` pixels.
    """
    height, width = ms.shape[-2:]
    if min(height, width) < ratio:
        raise ValueError(f"a {height} x {width} MS image cannot be degraded by ratio {ratio}")
    pan_low = F.interpolate(pan[None], size=(height, width), mode="area")[0]
    ms_low = F.interpolate(ms[None], size=(height // ratio, width // ratio), mode="area")[0]
    ms_up = F.interpolate(ms_low[None], size=(height, width), mode="bicubic",
                          align_corners=False)[0]
    return pan_low, ms_low, ms_up


def tile_origins(length: int, tile: int) -> list[tuple[int, int]]:
    """Non-overlapping tiles covering ``length`` pixels, the last one shifted inward so that it
    ends at the border.

    Args:
        length: pixels to cover.
        tile: pixels per tile.

    Returns:
        ``(origin, first_new)`` per tile: where it starts, and its first pixel that no earlier
        tile covers (only the shifted last tile has ``first_new > origin``)

    Raises:
        ValueError: if ``length`` is smaller than ``tile``.
    """
    if length < tile:
        raise ValueError(f"{length} pixels are fewer than one {tile}-pixel tile")
    return [(min(start, length - tile), start) for start in range(0, length, tile)]


def _grid_size(sample: Sample) -> tuple[int, int]:
    """Rows and columns of the sample's input grid."""
    first = next(iter(sample[INPUTS].values()))
    return first.shape[-2], first.shape[-1]


def _map_spatial(sample: Sample, keys: Sequence[str], fn: Callable[[Tensor], Tensor]) -> Sample:
    """``fn`` applied to every input and to ``sample[key]`` for ``keys``; the rest as is."""
    mapped = dict(sample, **{key: fn(sample[key]) for key in keys})
    mapped[INPUTS] = {name: fn(values) for name, values in sample[INPUTS].items()}
    return mapped


def _crop(sample: Sample, keys: Sequence[str], top: int, left: int, size: int) -> Sample:
    return _map_spatial(sample, keys, lambda x: x[..., top:top + size, left:left + size])


def _check_fits(sample: Sample, size: int) -> tuple[int, int]:
    height, width = _grid_size(sample)
    if min(height, width) < size:
        raise ValueError(f"a {height} x {width} sample is smaller than input_px={size}")
    return height, width


def _random_crop(sample: Sample, keys: Sequence[str], size: int) -> Sample:
    height, width = _check_fits(sample, size)
    top = int(torch.randint(height - size + 1, ()))
    left = int(torch.randint(width - size + 1, ()))
    return _crop(sample, keys, top, left, size)


def _center_crop(sample: Sample, keys: Sequence[str], size: int) -> Sample:
    height, width = _check_fits(sample, size)
    return _crop(sample, keys, (height - size) // 2, (width - size) // 2, size)


def _random_flip(sample: Sample, keys: Sequence[str]) -> Sample:
    """Flip left-right, then up-down, each with probability 0.5."""
    for dim in (-1, -2):
        if torch.rand(()) < 0.5:
            sample = _map_spatial(sample, keys, lambda x, dim=dim: x.flip(dim))
    return sample


def _pad_bottom_right(values: Tensor, size: int) -> Tensor:
    """``values`` (C, h, w) padded at the bottom and right to (C, size, size): replicating the
    border, or with False for a boolean mask."""
    height, width = values.shape[-2:]
    if max(height, width) > size:
        raise ValueError(f"a {height} x {width} image does not fit in {size} x {size} "
                         f"(increase input_px)")
    padding = (0, size - width, 0, size - height)
    if values.dtype == torch.bool:
        return F.pad(values, padding, value=False)
    return F.pad(values, padding, mode="replicate")


class TaskSamples(Dataset[Sample]):
    """One split of a task: each item is a source sample, prepared (converted to the task's
    format, missing inputs filled), then cut by a view (augmentation, crop, tile, padding).

    The last prepared sample is kept, so the items of one source sample in a row (the tiles of
    a Vaihingen area) read it once.
    """

    def __init__(self, source: Dataset[dict[str, Tensor]], items: Sequence[Item],
                 prepare: Callable[[dict[str, Tensor]], Sample],
                 view: Callable[[Sample, Any], Sample]) -> None:
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

    # Sample keys besides the inputs that lie on the inputs' pixel grid.
    spatial_keys: ClassVar[tuple[str, ...]] = ()

    def __init__(self, root: Path | str, batch_size: int = 8, train_fraction: float = 1.0,
                 seed: int = 0, num_workers: int = 0, input_px: int = 192,
                 statistics_samples: int = 64) -> None:
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
        for name, value, least in (("batch_size", batch_size, 1), ("num_workers", num_workers, 0),
                                   ("input_px", input_px, 1),
                                   ("statistics_samples", statistics_samples, 1)):
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
    @abstractmethod
    def input_sensors(self) -> tuple[str, ...]:
        """The registry names of the input sensors, in batch order."""

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
        """Open the splits, draw the training subset and compute the statistics (once, for
        any stage: evaluation needs the training statistics too).

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
        self.datasets["train"] = TaskSamples(train, self._train_items(self.train_indices),
                                             self._prepare, self._train_view)
        for split in ("val", "test"):
            self.datasets[split] = TaskSamples(sources[split], self._eval_items(sources[split]),
                                               self._prepare, self._eval_view)

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
        return DataLoader(self.datasets[split], batch_size=self.batch_size, shuffle=shuffle,
                          num_workers=self.num_workers,
                          persistent_workers=self.num_workers > 0)

    def _prepare(self, raw: dict[str, Tensor]) -> Sample:
        """Convert a source sample and fill its missing input values with the training means."""
        sample = self._convert(raw)
        inputs = {}
        for name, values in sample[INPUTS].items():
            mean = self._statistics[name][0][:, None, None]
            inputs[name] = torch.where(missing_values(values, get_sensor(name)), mean, values)
        return dict(sample, **{INPUTS: inputs})

    def _compute_statistics(self, train: Dataset[dict[str, Tensor]], count: int
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


class _BigEarthNetFloat(BigEarthNet):
    """TorchGeo's BigEarthNet, reading every band as float32 in registry band order.

    TorchGeo's loader reads bands as int32, which truncates the S1 backscatter (dB) to whole
    decibels, and sorts the S1 files by name (VH before VV); this one keeps the values and
    orders the S1 bands VV, VH as the registry does. Sensors come in TorchGeo's order (S1 first
    then S2), every band resampled bilinearly to 120 x 120 pixels as TorchGeo does.
    """

    # Registry sensor -> TorchGeo's band set, in TorchGeo's order.
    sensor_band_sets: ClassVar[dict[str, str]] = {"sentinel1_grd": "s1", "sentinel2_l2a": "s2"}

    def __init__(self, root: Path, split: str, sensors: Sequence[str]) -> None:
        """Open a split with the bands of ``sensors`` (a non-empty subset of
        :attr:`sensor_band_sets`)."""
        self.loaded_sensors = tuple(s for s in self.sensor_band_sets if s in sensors)
        bands = ("all" if len(self.loaded_sensors) > 1
                 else self.sensor_band_sets[self.loaded_sensors[0]])
        super().__init__(root, split=split, bands=bands, num_classes=19)

    def _load_image(self, index: int) -> Tensor:
        files = {Path(path).stem.rsplit("_", 1)[-1]: path for path in self._load_paths(index)}
        bands = [band for name in self.loaded_sensors for band in get_sensor(name).band_names]
        absent = [band for band in bands if band not in files]
        if absent:
            raise ValueError(f"{self.folders[index]}: no file of band(s) {', '.join(absent)}")
        images = []
        for band in bands:
            with rasterio.open(files[band]) as src:
                images.append(src.read(1, out_shape=self.image_size, out_dtype="float32",
                                       resampling=Resampling.bilinear))
        return torch.from_numpy(np.stack(images))


class BigEarthNetDataModule(DownstreamDataModule):
    """BigEarthNet v1.0 multi-label classification (19 classes) from Sentinel-2 L2A, Sentinel-1
    or both, over TorchGeo's ``BigEarthNet`` (its layout and split CSVs under ``root``).

    Batch: ``inputs`` ``sentinel2_l2a`` (B, 12, P, P) reflectance (DN x 1e-4) and/or
    ``sentinel1_grd`` (B, 2, P, P) VV, VH in dB; ``target`` (B, 19) float32 multi-hot. The
    120 x 120 patches (every band resampled to 10 m) are resized to ``input_px`` (P) with
    bilinear interpolation (antialiased where shrinking); training adds random flips.
    """

    allowed_sensors: ClassVar[tuple[str, ...]] = tuple(_BigEarthNetFloat.sensor_band_sets)
    class_names: ClassVar[tuple[str, ...]] = tuple(BigEarthNet.class_sets[19])

    def __init__(self, root: Path | str,
                 sensors: Sequence[str] = ("sentinel2_l2a", "sentinel1_grd"),
                 **kwargs: Any) -> None:
        """Initialise a new BigEarthNetDataModule.

        Args:
            root: the folder holding ``BigEarthNet-v1.0``, ``BigEarthNet-S1-v1.0`` and the
                ``bigearthnet-{train,val,test}.csv`` split files.
            sensors: input sensors, in batch order: any non-empty selection of
                :attr:`allowed_sensors`, each once.
            **kwargs: the common arguments of :class:`DownstreamDataModule`.

        Raises:
            ValueError: if ``sensors`` is not such a selection, or a common argument is out of
                its range.
        """
        sensors = tuple(sensors)
        if (not sensors or len(set(sensors)) != len(sensors)
                or not set(sensors) <= set(self.allowed_sensors)):
            raise ValueError(f"sensors {sensors!r}: choose one or both of "
                             f"{', '.join(self.allowed_sensors)}, each once")
        super().__init__(root, **kwargs)
        self.sensors = sensors

    @property
    def input_sensors(self) -> tuple[str, ...]:
        """The chosen sensors."""
        return self.sensors

    @property
    def target_info(self) -> dict[str, Any]:
        """Multi-label classification over :attr:`class_names`."""
        return {"task": "multilabel_classification", "num_classes": len(self.class_names),
                "class_names": self.class_names}

    def _open(self, split: str) -> _BigEarthNetFloat:
        return _BigEarthNetFloat(self.root, split, self.sensors)

    def _convert(self, raw: dict[str, Tensor]) -> Sample:
        inputs: dict[str, Tensor] = {}
        start = 0
        for name in _BigEarthNetFloat.sensor_band_sets:
            sensor = get_sensor(name)
            if name in self.sensors:
                stored = raw["image"][start:start + sensor.num_bands].numpy()
                inputs[name] = torch.from_numpy(sensor.to_physical(stored))
                start += sensor.num_bands
        return {INPUTS: {name: inputs[name] for name in self.sensors},
                TARGET: raw["label"].float()}

    def _resize(self, sample: Sample) -> Sample:
        size = (self.input_px, self.input_px)
        return _map_spatial(sample, (), lambda x: F.interpolate(
            x[None], size=size, mode="bilinear", align_corners=False, antialias=True)[0])

    def _train_view(self, sample: Sample, key: Any) -> Sample:
        return _random_flip(self._resize(sample), ())

    def _eval_view(self, sample: Sample, key: Any) -> Sample:
        return self._resize(sample)


class SEN12MSCRDataModule(DownstreamDataModule):
    """SEN12MS-CR cloud removal: the cloudy Sentinel-2 and Sentinel-1 in, the cloud-free
    Sentinel-2 out, over :class:`~model.datasets.SEN12MSCR` (official scene splits).

    Batch: ``inputs`` ``sentinel2_l1c`` (B, 13, P, P) cloudy reflectance and
    ``sentinel1_grd`` (B, 2, P, P) VV, VH in dB; ``target`` (B, 13, P, P) cloud-free
    reflectance. From the 256 x 256 patches, training takes a random ``input_px`` (P) crop and
    random flips (the same for inputs and target); validation and test take the centre crop.
    """

    # Input sensor -> the SEN12MSCR sample key it comes from.
    input_keys: ClassVar[dict[str, str]] = {"sentinel2_l1c": "image_s2_cloudy",
                                            "sentinel1_grd": "image_s1"}
    target_sensor: ClassVar[str] = "sentinel2_l1c"
    spatial_keys: ClassVar[tuple[str, ...]] = (TARGET,)

    def __init__(self, root: Path | str, **kwargs: Any) -> None:
        """Initialise a new SEN12MSCRDataModule.

        Args:
            root: the folder holding the ``ROIs<id>_<season>_{s1,s2,s2_cloudy}`` folders.
            **kwargs: the common arguments of :class:`DownstreamDataModule`.
        """
        super().__init__(root, **kwargs)

    @property
    def input_sensors(self) -> tuple[str, ...]:
        """Cloudy Sentinel-2 L1C and Sentinel-1."""
        return tuple(self.input_keys)

    @property
    def target_info(self) -> dict[str, Any]:
        """Image regression of the cloud-free Sentinel-2 reflectance (data range 1)."""
        sensor = get_sensor(self.target_sensor)
        return {"task": "image_regression", "sensor": sensor.name,
                "channels": sensor.num_bands, "band_names": sensor.band_names,
                "data_range": 1.0}

    def _open(self, split: str) -> SEN12MSCR:
        return SEN12MSCR(self.root, split=split)

    def _convert(self, raw: dict[str, Tensor]) -> Sample:
        return {INPUTS: {name: raw[key] for name, key in self.input_keys.items()},
                TARGET: raw["target"]}

    def _train_view(self, sample: Sample, key: Any) -> Sample:
        cropped = _random_crop(sample, self.spatial_keys, self.input_px)
        return _random_flip(cropped, self.spatial_keys)

    def _eval_view(self, sample: Sample, key: Any) -> Sample:
        return _center_crop(sample, self.spatial_keys, self.input_px)


class SpaceNet2DataModule(DownstreamDataModule):
    """SpaceNet 2 pan-sharpening under Wald's protocol, over
    :class:`~model.datasets.SpaceNet2PanMS` (splits by image number).

    Each PAN (about 650 px) + MS (about 163 px) chip is degraded by :func:`wald_degradation`:
    the network sees ``worldview3_pan``, PAN area-averaged onto the MS grid, and
    ``worldview3_ms``, MS area-averaged by ``ratio`` and upsampled bicubically back to the MS
    grid; it predicts the original MS. Everything is then padded at the bottom and right to
    ``input_px`` (P) by replicating the border; training first flips randomly (everything,
    ``ms_low`` included). Values are 11-bit digital numbers, so the target's data range is
    2047.

    Batch: ``inputs`` ``worldview3_ms`` (B, 8, P, P) and ``worldview3_pan`` (B, 1, P, P);
    ``target`` (B, 8, P, P) the original MS; ``valid`` (B, 1, P, P) bool, True on the real
    (unpadded) pixels; ``pan_low`` (B, 1, P, P) the degraded PAN (as the input, but missing
    values not filled); ``ms_low`` (B, 8, ceil(P / ratio), ceil(P / ratio)) the degraded MS
    before upsampling, padded likewise (its real size is ``h // ratio`` x ``w // ratio`` for
    the h x w of ``valid``), for baselines.
    """

    pan_sensor: ClassVar[str] = "worldview3_pan"
    ms_sensor: ClassVar[str] = "worldview3_ms"
    data_range: ClassVar[float] = 2047.0  # 11-bit digital numbers
    spatial_keys: ClassVar[tuple[str, ...]] = (TARGET, VALID, "pan_low")

    def __init__(self, root: Path | str, ratio: int = 4, **kwargs: Any) -> None:
        """Initialise a new SpaceNet2DataModule.

        Args:
            root: the folder holding the ``AOI_<n>_<City>_Train`` folders.
            ratio: the PAN / MS resolution ratio the MS is degraded by (4 for WorldView-3).
            **kwargs: the common arguments of :class:`DownstreamDataModule`.

        Raises:
            ValueError: if ``ratio`` is below 2, or a common argument is out of its range.
        """
        if ratio < 2:
            raise ValueError(f"ratio must be at least 2, got {ratio}")
        super().__init__(root, **kwargs)
        self.ratio = ratio

    @property
    def input_sensors(self) -> tuple[str, ...]:
        """The degraded MS (upsampled) and the degraded PAN."""
        return self.ms_sensor, self.pan_sensor

    @property
    def target_info(self) -> dict[str, Any]:
        """Image regression of the original MS (11-bit, data range 2047)."""
        sensor = get_sensor(self.ms_sensor)
        return {"task": "image_regression", "sensor": sensor.name,
                "channels": sensor.num_bands, "band_names": sensor.band_names,
                "data_range": self.data_range, "ratio": self.ratio}

    def _open(self, split: str) -> SpaceNet2PanMS:
        return SpaceNet2PanMS(self.root, split=split)

    def _convert(self, raw: dict[str, Tensor]) -> Sample:
        ms = raw["image_ms"]
        pan_low, ms_low, ms_up = wald_degradation(raw["image_pan"], ms, self.ratio)
        return {INPUTS: {self.ms_sensor: ms_up, self.pan_sensor: pan_low}, TARGET: ms,
                VALID: torch.ones((1, *ms.shape[-2:]), dtype=torch.bool),
                "pan_low": pan_low, "ms_low": ms_low}

    def _pad(self, sample: Sample) -> Sample:
        padded = _map_spatial(sample, self.spatial_keys,
                              lambda x: _pad_bottom_right(x, self.input_px))
        padded["ms_low"] = _pad_bottom_right(sample["ms_low"],
                                             math.ceil(self.input_px / self.ratio))
        return padded

    def _train_view(self, sample: Sample, key: Any) -> Sample:
        return self._pad(_random_flip(sample, (*self.spatial_keys, "ms_low")))

    def _eval_view(self, sample: Sample, key: Any) -> Sample:
        return self._pad(sample)


class VaihingenDataModule(DownstreamDataModule):
    """ISPRS Vaihingen semantic segmentation (6 classes) from the IR-R-G orthophoto and the DSM,
    over :class:`~model.datasets.VaihingenDSM`.

    Inputs: ``cir`` (IR-R-G digital numbers 0-255) and ``dsm``, heights in metres relative to
    the area's lowest valid DSM pixel (a per-area offset, the same for every crop and tile of
    an area; terrain relief stays in). Training draws ``crops_per_area`` random ``input_px``
    (P) crops per area and epoch, with random flips (the same for inputs, target and
    ``valid``). Validation and test cut each area into a grid of non-overlapping P x P tiles,
    the last row and column shifted inward to end at the border; ``valid`` marks each pixel
    once (False where a shifted tile overlaps the tile before it), so metrics over ``valid``
    count every pixel of the area exactly once. The units of ``train_fraction`` are areas.

    Splits: ``train`` the 16 areas with released ground truth, ``test`` the other 17; ``val``
    is ``test`` unless ``val_areas`` names training areas to hold out for validation.

    Batch: ``inputs`` ``cir`` (B, 3, P, P) and ``dsm`` (B, 1, P, P); ``target`` (B, P, P)
    int64 class indices 0-5 (0 clutter/background, ignored by the metrics but kept);
    ``valid`` (B, 1, P, P) bool (all True in training).
    """

    # Input sensor -> the VaihingenDSM sample key it comes from.
    input_keys: ClassVar[dict[str, str]] = {"cir": "image", "dsm": "dsm"}
    height_sensor: ClassVar[str] = "dsm"
    class_names: ClassVar[tuple[str, ...]] = VaihingenDSM.classes
    ignore_index: ClassVar[int] = 0
    spatial_keys: ClassVar[tuple[str, ...]] = (TARGET, VALID)
    _area_name: ClassVar[re.Pattern[str]] = re.compile(
        r"(\d+)".join(map(re.escape, VaihingenDSM.top_file.split("{area}"))))

    def __init__(self, root: Path | str, crops_per_area: int = 8,
                 val_areas: Sequence[int] | None = None, **kwargs: Any) -> None:
        """Initialise a new VaihingenDataModule.

        Args:
            root: the folder holding ``top``, ``dsm`` and the ground truth.
            crops_per_area: random training crops per area and epoch.
            val_areas: training areas held out (from ``train``) as the ``val`` split; None:
                ``val`` is the ``test`` split.
            **kwargs: the common arguments of :class:`DownstreamDataModule`.

        Raises:
            ValueError: if ``crops_per_area`` is below 1, ``val_areas`` is empty or names
                areas that are not training areas, or a common argument is out of its range.
        """
        if crops_per_area < 1:
            raise ValueError(f"crops_per_area must be at least 1, got {crops_per_area}")
        if val_areas is not None:
            val_areas = tuple(val_areas)
            others = sorted(set(val_areas) - VaihingenDSM.split_areas["train"])
            if not val_areas or others:
                raise ValueError(f"val_areas {val_areas!r}: choose among the training areas "
                                 f"{sorted(VaihingenDSM.split_areas['train'])}")
        super().__init__(root, **kwargs)
        self.crops_per_area = crops_per_area
        self.val_areas = val_areas

    @property
    def input_sensors(self) -> tuple[str, ...]:
        """The IR-R-G orthophoto and the DSM."""
        return tuple(self.input_keys)

    @property
    def target_info(self) -> dict[str, Any]:
        """Semantic segmentation over :attr:`class_names`, class 0 ignored."""
        return {"task": "semantic_segmentation", "num_classes": len(self.class_names),
                "ignore_index": self.ignore_index, "class_names": self.class_names}

    def _area_of(self, files: dict[str, Path]) -> int:
        """The area number of an entry of :attr:`VaihingenDSM.files`."""
        match = self._area_name.fullmatch(Path(files["image"]).name)
        assert match is not None, files["image"]  # VaihingenDSM lists only such files
        return int(match[1])

    def _open(self, split: str) -> VaihingenDSM:
        if self.val_areas is None:
            return VaihingenDSM(self.root, split="test" if split == "val" else split)
        if split == "test":
            return VaihingenDSM(self.root, split="test")
        dataset = VaihingenDSM(self.root, split="train")
        absent = sorted(set(self.val_areas) - {self._area_of(f) for f in dataset.files})
        if absent:
            raise ValueError(f"{self.root}: no orthophoto, DSM and ground truth of val_areas "
                             f"{absent}")
        held_out = split == "val"
        dataset.files = [files for files in dataset.files
                         if (self._area_of(files) in self.val_areas) == held_out]
        return dataset

    def _convert(self, raw: dict[str, Tensor]) -> Sample:
        dsm = raw["dsm"]
        missing = missing_values(dsm, get_sensor(self.height_sensor))
        lowest = dsm[~missing].min() if bool((~missing).any()) else torch.tensor(0.0)
        heights = torch.where(missing, torch.nan, dsm - lowest)
        inputs = {name: raw[key] for name, key in self.input_keys.items()}
        inputs[self.height_sensor] = heights
        return {INPUTS: inputs, TARGET: raw["mask"],
                VALID: torch.ones((1, *dsm.shape[-2:]), dtype=torch.bool)}

    def _train_items(self, indices: Sequence[int]) -> list[Item]:
        return [(index, None) for index in indices for _ in range(self.crops_per_area)]

    def _eval_items(self, source: Dataset[dict[str, Tensor]]) -> list[Item]:
        assert isinstance(source, VaihingenDSM)
        items: list[Item] = []
        for index, files in enumerate(source.files):
            height, width = self._raster_shape(files["image"])
            for top, new_top in tile_origins(height, self.input_px):
                for left, new_left in tile_origins(width, self.input_px):
                    items.append((index, (top, left, new_top, new_left)))
        return items

    @staticmethod
    def _raster_shape(path: Path) -> tuple[int, int]:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", rasterio.errors.NotGeoreferencedWarning)
                with rasterio.open(path) as src:
                    return src.height, src.width
        except (rasterio.errors.RasterioError, OSError) as error:
            raise ValueError(f"{path}: unreadable raster ({error})") from error

    def _train_view(self, sample: Sample, key: Any) -> Sample:
        cropped = _random_crop(sample, self.spatial_keys, self.input_px)
        return _random_flip(cropped, self.spatial_keys)

    def _eval_view(self, sample: Sample, key: tuple[int, int, int, int]) -> Sample:
        top, left, new_top, new_left = key
        tile = _crop(sample, self.spatial_keys, top, left, self.input_px)
        valid = torch.zeros_like(tile[VALID])
        valid[:, new_top - top:, new_left - left:] = True
        return dict(tile, **{VALID: valid})
