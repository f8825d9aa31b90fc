"""Classical baselines of the downstream tasks (model/tasks/<task>.py)."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch
from torch import Tensor

from model.tasks.classification import majority_scores
from model.tasks.cloud_removal import cloudy_input
from model.tasks.pansharpening import bicubic_upsample, brovey
from model.tasks.segmentation import majority_class


def _pansharpening_pair(seed: int = 0) -> tuple[Tensor, Tensor]:
    """(ms_up (2, 4, 16, 16), pan (2, 1, 16, 16)), positive, float64."""
    generator = torch.Generator().manual_seed(seed)
    ms_up = 0.05 + torch.rand(2, 4, 16, 16, generator=generator, dtype=torch.float64)
    pan = 0.05 + torch.rand(2, 1, 16, 16, generator=generator, dtype=torch.float64)
    return ms_up, pan


def test_majority_scores_are_label_frequencies() -> None:
    train_targets = torch.tensor([[1, 0, 0], [1, 1, 0], [0, 1, 0], [1, 0, 0]])
    assert torch.equal(majority_scores(train_targets), torch.tensor([0.75, 0.5, 0.0]))


def test_majority_class_skips_ignore_index() -> None:
    masks = torch.tensor([[[0, 0, 0, 0], [2, 2, 3, 0]], [[0, 0, 3, 3], [3, 1, 0, 0]]])
    assert majority_class(masks) == 3  # class 0 is the most frequent, but ignored
    assert majority_class(masks, ignore_index=None) == 0
    assert majority_class(masks, ignore_index=3) == 0


def test_majority_class_over_tiles_of_different_sizes() -> None:
    tiles = [torch.full((2, 3), 1), torch.full((4, 4), 5), torch.zeros(5, 5, dtype=torch.long)]
    assert majority_class(tiles) == 5


def test_cloudy_input_is_identity() -> None:
    cloudy = torch.rand(2, 13, 8, 8)
    assert cloudy_input(cloudy) is cloudy


@pytest.mark.parametrize(("size", "expected"), [(32, (32, 32)), ((24, 40), (24, 40))])
def test_bicubic_upsample_shape(size: int | tuple[int, int], expected: tuple[int, int]) -> None:
    ms_low = torch.rand(2, 4, 8, 10)
    out = bicubic_upsample(ms_low, size)
    assert out.shape == (2, 4, *expected)
    assert out.dtype == ms_low.dtype


def test_bicubic_upsample_keeps_a_constant_image() -> None:
    ms_low = torch.full((1, 2, 6, 6), 0.3, dtype=torch.float64)
    torch.testing.assert_close(
        bicubic_upsample(ms_low, 24), torch.full((1, 2, 24, 24), 0.3, dtype=torch.float64)
    )


def test_brovey_keeps_band_ratios_and_sets_intensity_to_pan() -> None:
    ms_up, pan = _pansharpening_pair()
    out = brovey(ms_up, pan)
    torch.testing.assert_close(out[:, 0] / out[:, 2], ms_up[:, 0] / ms_up[:, 2])
    torch.testing.assert_close(out[:, 1] / out[:, 3], ms_up[:, 1] / ms_up[:, 3])
    torch.testing.assert_close(out.mean(dim=1, keepdim=True), pan)


def test_brovey_weighted_intensity_equals_pan() -> None:
    ms_up, pan = _pansharpening_pair(1)
    weights = torch.tensor([1.0, 2.0, 3.0, 0.0])
    out = brovey(ms_up, pan, weights=weights)
    normalised = (weights / weights.sum()).to(out).view(1, -1, 1, 1)
    torch.testing.assert_close((out * normalised).sum(dim=1, keepdim=True), pan)
    torch.testing.assert_close(out[:, 0] / out[:, 3], ms_up[:, 0] / ms_up[:, 3])


def test_brovey_zero_intensity_is_finite() -> None:
    ms_up = torch.zeros(1, 3, 4, 4)
    assert torch.equal(brovey(ms_up, torch.ones(1, 1, 4, 4)), ms_up)


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: majority_scores(torch.zeros(4)), "train_targets must have shape"),
        (lambda: majority_scores(torch.full((2, 3), 2)), "train_targets must hold only 0 and 1"),
        (lambda: majority_class(torch.zeros(2, 2)), r"train_masks\[0\] must be an integer"),
        (lambda: majority_class(torch.full((2, 2), -1)), r"train_masks\[0\] holds negative"),
        (lambda: majority_class(torch.zeros(2, 2, dtype=torch.long)), "no pixel of a class"),
        (lambda: cloudy_input(torch.zeros(3, 8, 8)), "cloudy must have shape"),
        (lambda: bicubic_upsample(torch.zeros(4, 8, 8), 16), "ms_low must be a float tensor"),
        (lambda: bicubic_upsample(torch.zeros(1, 4, 8, 8), 0), "size must be a positive"),
        (
            lambda: brovey(torch.zeros(1, 4, 8, 8), torch.zeros(1, 8, 8)),
            r"pan must be a float tensor of shape \(1, 1, 8, 8\)",
        ),
        (lambda: brovey(torch.zeros(1, 4, 8), torch.zeros(1, 1, 8, 8)), "ms_up must be a float"),
        (
            lambda: brovey(torch.zeros(1, 4, 8, 8), torch.zeros(1, 1, 8, 8), torch.ones(3)),
            r"weights must be \(4,\)",
        ),
    ],
)
def test_errors_name_the_argument(call: Callable[[], object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        call()
