"""Tests of model.statistics: mean ± std over seeds and the paired bootstrap."""

from __future__ import annotations

import pytest

from model.statistics import mean_std, paired_difference, summarise


def test_mean_std_is_the_sample_std() -> None:
    assert mean_std([1.0, 2.0, 3.0]) == (2.0, 1.0)
    assert mean_std([4.0]) == (4.0, None)
    with pytest.raises(ValueError, match="no values"):
        mean_std([])


def test_identical_differences_give_a_zero_width_interval() -> None:
    result = paired_difference({0: 1.5, 1: 2.5, 2: 3.5}, {0: 1.0, 1: 2.0, 2: 3.0}, True)
    assert result.diff == pytest.approx(0.5)
    assert result.ci95 == pytest.approx((0.5, 0.5))
    assert result.seeds == 3 and result.excludes_zero


def test_mixed_signs_give_an_interval_around_zero() -> None:
    # Differences 1, -1, 1: the means of 3 draws are -1 (p = 1/27 > 2.5 %) to 1.
    result = paired_difference({0: 1.0, 1: 0.0, 2: 1.0}, {0: 0.0, 1: 1.0, 2: 0.0}, True)
    assert result.diff == pytest.approx(1 / 3)
    assert result.ci95 == pytest.approx((-1.0, 1.0))
    assert not result.excludes_zero


def test_lower_is_better_flips_the_sign() -> None:
    result = paired_difference({0: 1.5, 1: 2.5, 2: 3.5}, {0: 1.0, 1: 2.0, 2: 3.0}, False)
    assert result.diff == pytest.approx(-0.5)
    assert result.ci95 == pytest.approx((-0.5, -0.5))


def test_the_interval_is_deterministic_and_pairs_only_common_seeds() -> None:
    first, second = {0: 0.3, 1: 0.9, 2: 0.4, 5: 100.0}, {0: 0.1, 1: 0.2, 2: 0.6}
    result = paired_difference(first, second, True)
    assert result == paired_difference(first, second, True)
    assert result.seeds == 3
    assert result.diff == pytest.approx((0.2 + 0.7 - 0.2) / 3)
    assert -0.2 <= result.ci95[0] < result.diff < result.ci95[1] <= 0.7


def test_no_common_seed_is_refused() -> None:
    with pytest.raises(ValueError, match=r"no common seed \(first has \[0\], second has \[1\]\)"):
        paired_difference({0: 1.0}, {1: 1.0}, True)


def test_summarise_puts_the_std_beside_each_mean() -> None:
    summary = summarise(
        [{"PSNR": 20.0, "SSIM": None}, {"PSNR": 22.0, "SSIM": 0.5}, {"PSNR": 24.0, "SSIM": None}]
    )
    assert summary == {"PSNR": 22.0, "PSNR_std": 2.0, "SSIM": 0.5, "SSIM_std": None}
    assert summarise([{"MAE": None}]) == {"MAE": None, "MAE_std": None}
