"""Crops and flips applied alike to a task sample's inputs and the keys on their grid."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from model.datamodules.base import INPUTS, Sample, map_spatial


def _grid_size(sample: Sample) -> tuple[int, int]:
    """Rows and columns of the sample's input grid."""
    first = next(iter(sample[INPUTS].values()))
    return first.shape[-2], first.shape[-1]


def crop(sample: Sample, keys: Sequence[str], top: int, left: int, size: int) -> Sample:
    return map_spatial(sample, keys, lambda x: x[..., top:top + size, left:left + size])


def check_fits(sample: Sample, size: int) -> tuple[int, int]:
    height, width = _grid_size(sample)
    if min(height, width) < size:
        raise ValueError(f"a {height} x {width} sample is smaller than input_px={size}")
    return height, width


def random_crop(sample: Sample, keys: Sequence[str], size: int) -> Sample:
    height, width = check_fits(sample, size)
    top = int(torch.randint(height - size + 1, ()))
    left = int(torch.randint(width - size + 1, ()))
    return crop(sample, keys, top, left, size)


def center_crop(sample: Sample, keys: Sequence[str], size: int) -> Sample:
    height, width = check_fits(sample, size)
    return crop(sample, keys, (height - size) // 2, (width - size) // 2, size)


def random_flip(sample: Sample, keys: Sequence[str]) -> Sample:
    """Flip left-right, then up-down, each with probability 0.5."""
    for dim in (-1, -2):
        if torch.rand(()) < 0.5:
            sample = map_spatial(sample, keys, lambda x, dim=dim: x.flip(dim))
    return sample

