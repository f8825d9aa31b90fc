"""SpaceNet 2 pan-sharpening data module, under Wald's protocol."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor

from catalogs.sensors import get_sensor
from model.datamodules.augmentation import SampleFlips
from model.datamodules.base import (
    INPUTS,
    TARGET,
    VALID,
    DownstreamDataModule,
    Sample,
    map_spatial,
)
from model.datasets.spacenet2 import SpaceNet2PanMS


def crop_to_ratio(pan: Tensor, ms: Tensor, ratio: int) -> tuple[Tensor, Tensor]:
    """Crop MS at the bottom and right to a multiple of ``ratio`` pixels, and PAN to its ground.

    SpaceNet 2's MS chips are 163 px a side: decimated by 4 without this crop, each degraded
    pixel would average 4.075 MS pixels, so the upsampled input's grid would drift against the
    target's (and against the encoder's 4-px patches), and a flip would shift it by 3 px. After
    it (163 -> 160 px, 650 -> 638 PAN px) each degraded pixel is exactly a ``ratio`` x
    ``ratio`` block of the target.

    Args:
        pan: the panchromatic image, (1, H, W), over the same ground as ``ms``.
        ms: the multispectral image, (C, h, w).
        ratio: the PAN / MS resolution ratio.

    Returns:
        ``pan`` (1, round(H h' / h), round(W w' / w)) and ``ms`` (C, h', w'), with ``h'`` and
        ``w'`` the largest multiples of ``ratio`` not above ``h`` and ``w``.

    Raises:
        ValueError: if the MS image is smaller than ``ratio`` pixels.
    """
    height, width = ms.shape[-2:]
    if min(height, width) < ratio:
        raise ValueError(f"a {height} x {width} MS image cannot be degraded by ratio {ratio}")
    cropped_height, cropped_width = height - height % ratio, width - width % ratio
    pan_height = round(cropped_height * pan.shape[-2] / height)
    pan_width = round(cropped_width * pan.shape[-1] / width)
    return pan[..., :pan_height, :pan_width], ms[..., :cropped_height, :cropped_width]


def wald_degradation(pan: Tensor, ms: Tensor, ratio: int) -> tuple[Tensor, Tensor, Tensor]:
    """Degrade PAN and MS by Wald's protocol so the original MS becomes the target.

    Wald's protocol is for pan-sharpening with reference. Strictly, the protocol low-passes each
    band with a Gaussian matched to the sensor's modulation transfer function before decimating;
    here the low-pass is a box filter (the area average of ``F.interpolate(mode="area")``),
    which needs no MTF gains. Area averaging and bicubic interpolation are both symmetric, so
    the three results flip with their inputs.

    Args:
        pan: the panchromatic image, (1, H, W), over the same ground as ``ms``.
        ms: the multispectral image, (C, h, w), ``ratio`` times coarser than PAN (about), ``h``
            and ``w`` multiples of ``ratio`` (:func:`crop_to_ratio`).
        ratio: the PAN / MS resolution ratio (4 for WorldView-3).

    Returns:
        ``pan_low`` (1, h, w): PAN area-averaged onto the MS grid (exactly its h x w, which may
        differ by a pixel from H / ratio); ``ms_low`` (C, h / ratio, w / ratio): MS
        area-averaged over ``ratio`` x ``ratio`` blocks; ``ms_up`` (C, h, w): ``ms_low``
        upsampled bicubically by ``ratio`` (the network's MS input)

    Raises:
        ValueError: if a side of the MS image is not a positive multiple of ``ratio``.
    """
    height, width = ms.shape[-2:]
    if min(height, width) < ratio or height % ratio or width % ratio:
        raise ValueError(
            f"a {height} x {width} MS image cannot be degraded by ratio {ratio}: its sides must "
            "be multiples of the ratio (crop_to_ratio)"
        )
    pan_low = F.interpolate(pan[None], size=(height, width), mode="area")[0]
    ms_low = F.interpolate(ms[None], size=(height // ratio, width // ratio), mode="area")[0]
    ms_up = F.interpolate(ms_low[None], size=(height, width), mode="bicubic", align_corners=False)[
        0
    ]
    return pan_low, ms_low, ms_up


def _pad_bottom_right(values: Tensor, size: int) -> Tensor:
    """Pad ``values`` (C, h, w) at the bottom and right to (C, size, size).

    The padding replicates the border, or is False for a boolean mask.

    Raises:
        ValueError: if ``values`` is larger than ``size`` in height or width.
    """
    height, width = values.shape[-2:]
    if max(height, width) > size:
        raise ValueError(
            f"a {height} x {width} image does not fit in {size} x {size} (increase input_px)"
        )
    padding = (0, size - width, 0, size - height)
    if values.dtype == torch.bool:
        return F.pad(values, padding, value=False)
    return F.pad(values, padding, mode="replicate")


class SpaceNet2DataModule(DownstreamDataModule):
    """SpaceNet 2 pan-sharpening under Wald's protocol.

    Over :class:`~model.datasets.SpaceNet2PanMS` (splits by image number). Each PAN (about 650
    px) + MS (about 163 px) chip is cropped to a multiple of ``ratio`` MS pixels
    (:func:`crop_to_ratio`: 160 px) and degraded by :func:`wald_degradation`: the network sees
    ``worldview3_pan``, PAN area-averaged onto the MS grid, and ``worldview3_ms``, MS
    area-averaged by ``ratio`` and upsampled bicubically back to the MS grid; it predicts the
    cropped MS. Everything is then padded at the bottom and right to ``input_px`` (P) by
    replicating the border; training first flips randomly (everything, ``ms_low`` included).
    Values are 11-bit digital numbers, so the target's data range is 2047.

    Batch: ``inputs`` ``worldview3_ms`` (B, 8, P, P) and ``worldview3_pan`` (B, 1, P, P);
    ``target`` (B, 8, P, P) the cropped MS; ``valid`` (B, 1, P, P) bool, True on the real
    (unpadded) pixels; ``pan_low`` (B, 1, P, P) the degraded PAN (as the input, but missing
    values not filled); ``ms_low`` (B, 8, ceil(P / ratio), ceil(P / ratio)) the degraded MS
    before upsampling, padded likewise (its real size is ``h / ratio`` x ``w / ratio`` for
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
        self.flips = SampleFlips((*self.spatial_keys, "ms_low"))

    @property
    def input_sensors(self) -> tuple[str, ...]:
        """The degraded MS (upsampled) and the degraded PAN."""
        return self.ms_sensor, self.pan_sensor

    @property
    def target_info(self) -> dict[str, Any]:
        """Image regression of the original MS (11-bit, data range 2047)."""
        sensor = get_sensor(self.ms_sensor)
        return {
            "task": "image_regression",
            "sensor": sensor.name,
            "channels": sensor.num_bands,
            "band_names": sensor.band_names,
            "data_range": self.data_range,
            "ratio": self.ratio,
        }

    def _open(self, split: str) -> SpaceNet2PanMS:
        return SpaceNet2PanMS(self.root, split=split)

    def _convert(self, raw: dict[str, Tensor]) -> Sample:
        pan, ms = crop_to_ratio(raw["image_pan"], raw["image_ms"], self.ratio)
        pan_low, ms_low, ms_up = wald_degradation(pan, ms, self.ratio)
        return {
            INPUTS: {self.ms_sensor: ms_up, self.pan_sensor: pan_low},
            TARGET: ms,
            VALID: torch.ones((1, *ms.shape[-2:]), dtype=torch.bool),
            "pan_low": pan_low,
            "ms_low": ms_low,
        }

    def _pad(self, sample: Sample) -> Sample:
        padded = map_spatial(
            sample, self.spatial_keys, lambda x: _pad_bottom_right(x, self.input_px)
        )
        padded["ms_low"] = _pad_bottom_right(
            sample["ms_low"], math.ceil(self.input_px / self.ratio)
        )
        return padded

    def _train_view(self, sample: Sample, key: Any) -> Sample:
        return self._pad(self.flips(sample))

    def _eval_view(self, sample: Sample, key: Any) -> Sample:
        return self._pad(sample)
