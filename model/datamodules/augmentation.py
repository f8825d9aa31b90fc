"""kornia crops and flips applied alike to a task sample's inputs and the keys on their grid.

The random parameters are drawn with torch's global generator, one scalar call each, in a fixed
order (a crop's top, then its left; a coin for the left-right flip, then one for the up-down
flip), and handed to kornia as its parameters; kornia's own draws are made on a forked generator
and overwritten, so they leave the global one as it was. Crops slice (no resampling) and flips
reverse, so floating inputs and targets keep their values, and integer or boolean targets pass
as kornia masks, keeping their dtype.

kornia converts an integer or boolean mask to float, whole, on every call, and its machinery
costs a few milliseconds a call whatever the size: a data module that cuts many items out of
one large sample (Vaihingen's areas) keeps such a target as float until it is cut.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import kornia.augmentation as K
import torch
from torch import Tensor

from model.datamodules.base import INPUTS, Sample


def _as_batch(values: Tensor) -> Tensor:
    """A (C, H, W) or (H, W) tensor as a kornia batch of one, (1, C, H, W)."""
    return values[None] if values.dim() == 3 else values[None, None]


def _data_key(values: Tensor) -> str:
    """The kornia data key of a tensor: ``input`` if it holds floats, else ``mask``."""
    return "input" if values.is_floating_point() else "mask"


def augment(
    augmentation: K.AugmentationSequential,
    sample: Sample,
    keys: Sequence[str],
    overrides: Sequence[Mapping[str, Tensor]],
) -> Sample:
    """Apply a kornia sequence alike to a sample's inputs and ``keys``, with set parameters.

    Args:
        augmentation: the kornia sequence (``data_keys=None``).
        sample: a task sample; its tensors are (C, H, W) or (H, W).
        keys: its keys besides the inputs to transform (the rest is kept as it is).
        overrides: per augmentation of the sequence, the parameters to set (kornia draws the
            others, on a forked generator).

    Returns:
        the transformed sample (a new dict), each tensor in its own shape and dtype
    """
    names = list(sample[INPUTS])
    tensors = [sample[INPUTS][name] for name in names] + [sample[key] for key in keys]
    batches = [_as_batch(values) for values in tensors]
    with torch.random.fork_rng(devices=[]):
        params = augmentation.forward_parameters(batches[0].shape)
    for param, override in zip(params, overrides, strict=True):
        param.data.update(override)
    out = augmentation(*batches, params=params, data_keys=[_data_key(t) for t in tensors])
    out = [out] if isinstance(out, Tensor) else out
    out = [
        result.reshape(result.shape[-values.dim() :])
        for result, values in zip(out, tensors, strict=True)
    ]
    augmented = dict(sample, **dict(zip(keys, out[len(names) :], strict=True)))
    augmented[INPUTS] = dict(zip(names, out[: len(names)], strict=True))
    return augmented


class SampleCrop:
    """A square crop of a sample's grid (its inputs and ``keys``), by kornia."""

    def __init__(self, size: int, keys: Sequence[str] = ()) -> None:
        """Initialise the crop.

        Args:
            size: the crop's side in pixels.
            keys: the sample's keys besides the inputs on the inputs' grid.
        """
        self.size = size
        self.keys = tuple(keys)
        self._at = K.AugmentationSequential(K.RandomCrop((size, size)), data_keys=None)
        self._centre = K.AugmentationSequential(K.CenterCrop((size, size)), data_keys=None)

    def at(self, sample: Sample, top: int, left: int) -> Sample:
        """The crop whose top-left pixel is (``top``, ``left``).

        Args:
            sample: a task sample that holds the crop.
            top: the crop's first row.
            left: the crop's first column.

        Returns:
            the cropped sample
        """
        right, bottom = left + self.size - 1, top + self.size - 1
        corners = torch.tensor(
            [[[left, top], [right, top], [right, bottom], [left, bottom]]], dtype=torch.float32
        )
        return augment(self._at, sample, self.keys, [{"src": corners}])

    def random(self, sample: Sample) -> Sample:
        """A crop drawn uniformly: its top, then its left, each by ``torch.randint``.

        Raises:
            ValueError: if the sample is smaller than the crop.
        """
        height, width = self._check_fits(sample)
        top = int(torch.randint(height - self.size + 1, ()))
        left = int(torch.randint(width - self.size + 1, ()))
        return self.at(sample, top, left)

    def centre(self, sample: Sample) -> Sample:
        """The centre crop (from row ``(H - size) // 2`` and column ``(W - size) // 2``).

        Raises:
            ValueError: if the sample is smaller than the crop.
        """
        self._check_fits(sample)
        return augment(self._centre, sample, self.keys, [{}])

    def _check_fits(self, sample: Sample) -> tuple[int, int]:
        """The sample's rows and columns, checked to hold the crop."""
        height, width = next(iter(sample[INPUTS].values())).shape[-2:]
        if min(height, width) < self.size:
            raise ValueError(f"a {height} x {width} sample is smaller than input_px={self.size}")
        return height, width


class SampleFlips:
    """Random left-right and up-down flips of a sample's inputs and ``keys``, by kornia.

    The keys may lie on other grids than the inputs (a coarser image): each tensor is flipped
    about its own centre.
    """

    def __init__(self, keys: Sequence[str] = ()) -> None:
        """Initialise the flips.

        Args:
            keys: the sample's keys besides the inputs to flip with them.
        """
        self.keys = tuple(keys)
        self._flips = K.AugmentationSequential(
            K.RandomHorizontalFlip(), K.RandomVerticalFlip(), data_keys=None
        )

    def __call__(self, sample: Sample) -> Sample:
        """Flip left-right, then up-down, each if ``torch.rand(()) < 0.5`` (drawn in that order).

        Args:
            sample: a task sample.

        Returns:
            the flipped sample (a new dict)
        """
        coins = [float(torch.rand(()) < 0.5) for _ in range(2)]
        return augment(
            self._flips, sample, self.keys, [{"batch_prob": torch.tensor([coin])} for coin in coins]
        )
