"""Streaming per-band statistics: shard by shard, added up in any order, equal to numpy's."""

from __future__ import annotations

import numpy as np
import pytest

from catalogs.store_format import STAT_PERCENTILES
from pipeline.stats import (
    FLOAT_BIN_BITS,
    ShardStats,
    StatsAccumulator,
    StreamingStats,
    bin_keys,
    bin_values,
)

BIN_WIDTH = 2.0 ** -(FLOAT_BIN_BITS - 9)  # relative: 32 bits - sign - 8 exponent bits kept


def _summary(chips: np.ndarray, nodata: float | None, splits: list[int]):
    """Statistics of ``chips`` computed on the pieces between ``splits``, added up."""
    accumulator = StatsAccumulator(chips.dtype.str, chips.shape[1])
    for part in np.split(chips, splits):
        accumulator.add(StreamingStats.of_chips(part, nodata))
    return accumulator.summary()


def _valid(band: np.ndarray, nodata: float | None) -> np.ndarray:
    values = band.ravel()
    keep = np.isfinite(values) if values.dtype.kind == "f" else np.ones(values.shape, bool)
    if nodata is not None and not np.isnan(nodata):
        keep &= values != nodata
    return values[keep]


def test_uint16_statistics_equal_numpy_exactly() -> None:
    rng = np.random.default_rng(1)
    chips = rng.integers(0, 9000, size=(23, 3, 17, 19)).astype(np.uint16)
    chips[rng.random(chips.shape) < 0.1] = 0  # nodata
    summary = _summary(chips, 0, [5, 6, 18])
    for band in range(3):
        values = _valid(chips[:, band], 0)
        assert summary.count[band] == values.size
        assert summary.mean[band] == pytest.approx(values.mean(), rel=1e-12)
        assert summary.std[band] == pytest.approx(values.std(), rel=1e-12)
        for q in STAT_PERCENTILES:
            assert summary.percentiles[q][band] == np.percentile(values, q)


def test_uint8_without_nodata_keeps_zero_and_int16_uses_negative_bins() -> None:
    rng = np.random.default_rng(2)
    chips = rng.integers(0, 256, size=(9, 2, 8, 8)).astype(np.uint8)
    summary = _summary(chips, None, [4])
    assert summary.count == (9 * 64, 9 * 64)
    signed = rng.integers(-3000, 3000, size=(9, 1, 8, 8)).astype(np.int16)
    signed_summary = _summary(signed, None, [2, 7])
    values = signed.ravel()
    assert signed_summary.percentiles[1][0] == np.percentile(values, 1)
    assert signed_summary.percentiles[99][0] == np.percentile(values, 99)
    assert signed_summary.mean[0] == pytest.approx(values.mean(), rel=1e-12)


@pytest.mark.parametrize("nodata", [np.nan, -9999.0])
def test_float_statistics_within_one_bin_and_nodata_excluded(nodata: float) -> None:
    rng = np.random.default_rng(3)
    chips = rng.normal(-12.0, 4.0, size=(31, 2, 16, 16)).astype(np.float32)
    chips[0, 0, :4] = nodata
    chips[1, 1, 2, :3] = np.inf
    chips[2, 0, 5, 5] = np.nan
    summary = _summary(chips, nodata, [1, 10, 30])
    for band in range(2):
        values = _valid(chips[:, band], nodata)
        assert summary.count[band] == values.size
        assert summary.mean[band] == pytest.approx(values.astype(np.float64).mean(), rel=1e-9)
        assert summary.std[band] == pytest.approx(values.astype(np.float64).std(), rel=1e-9)
        for q in STAT_PERCENTILES:
            exact = float(np.percentile(values, q))
            assert abs(summary.percentiles[q][band] - exact) <= BIN_WIDTH * abs(exact)


def test_order_of_shards_does_not_change_a_bit() -> None:
    rng = np.random.default_rng(4)
    chips = (rng.normal(300.0, 1.0, size=(40, 1, 8, 8)) * 10).astype(np.float32)
    parts = [StreamingStats.of_chips(part, None) for part in np.split(chips, [3, 11, 12, 29])]
    summaries = []
    for order in (parts, parts[::-1], parts[2:] + parts[:2]):
        accumulator = StatsAccumulator(chips.dtype.str, 1)
        for part in order:
            accumulator.add(part)
        summaries.append(accumulator.summary())
    assert summaries[0] == summaries[1] == summaries[2]


def test_band_without_valid_values_has_null_statistics() -> None:
    chips = np.zeros((2, 2, 4, 4), dtype=np.uint16)
    chips[:, 1] = 7
    summary = _summary(chips, 0, [1])
    assert summary.count == (0, 32)
    assert summary.mean == (None, 7.0)
    assert summary.std == (None, 0.0)
    assert all(summary.percentiles[q] == (None, 7.0) for q in STAT_PERCENTILES)


def test_float_bins_keep_order_and_stand_within_a_bin_of_their_values() -> None:
    values = np.array(
        [-3e38, -1e5, -12.5, -1.0, -1e-30, -0.0, 0.0, 1e-30, 0.25, 1.0, 7.75, 1e5, 3e38],
        dtype=np.float32,
    )
    keys = bin_keys(values)
    assert (np.diff(keys) >= 0).all()
    assert keys.min() >= 0 and keys.max() < 2**FLOAT_BIN_BITS
    back = bin_values(keys, values.dtype)
    subnormal = 1e-40  # bins of +-0 reach into the subnormal numbers
    assert (np.abs(back - values) <= BIN_WIDTH * np.abs(values) + subnormal).all()


def test_uint16_bins_are_the_values() -> None:
    values = np.array([0, 1, 65535], dtype=np.uint16)
    np.testing.assert_array_equal(bin_values(bin_keys(values), values.dtype), [0, 1, 65535])


def test_adding_statistics_of_another_dtype_is_refused() -> None:
    accumulator = StatsAccumulator("<u2", 2)
    with pytest.raises(ValueError, match="do not add"):
        accumulator.add(StreamingStats.of_chips(np.zeros((1, 2, 2, 2), np.float32), None))


@pytest.mark.parametrize("dtype", [np.uint8, np.float32])
def test_shards_of_parts_add_up_to_the_parts_added_one_by_one(dtype: type) -> None:
    # What shard tasks send (moments stacked, histograms summed) gives the very same summary
    # as adding their parts one by one, whichever way the parts are grouped into shards.
    rng = np.random.default_rng(4)
    chips = (
        rng.normal(-12, 6, size=(20, 2, 9, 9))
        if dtype is np.float32
        else rng.integers(0, 256, size=(20, 2, 9, 9))
    ).astype(dtype)
    parts = [StreamingStats.of_chips(part, None) for part in np.split(chips, [3, 4, 11, 15])]
    one_by_one = StatsAccumulator(chips.dtype.str, 2)
    for part in parts:
        one_by_one.add(part)
    by_shard = StatsAccumulator(chips.dtype.str, 2)
    for index, group in enumerate((parts[3:], parts[:1], parts[1:3])):
        by_shard.add_shard(ShardStats.of_parts("s", index, group, 2))
    assert by_shard.summary() == one_by_one.summary()
    with pytest.raises(ValueError, match="statistics of 2 bands do not add to 3 bands"):
        StatsAccumulator(chips.dtype.str, 3).add_shard(ShardStats.of_parts("s", 0, parts, 2))


def _counts_of(keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    unique, counts = np.unique(keys, return_counts=True)
    return unique.astype(np.int64), counts.astype(np.int64)


@pytest.mark.parametrize(
    ("dtype", "nodata"), [(np.uint8, None), (np.uint8, 255.0), (np.uint16, 0.0), (np.int16, -7.0)]
)
def test_integer_histograms_are_the_counts_of_every_value(
    dtype: type, nodata: float | None
) -> None:
    # 8-bit chips are counted by Pillow, wider ones by np.bincount in blocks of several chips
    # (9 chips of 256 px: three blocks); either way, the counts of np.unique, nodata left out,
    # and the moments of those counts. A view with strides (every other chip) counts too.
    rng = np.random.default_rng(5)
    info = np.iinfo(dtype)
    chips = rng.integers(
        max(info.min, -3000), min(info.max, 3000) + 1, size=(18, 2, 256, 256)
    ).astype(dtype)[::2]
    stats = StreamingStats.of_chips(chips, nodata)
    for band, histogram in enumerate(stats.histograms):
        values = chips[:, band].ravel()
        values = values[values != nodata] if nodata is not None else values
        keys, counts = _counts_of(values.astype(np.int64) - int(info.min))
        np.testing.assert_array_equal(histogram.keys, keys)
        np.testing.assert_array_equal(histogram.counts, counts)
        assert histogram.keys.dtype == histogram.counts.dtype == np.int64
        assert stats.count[band] == values.size
        assert stats.mean[band] == pytest.approx(values.astype(np.float64).mean(), rel=1e-12)


@pytest.mark.parametrize("chips_count", [1, 9])
def test_float_histograms_of_both_signs_are_the_counts_of_every_bin(chips_count: int) -> None:
    # Values of both signs (dB: mostly negative), some not finite, in one block or in three:
    # each sign is counted over its own span, and the spans come out in key order.
    rng = np.random.default_rng(6)
    chips = rng.normal(-14.0, 5.0, size=(chips_count, 2, 256, 256)).astype(np.float32)
    chips[0, 0, :2] = np.nan
    chips[-1, 1, 5, :9] = -np.inf
    stats = StreamingStats.of_chips(chips, np.nan)
    for band, histogram in enumerate(stats.histograms):
        values = chips[:, band].ravel()
        values = values[np.isfinite(values)]
        assert (values > 0).any() and (values < 0).any()
        keys, counts = _counts_of(bin_keys(values))
        np.testing.assert_array_equal(histogram.keys, keys)
        np.testing.assert_array_equal(histogram.counts, counts)
        assert histogram.keys.dtype == histogram.counts.dtype == np.int64
        assert stats.count[band] == values.size


def test_a_block_straddling_zero_and_a_block_of_positives_count_each_bin_once() -> None:
    # -0.0 and 0.0 lie in neighbouring bins across the signs' boundary, so the first block's
    # one span reaches into the key range the second block's positive span starts at.
    chips = np.zeros((2, 1, 512, 512), dtype=np.float32)  # one block per chip
    chips[0, 0, 0, 0] = -0.0
    chips[1, 0, 0, :10] = 1e6
    histogram = StreamingStats.of_chips(chips, None).histograms[0]
    keys, counts = _counts_of(bin_keys(chips.ravel()))
    np.testing.assert_array_equal(histogram.keys, keys)
    np.testing.assert_array_equal(histogram.counts, counts)
