"""kornia crops and flips against a frozen copy of the slicing code they replaced.

The frozen functions below are the crop and flip helpers of the downstream data modules before
kornia: on the same seeds, the kornia augmentation must give bit-identical inputs, targets and
masks, and leave torch's global generator in the same state (so later draws do not move).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import pytest
import torch
from torch import Tensor

from model.datamodules.augmentation import SampleCrop, SampleFlips
from model.datamodules.base import Sample

KEYS = ("target", "valid", "labels")


def frozen_map(sample: Sample, keys: Sequence[str], fn: Callable[[Tensor], Tensor]) -> Sample:
    mapped = dict(sample, **{key: fn(sample[key]) for key in keys})
    mapped["inputs"] = {name: fn(values) for name, values in sample["inputs"].items()}
    return mapped


def frozen_crop(sample: Sample, keys: Sequence[str], top: int, left: int, size: int) -> Sample:
    return frozen_map(sample, keys, lambda x: x[..., top : top + size, left : left + size])


def frozen_random_crop(sample: Sample, keys: Sequence[str], size: int) -> Sample:
    height, width = next(iter(sample["inputs"].values())).shape[-2:]
    top = int(torch.randint(height - size + 1, ()))
    left = int(torch.randint(width - size + 1, ()))
    return frozen_crop(sample, keys, top, left, size)


def frozen_center_crop(sample: Sample, keys: Sequence[str], size: int) -> Sample:
    height, width = next(iter(sample["inputs"].values())).shape[-2:]
    return frozen_crop(sample, keys, (height - size) // 2, (width - size) // 2, size)


def frozen_random_flip(sample: Sample, keys: Sequence[str]) -> Sample:
    for dim in (-1, -2):
        if torch.rand(()) < 0.5:
            sample = frozen_map(sample, keys, lambda x, dim=dim: x.flip(dim))
    return sample


def make_sample(height: int, width: int, seed: int = 0) -> Sample:
    """Two sensors of different band counts, a float target, a bool mask, integer labels and a
    coarser image (``ms_low``, a quarter of the grid) left out of the crop keys."""
    generator = torch.Generator().manual_seed(seed)
    return {
        "inputs": {
            "ms": torch.rand(8, height, width, generator=generator),
            "pan": torch.rand(1, height, width, generator=generator),
        },
        "target": torch.rand(3, height, width, generator=generator),
        "valid": torch.rand(1, height, width, generator=generator) > 0.3,
        "labels": torch.randint(6, (height, width), generator=generator),
        "ms_low": torch.rand(8, height // 4, width // 4, generator=generator),
    }


def assert_identical(new: Sample, old: Sample) -> None:
    assert new.keys() == old.keys() and new["inputs"].keys() == old["inputs"].keys()
    pairs = [(new["inputs"][n], old["inputs"][n]) for n in old["inputs"]]
    pairs += [(new[key], old[key]) for key in old if key != "inputs"]
    for got, expected in pairs:
        assert got.dtype == expected.dtype and torch.equal(got, expected)


@pytest.mark.parametrize("seed", range(12))
def test_random_crop_and_flips_match_the_frozen_code(seed: int) -> None:
    sample = make_sample(23, 29, seed)
    crop, flips = SampleCrop(9, KEYS), SampleFlips(KEYS)
    torch.manual_seed(seed)
    new = flips(crop.random(sample))
    after_new = torch.get_rng_state()
    torch.manual_seed(seed)
    old = frozen_random_flip(frozen_random_crop(sample, KEYS, 9), KEYS)
    assert torch.equal(after_new, torch.get_rng_state())
    assert_identical(new, old)
    assert new["labels"].shape == (9, 9) and new["ms_low"] is sample["ms_low"]


def test_the_draws_cover_every_flip_and_many_crops() -> None:
    sample = make_sample(12, 12)
    crop, flips = SampleCrop(4, KEYS), SampleFlips(KEYS)
    torch.manual_seed(0)
    seen = {
        (tuple(item["labels"].flatten().tolist()), bool(item["valid"].all()))
        for item in (flips(crop.random(sample)) for _ in range(64))
    }
    assert len(seen) > 20


@pytest.mark.parametrize("seed", range(8))
def test_flips_on_two_grids_match_the_frozen_code(seed: int) -> None:
    """SpaceNet 2's flips: the coarser ``ms_low`` flips with the rest, about its own centre."""
    sample = make_sample(18, 22, seed)
    keys = (*KEYS, "ms_low")
    torch.manual_seed(seed)
    new = SampleFlips(keys)(sample)
    after_new = torch.get_rng_state()
    torch.manual_seed(seed)
    assert_identical(new, frozen_random_flip(sample, keys))
    assert torch.equal(after_new, torch.get_rng_state())


def test_flips_of_the_inputs_only() -> None:
    sample = make_sample(10, 10)
    torch.manual_seed(3)
    new = SampleFlips()(sample)
    torch.manual_seed(3)
    assert_identical(new, frozen_random_flip(sample, ()))


@pytest.mark.parametrize("height, width", [(16, 16), (17, 16), (16, 19), (20, 25), (31, 30)])
def test_centre_crop_matches_the_frozen_code(height: int, width: int) -> None:
    sample = make_sample(height, width)
    state = torch.get_rng_state()
    assert_identical(SampleCrop(16, KEYS).centre(sample), frozen_center_crop(sample, KEYS, 16))
    assert torch.equal(state, torch.get_rng_state())


def test_crop_at_matches_the_frozen_code() -> None:
    sample = make_sample(24, 40)
    for top, left in [(0, 0), (8, 24), (3, 17)]:
        assert_identical(
            SampleCrop(16, KEYS).at(sample, top, left), frozen_crop(sample, KEYS, top, left, 16)
        )


def test_a_sample_smaller_than_the_crop() -> None:
    crop = SampleCrop(16, KEYS)
    for draw in (crop.random, crop.centre):
        with pytest.raises(ValueError, match="a 12 x 20 sample is smaller than input_px=16"):
            draw(make_sample(12, 20))
