"""BigEarthNet v1.0 multi-label classification data module."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import rasterio
import torch
import torch.nn.functional as F
from rasterio.enums import Resampling
from torch import Tensor
from torchgeo.datasets import BigEarthNet

from catalogs.sensors import get_sensor
from model.datamodules.augmentation import SampleFlips
from model.datamodules.base import INPUTS, TARGET, DownstreamDataModule, Sample, map_spatial


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
        """Open a split with the bands of ``sensors``.

        Args:
            root: the directory holding TorchGeo's BigEarthNet layout and split CSVs.
            split: ``train``, ``val`` or ``test``.
            sensors: a non-empty subset of :attr:`sensor_band_sets`.
        """
        self.loaded_sensors = tuple(s for s in self.sensor_band_sets if s in sensors)
        bands = (
            "all" if len(self.loaded_sensors) > 1 else self.sensor_band_sets[self.loaded_sensors[0]]
        )
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
                images.append(
                    src.read(
                        1,
                        out_shape=self.image_size,
                        out_dtype="float32",
                        resampling=Resampling.bilinear,
                    )
                )
        return torch.from_numpy(np.stack(images))


class BigEarthNetDataModule(DownstreamDataModule):
    """BigEarthNet v1.0 multi-label classification (19 classes).

    The inputs are Sentinel-2 L2A, Sentinel-1 or both, over TorchGeo's ``BigEarthNet`` (its
    layout and split CSVs under ``root``).

    Batch: ``inputs`` ``sentinel2_l2a`` (B, 12, P, P) reflectance (DN x 1e-4) and/or
    ``sentinel1_grd`` (B, 2, P, P) VV, VH in dB; ``target`` (B, 19) float32 multi-hot. The
    120 x 120 patches (every band resampled to 10 m) are resized to ``input_px`` (P) with
    bilinear interpolation (antialiased where shrinking); training adds random flips.
    """

    allowed_sensors: ClassVar[tuple[str, ...]] = tuple(_BigEarthNetFloat.sensor_band_sets)
    class_names: ClassVar[tuple[str, ...]] = tuple(BigEarthNet.class_sets[19])

    def __init__(
        self,
        root: Path | str,
        sensors: Sequence[str] = ("sentinel2_l2a", "sentinel1_grd"),
        **kwargs: Any,
    ) -> None:
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
        if (
            not sensors
            or len(set(sensors)) != len(sensors)
            or not set(sensors) <= set(self.allowed_sensors)
        ):
            raise ValueError(
                f"sensors {sensors!r}: choose one or both of "
                f"{', '.join(self.allowed_sensors)}, each once"
            )
        super().__init__(root, **kwargs)
        self.sensors = sensors
        self.flips = SampleFlips()

    @property
    def input_sensors(self) -> tuple[str, ...]:
        """The chosen sensors."""
        return self.sensors

    @property
    def target_info(self) -> dict[str, Any]:
        """Multi-label classification over :attr:`class_names`."""
        return {
            "task": "multilabel_classification",
            "num_classes": len(self.class_names),
            "class_names": self.class_names,
        }

    def _open(self, split: str) -> _BigEarthNetFloat:
        return _BigEarthNetFloat(self.root, split, self.sensors)

    def _convert(self, raw: dict[str, Tensor]) -> Sample:
        inputs: dict[str, Tensor] = {}
        start = 0
        for name in _BigEarthNetFloat.sensor_band_sets:
            sensor = get_sensor(name)
            if name in self.sensors:
                stored = raw["image"][start : start + sensor.num_bands].numpy()
                inputs[name] = torch.from_numpy(sensor.to_physical(stored))
                start += sensor.num_bands
        return {INPUTS: {name: inputs[name] for name in self.sensors}, TARGET: raw["label"].float()}

    def _resize(self, sample: Sample) -> Sample:
        size = (self.input_px, self.input_px)
        return map_spatial(
            sample,
            (),
            lambda x: F.interpolate(
                x[None], size=size, mode="bilinear", align_corners=False, antialias=True
            )[0],
        )

    def _train_view(self, sample: Sample, key: Any) -> Sample:
        return self.flips(self._resize(sample))

    def _eval_view(self, sample: Sample, key: Any) -> Sample:
        return self._resize(sample)
