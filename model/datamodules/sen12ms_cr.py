"""SEN12MS-CR cloud removal data module."""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

from torch import Tensor

from catalogs.sensors import get_sensor
from model.datamodules.augmentation import SampleCrop, SampleFlips
from model.datamodules.base import INPUTS, TARGET, DownstreamDataModule, Sample
from model.datasets.sen12ms_cr import SEN12MSCR


class SEN12MSCRDataModule(DownstreamDataModule):
    """SEN12MS-CR cloud removal: cloudy Sentinel-2 and Sentinel-1 in, cloud-free Sentinel-2 out.

    Over :class:`~model.datasets.SEN12MSCR` (official scene splits).

    Batch: ``inputs`` ``sentinel2_l1c`` (B, 13, P, P) cloudy reflectance and
    ``sentinel1_grd`` (B, 2, P, P) VV, VH in dB; ``target`` (B, 13, P, P) cloud-free
    reflectance. From the 256 x 256 patches, training takes a random ``input_px`` (P) crop and
    random flips (the same for inputs and target); validation and test take the centre crop.
    """

    # Input sensor -> the SEN12MSCR sample key it comes from.
    input_keys: ClassVar[dict[str, str]] = {
        "sentinel2_l1c": "image_s2_cloudy",
        "sentinel1_grd": "image_s1",
    }
    target_sensor: ClassVar[str] = "sentinel2_l1c"
    spatial_keys: ClassVar[tuple[str, ...]] = (TARGET,)

    def __init__(self, root: Path | str, **kwargs: Any) -> None:
        """Initialise a new SEN12MSCRDataModule.

        Args:
            root: the folder holding the ``ROIs<id>_<season>_{s1,s2,s2_cloudy}`` folders.
            **kwargs: the common arguments of :class:`DownstreamDataModule`.
        """
        super().__init__(root, **kwargs)
        self.crop = SampleCrop(self.input_px, self.spatial_keys)
        self.flips = SampleFlips(self.spatial_keys)

    @property
    def target_info(self) -> dict[str, Any]:
        """Image regression of the cloud-free Sentinel-2 reflectance (data range 1)."""
        sensor = get_sensor(self.target_sensor)
        return {
            "task": "image_regression",
            "sensor": sensor.name,
            "channels": sensor.num_bands,
            "band_names": sensor.band_names,
            "data_range": 1.0,
        }

    def _open(self, split: str) -> SEN12MSCR:
        return SEN12MSCR(self.root, split=split)

    def _convert(self, raw: dict[str, Tensor]) -> Sample:
        return {
            INPUTS: {name: raw[key] for name, key in self.input_keys.items()},
            TARGET: raw["target"],
        }

    def _train_view(self, sample: Sample, key: Any) -> Sample:
        return self.flips(self.crop.random(sample))

    def _eval_view(self, sample: Sample, key: Any) -> Sample:
        return self.crop.centre(sample)
