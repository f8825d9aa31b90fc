"""Batch transforms of GeoPile-2 sub-batches.

Per-sensor normalisation from the store's statistics, and kornia augmentation applied identically to
a chip and its partners. Normalisation records where each image holds data (``valid`` and
``valid_<partner>``), and the augmentation carries those masks along, so the loss can leave
nodata out although the encoder sees it as 0.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import kornia.augmentation as K
import torch
from torch import nn

from catalogs.store_format import SensorManifest
from model.datasets.batching import ROWS_PREFIX, valid_key
from model.datasets.geopile2 import PARTNER_PREFIX
from model.datasets.units import to_model_unit

# A resampled pixel is valid only if every pixel it was interpolated from was: its interpolated
# validity is then 1 (up to rounding), while one invalid neighbour of weight w gives 1 - w.
VALID_THRESHOLD = 1.0 - 1e-3


def band_moments(sensor: SensorManifest) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-band mean and std of a sensor in the model's unit, from the store's statistics.

    A band without valid values, or constant, gets mean 0 and std 1.

    Raises:
        ValueError: naming the sensor, when its model unit is not a linear function of the
            stored unit (the statistics could not be carried over).
    """
    if sensor.unit != sensor.model_unit:
        raise ValueError(
            f"sensor {sensor.name}: statistics are in {sensor.unit}, the model "
            f"sees {sensor.model_unit}; normalising needs statistics in that unit"
        )
    stats = sensor.statistics
    mean = [0.0 if m is None else m * sensor.scale + sensor.offset for m in stats.mean]
    std = [1.0 if s is None or s == 0 else s * abs(sensor.scale) for s in stats.std]
    return torch.tensor(mean, dtype=torch.float32), torch.tensor(std, dtype=torch.float32)


class SensorNormalize(nn.Module):
    """(x - mean) / std per band of each sensor; nodata (NaN, inf) becomes 0, the band mean.

    Applied to a chip and to its partners (``image_<sensor>``), each with its own sensor's
    moments; chips as stored (``GeoPile2(stored=True)``) are first converted to the model's
    unit, on their device (the stored nodata value becomes NaN there). Where values were
    finite is kept per band as ``valid`` (``valid_<sensor>`` for a partner): (B, C, H, W) bool.
    """

    def __init__(self, sensors: dict[str, SensorManifest], stored: bool = False) -> None:
        """Initialize a new SensorNormalize instance.

        Args:
            sensors: the store's sensors (``read_manifest(path).sensors``).
            stored: the images come as stored, not in the model's unit.
        """
        super().__init__()
        self.sensors, self.stored = sensors, stored
        self.moments = {
            name: band_moments(sensor)
            for name, sensor in sensors.items()
            if sensor.unit == sensor.model_unit
        }
        self.unusable = {
            name: sensor for name, sensor in sensors.items() if name not in self.moments
        }

    def normalize(self, sensor: str, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """One sensor's images (B, C, H, W) normalised, and where they were valid.

        Returns:
            The normalised images (0 where invalid) and the (B, C, H, W) bool validity.
        """
        if sensor in self.unusable:
            band_moments(self.unusable[sensor])  # raises, naming the sensor
        if self.stored:
            image = to_model_unit(image, self.sensors[sensor])
        mean, std = (m.to(image.device, image.dtype)[:, None, None] for m in self.moments[sensor])
        normalized = (image - mean) / std
        valid = torch.isfinite(normalized)
        return torch.where(valid, normalized, 0.0), valid

    def forward(self, sensor: str, batch: dict[str, Any]) -> dict[str, Any]:
        """A sub-batch of ``sensor`` with its images normalised and their validity added."""
        batch = dict(batch)
        for key in [k for k in batch if k == "image" or k.startswith(PARTNER_PREFIX)]:
            name = sensor if key == "image" else key.removeprefix(PARTNER_PREFIX)
            batch[key], batch[valid_key(key)] = self.normalize(name, batch[key])
        return batch


class AlignedAugmentation(nn.Module):
    """kornia augmentations drawn once per chip and applied to the chip and its partners alike.

    The chip's bands and its partners' bands are stacked along the channel axis (zeros where a
    row has no such partner), augmented as one image, and split again: the geometry of a pair
    stays identical, whatever each sensor's channel count. Validity masks (``valid``,
    ``valid_<partner>``) travel as further channels (1 valid, 0 not) and come back as bool,
    True only where the resampled validity is (up to rounding) 1: a pixel interpolated from
    any invalid one is invalid.
    """

    def __init__(self, augmentations: Sequence[nn.Module]) -> None:
        """Initialize a new AlignedAugmentation instance.

        Args:
            augmentations: kornia augmentations (geometric ones: the same transform touches
                every channel of a row).
        """
        super().__init__()
        self.augment = K.AugmentationSequential(*augmentations, data_keys=["input"])

    def forward(self, batch: dict[str, Any]) -> dict[str, Any]:
        """A sub-batch (``image`` and ``image_<partner>`` with ``rows_<partner>``) augmented.

        With their validity masks, where the sub-batch has them.
        """
        image = batch["image"]
        images = ["image"] + sorted(k for k in batch if k.startswith(PARTNER_PREFIX))
        keys = images + [valid_key(k) for k in images if valid_key(k) in batch]
        rows = {
            key: batch[ROWS_PREFIX + key.removeprefix(PARTNER_PREFIX)]
            for key in images
            if key != "image"
        }
        rows.update({valid_key(key): value for key, value in rows.items()})
        widths = [batch[k].shape[1] for k in keys]
        stacked = image.new_zeros((image.shape[0], sum(widths), *image.shape[2:]))
        start = 0
        for key, width in zip(keys, widths, strict=True):
            stacked[rows.get(key, slice(None)), start : start + width] = batch[key].to(image.dtype)
            start += width
        parts = torch.split(self.augment(stacked), widths, dim=1)
        out = dict(batch)
        for key, part in zip(keys, parts, strict=True):
            part = part[rows.get(key, slice(None))]
            out[key] = part > VALID_THRESHOLD if key not in images else part
        return out


def pretraining_augmentation(
    crop_px: int = 192, crop_scale: tuple[float, float] = (0.67, 1.0)
) -> AlignedAugmentation:
    """SimMIM's pretraining augmentation: a random resized crop to ``crop_px`` and flips."""
    return AlignedAugmentation(
        [
            K.RandomResizedCrop((crop_px, crop_px), scale=crop_scale, ratio=(3 / 4, 4 / 3)),
            K.RandomHorizontalFlip(),
            K.RandomVerticalFlip(),
        ]
    )


def evaluation_crop(crop_px: int = 192) -> AlignedAugmentation:
    """The centre ``crop_px`` square (validation and test: no randomness)."""
    return AlignedAugmentation([K.CenterCrop((crop_px, crop_px))])
