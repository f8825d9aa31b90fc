"""Per-band statistics in one streaming pass.

Computed per location when its chips are cut (and kept in its chip file), added up by the shard
stage.

Each part (a location's chips) gives count, mean and sum of squared deviations per band
(float64) and a histogram (sorted bin keys and counts); :class:`StatsAccumulator` adds parts up
in any order with the same result. Percentiles come from the histograms:

- integer dtypes of up to 16 bits: one bin per value, so percentiles are exact;
- floating dtypes (and wider integers): the value as float32, binned by the top
  :data:`FLOAT_BIN_BITS` bits of its order-preserving bit pattern (sign, 8 exponent bits and 11
  mantissa bits). Bins need no range known in advance, suit any unit (dB, metres), and are at
  most 2**-11 (0.05 %) of the value wide; a percentile is within one bin width of the exact one.

Nodata (the registry's) and non-finite values are excluded.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from PIL import Image

from catalogs.store_format import STAT_PERCENTILES, BandStatistics

FLOAT_BIN_BITS = 20
_HALF = 1 << (FLOAT_BIN_BITS - 1)  # float keys from here on are of non-negative values
_SPLIT_SPAN = 1 << 16  # keys spanning more bins than this are counted per sign
_FLOAT_SHIFT = 32 - FLOAT_BIN_BITS
_SIGN = np.uint32(0x80000000)


def exact_bins(dtype: np.dtype) -> bool:
    """Whether ``dtype`` is histogrammed with one bin per value (exact percentiles)."""
    return np.issubdtype(dtype, np.integer) and dtype.itemsize <= 2


def bin_keys(values: np.ndarray) -> np.ndarray:
    """Non-negative, order-preserving integer histogram bin of each value (see module doc)."""
    if exact_bins(values.dtype):
        offset = int(np.iinfo(values.dtype).min)
        return values if offset == 0 else values.astype(np.int32) - offset
    bits = values.astype(np.float32, copy=False).view(np.uint32)
    keys = bits >> np.uint32(31)  # then: all ones for negatives, the sign bit for positives
    keys *= np.uint32(0x7FFFFFFF)
    keys |= _SIGN
    keys ^= bits
    keys >>= np.uint32(_FLOAT_SHIFT)
    return keys


def bin_values(keys: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """The value each bin stands for (the value itself when exact, else the bin's middle)."""
    if exact_bins(dtype):
        return keys.astype(np.float64) + int(np.iinfo(dtype).min)
    middle = ((keys << _FLOAT_SHIFT) | (1 << (_FLOAT_SHIFT - 1))).astype(np.uint32)
    bits = np.where(middle & _SIGN, middle & ~_SIGN, ~middle)
    return bits.view(np.float32).astype(np.float64)


@dataclass(frozen=True)
class Histogram:
    """Sparse histogram of one band: sorted bin keys and the number of values in each."""

    keys: np.ndarray
    counts: np.ndarray

    @classmethod
    def of_keys(cls, keys: np.ndarray, drop: int | None = None) -> Histogram:
        """The histogram of 1-D bin ``keys``, leaving out bin ``drop`` (a nodata value)."""
        return cls.of_dense(np.bincount(keys), drop)

    @classmethod
    def of_dense(cls, dense: np.ndarray, drop: int | None = None) -> Histogram:
        """The histogram of the counts ``dense[key]``, leaving out bin ``drop``."""
        if drop is not None and 0 <= drop < len(dense):
            dense[drop] = 0
        used = np.flatnonzero(dense)
        return cls(used.astype(np.int64), dense[used].astype(np.int64))

    def order_statistics(self, ranks: np.ndarray, dtype: np.dtype) -> np.ndarray:
        """The values at 0-based ``ranks`` of the sorted data this histogram counts."""
        index = np.searchsorted(np.cumsum(self.counts), ranks, side="right")
        return bin_values(self.keys[index], dtype)


def percentiles_of(
    histogram: Histogram, count: int, dtype: np.dtype, qs: tuple[int, ...] = STAT_PERCENTILES
) -> np.ndarray:
    """``np.percentile(data, qs)`` (linear method) of the data ``histogram`` counts.

    The same arithmetic as numpy's, so the result is exactly numpy's when bins are exact.
    """
    virtual = (count - 1) * (np.asarray(qs, dtype=np.float64) / 100)
    below = np.floor(virtual)
    gamma = virtual - below
    lower = below.astype(np.int64)
    upper = np.minimum(lower + 1, count - 1)
    a = histogram.order_statistics(lower, dtype)
    b = histogram.order_statistics(upper, dtype)
    diff = b - a
    return np.where(gamma >= 0.5, b - diff * (1 - gamma), a + diff * gamma)


@dataclass(frozen=True)
class StreamingStats:
    """Statistics of the valid values of each band of some chips of one sensor (a location's).

    Attributes:
        dtype: storage dtype of the chips (decides the binning).
        count: (C,) valid values per band.
        mean: (C,) float64 mean per band (0 where count is 0).
        m2: (C,) float64 sum of squared deviations from the mean.
        histograms: one per band.
    """

    dtype: str
    count: np.ndarray
    mean: np.ndarray
    m2: np.ndarray
    histograms: tuple[Histogram, ...]

    @classmethod
    def of_chips(cls, chips: np.ndarray, nodata: float | None) -> StreamingStats:
        """Statistics of (K, C, H, W) ``chips`` with ``nodata`` (None for none) excluded."""
        measure = _exact_band if exact_bins(chips.dtype) else _float_band
        bands = [measure(chips[:, c], nodata) for c in range(chips.shape[1])]
        count, mean, m2, histograms = zip(*bands, strict=True)
        return cls(
            chips.dtype.str,
            np.array(count, dtype=np.int64),
            np.array(mean),
            np.array(m2),
            histograms,
        )


def combined_stats(parts: list[StreamingStats]) -> StreamingStats:
    """The statistics of the union of ``parts`` (one sensor's chips measured block by block).

    Histograms summed, moments combined as :class:`StatsAccumulator` combines them. One part is
    returned as it is.
    """
    if len(parts) == 1:
        return parts[0]
    bands = len(parts[0].count)
    count, mean, m2 = _combine_moments([(p.count, p.mean, p.m2) for p in parts], bands)
    histograms = []
    for band in range(bands):
        keys = np.concatenate([p.histograms[band].keys for p in parts])
        counts = np.concatenate([p.histograms[band].counts for p in parts])
        unique, inverse = np.unique(keys, return_inverse=True)
        histograms.append(
            Histogram(
                unique, np.bincount(inverse, weights=counts, minlength=len(unique)).astype(np.int64)
            )
        )
    return StreamingStats(parts[0].dtype, count, mean, m2, tuple(histograms))


class StatsAccumulator:
    """Adds up the :class:`StreamingStats` of one sensor's parts, in any order.

    Histograms are summed as integers and the moments combined with exactly rounded sums
    (``math.fsum``), so the result does not depend on the order the parts come in. Memory is one
    dense histogram per band (2**16 bins for 16-bit integers, 2**20 for floats), whatever the number
    of parts.
    """

    def __init__(self, dtype: str, bands: int) -> None:
        """Initialize a new StatsAccumulator instance.

        Args:
            dtype: the sensor's storage dtype.
            bands: the sensor's number of bands.
        """
        self.dtype = np.dtype(dtype)
        bins = 1 << (8 * self.dtype.itemsize if exact_bins(self.dtype) else FLOAT_BIN_BITS)
        self._histograms = np.zeros((bands, bins), dtype=np.int64)
        self._moments: list[np.ndarray] = []  # (P, 3, C) arrays

    def add(self, stats: StreamingStats) -> None:
        """Count the values ``stats`` describes.

        Raises:
            ValueError: when ``stats`` has another dtype or number of bands.
        """
        if np.dtype(stats.dtype) != self.dtype or len(stats.count) != len(self._histograms):
            raise ValueError(
                f"statistics of {len(stats.count)} {stats.dtype} bands do not add "
                f"to {len(self._histograms)} {self.dtype} bands"
            )
        self._add(
            np.array([(stats.count, stats.mean, stats.m2)], dtype=np.float64), stats.histograms
        )

    def add_shard(self, shard: ShardStats) -> None:
        """Count the values of a shard's parts (the same as adding each part).

        Raises:
            ValueError: when the shard's statistics have another number of bands.
        """
        if shard.moments.shape[1:] != (3, len(self._histograms)):
            raise ValueError(
                f"statistics of {shard.moments.shape[2]} bands do not add to "
                f"{len(self._histograms)} bands"
            )
        self._add(shard.moments, shard.histograms)

    def _add(self, moments: np.ndarray, histograms: Sequence[Histogram]) -> None:
        for dense, histogram in zip(self._histograms, histograms, strict=True):
            dense[histogram.keys] += histogram.counts
        self._moments.append(moments)

    def summary(self) -> BandStatistics:
        """Count, mean, population std and :data:`STAT_PERCENTILES` per band (None if empty)."""
        count, mean, m2 = _combine_moments(
            np.concatenate(self._moments) if self._moments else [], len(self._histograms)
        )
        rows = [
            percentiles_of(Histogram(np.flatnonzero(dense), dense[dense > 0]), int(n), self.dtype)
            if n
            else None
            for dense, n in zip(self._histograms, count, strict=True)
        ]
        empty = count == 0
        return BandStatistics(
            count=tuple(int(n) for n in count),
            mean=_floats(mean, empty),
            std=_floats(np.sqrt(m2 / np.maximum(count, 1)), empty),
            percentiles={
                q: tuple(None if row is None else float(row[i]) for row in rows)
                for i, q in enumerate(STAT_PERCENTILES)
            },
        )


def _combine_moments(moments: Any, bands: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Count, mean and sum of squared deviations of the union of parts, per band.

    ``moments``: per part its count, mean and sum of squared deviations per band, as nested
    sequences or a (P, 3, bands) array. The mean comes from the parts' sums, the deviations as each
    part's plus its mean's offset (Chan et al.), both summed with ``math.fsum`` (exactly rounded, so
    independent of the order).
    """
    parts = np.array(moments, dtype=np.float64).reshape(-1, 3, bands)
    counts, means, m2s = parts[:, 0], parts[:, 1], parts[:, 2]
    count = counts.sum(axis=0)
    total = np.array([math.fsum(column) for column in (counts * means).T])
    mean = total / np.maximum(count, 1)
    spread = m2s + counts * (means - mean) ** 2
    m2 = np.array([math.fsum(column) for column in spread.T])
    return count.astype(np.int64), mean, m2


_BandStats = tuple[int, float, float, Histogram]
# Values of one band taken at a time: numpy's temporaries (bincount's int64 copy of its input,
# float64 deviations) stay in the CPU's cache instead of spanning all the chips.
BLOCK_VALUES = 1 << 18


def _blocks(band: np.ndarray) -> list[np.ndarray]:
    """A (K, H, W) band of some chips as 1-D blocks of about :data:`BLOCK_VALUES` values."""
    per_chip = math.prod(band.shape[1:])
    step = max(1, BLOCK_VALUES // max(per_chip, 1))
    return [band[k : k + step].reshape(-1) for k in range(0, len(band), step)]


def _exact_band(band: np.ndarray, nodata: float | None) -> _BandStats:
    """Count, mean, sum of squared deviations and histogram of one band of integer chips.

    The moments come from the exact histogram.
    """
    offset = int(np.iinfo(band.dtype).min)
    drop = None if nodata is None or not float(nodata).is_integer() else int(nodata) - offset
    histogram = Histogram.of_dense(_dense_counts(band), drop)
    points = bin_values(histogram.keys, band.dtype)
    weights = histogram.counts.astype(np.float64)
    count = int(histogram.counts.sum())
    mean = float(points @ weights / count) if count else 0.0
    return count, mean, float((points - mean) ** 2 @ weights), histogram


def _dense_counts(band: np.ndarray) -> np.ndarray:
    """The number of values of a (K, H, W) band of integer chips in each bin.

    By key, up to the largest key seen, not all 2**16. 8-bit chips are counted by Pillow's
    histogram: one pass over the bytes, where ``np.bincount`` first copies them to int64 and scans
    them for their range (38 against 83 us for a 256 px chip's band, and pictures are most chips).
    """
    if band.dtype == np.uint8:
        dense = np.zeros(256, dtype=np.int64)
        for chip in band:
            dense += Image.fromarray(chip).histogram()
        return dense
    dense = np.zeros(0, dtype=np.int64)
    for block in _blocks(band):
        counts = np.bincount(bin_keys(block)).astype(np.int64, copy=False)
        if len(counts) > len(dense):
            counts[: len(dense)] += dense
            dense = counts
        else:
            dense[: len(counts)] += counts
    return dense


def _float_band(band: np.ndarray, nodata: float | None) -> _BandStats:
    """As :func:`_exact_band` for values binned approximately.

    Non-finite values and nodata are left out; the moments come from the values in float64, block by
    block, combined as parts are (:func:`_combine_moments`). Each block is counted over the span of
    keys it uses only (a few thousand bins for values of one sign and a few octaves, as dB or metres
    are), and the blocks' counts are summed per sign, so that no count spans the bins between the
    signs' keys (half the key space apart).
    """
    by_sign: dict[bool, tuple[int, np.ndarray]] = {}  # first key and counts from it
    moments = []
    for block in _blocks(band):
        keep = np.isfinite(block)
        if nodata is not None and not np.isnan(nodata):
            keep &= block != nodata
        valid = block if keep.all() else block[keep]
        if not valid.size:
            continue
        for low, counts in _key_spans(bin_keys(valid)):
            by_sign[low >= _HALF] = _added_span(by_sign.get(low >= _HALF), low, counts)
        values = valid.astype(np.float64)
        mean = values.mean()
        values -= mean
        np.square(values, out=values)
        moments.append(([valid.size], [mean], [float(values.sum())]))
    spans = [by_sign[s] for s in (False, True) if s in by_sign]
    if len(spans) == 2 and spans[0][0] + len(spans[0][1]) > spans[1][0]:
        # A span that straddles zero (-0.0 and 0.0 are neighbouring bins) went with the
        # negatives and reaches into the positives' keys: one span then.
        spans = [_added_span(spans[0], *spans[1])]
    histogram = _histogram_of_spans(spans)
    if not moments:
        return 0, 0.0, 0.0, histogram
    count, mean, m2 = _combine_moments(moments, 1)
    return int(count[0]), float(mean[0]), float(m2[0]), histogram


def _key_spans(keys: np.ndarray) -> list[tuple[int, np.ndarray]]:
    """The counts of ``keys`` as (first key, counts from it) spans.

    One, or one per sign where the values have both (their keys lie half the key space apart, and
    one span would count over all the bins between).
    """
    low, high = int(keys.min()), int(keys.max())
    if high - low < _SPLIT_SPAN or low >= _HALF or high < _HALF:
        return [(low, np.bincount(keys - np.uint32(low)))]
    below = keys < _HALF
    return [span for part in (keys[below], keys[~below]) for span in _key_spans(part)]


def _added_span(
    span: tuple[int, np.ndarray] | None, low: int, counts: np.ndarray
) -> tuple[int, np.ndarray]:
    """The counts of ``span`` and of ``counts`` from key ``low``, added up as one span.

    ``span`` is (first key, counts from it; None for none); the sum starts from the lower first key.
    """
    if span is None:
        return low, counts
    first = min(span[0], low)
    dense = np.zeros(max(span[0] + len(span[1]), low + len(counts)) - first, dtype=np.int64)
    for start, part in (span, (low, counts)):
        dense[start - first : start - first + len(part)] += part
    return first, dense


def _histogram_of_spans(spans: list[tuple[int, np.ndarray]]) -> Histogram:
    """The histogram of the counts of disjoint ``spans`` in the order of their keys.

    ``counts[i]`` values in bin ``first + i``.
    """
    parts = [(Histogram.of_dense(dense), low) for low, dense in spans]
    empty = np.empty(0, dtype=np.int64)
    return Histogram(
        np.concatenate([h.keys + low for h, low in parts] or [empty]),
        np.concatenate([h.counts for h, _ in parts] or [empty]),
    )


def _floats(values: np.ndarray, empty: np.ndarray) -> tuple[float | None, ...]:
    return tuple(None if e else float(v) for v, e in zip(values, empty, strict=True))


@dataclass(frozen=True)
class ShardStats:
    """What a shard writer returns: the statistics of some locations of ``sensor``.

    The locations whose chips of ``sensor`` begin in shard ``shard_index`` (so that every location
    is counted once), in a form cheap to send: each location's moments in one array, and the
    locations' histograms summed per band (integer sums: exactly what the accumulator would add up
    part by part).

    Attributes:
        sensor, shard_index: which shard.
        moments: (P, 3, C) float64: each part's valid count, mean and sum of squared
            deviations per band.
        histograms: per band, the sum of the parts' histograms.
    """

    sensor: str
    shard_index: int
    moments: np.ndarray
    histograms: tuple[Histogram, ...]

    @classmethod
    def of_parts(
        cls, sensor: str, shard_index: int, parts: Sequence[StreamingStats], bands: int
    ) -> ShardStats:
        """The statistics of ``parts`` (each of ``bands`` bands)."""
        moments = np.array([(p.count, p.mean, p.m2) for p in parts], dtype=np.float64).reshape(
            -1, 3, bands
        )
        return cls(
            sensor,
            shard_index,
            moments,
            tuple(summed_histogram([p.histograms[c] for p in parts]) for c in range(bands)),
        )


def summed_histogram(histograms: Sequence[Histogram]) -> Histogram:
    """The histogram of the union of the values ``histograms`` count."""
    keys = np.concatenate([h.keys for h in histograms] or [np.empty(0, dtype=np.int64)])
    if not len(keys):
        return Histogram(keys.astype(np.int64), keys.astype(np.int64))
    counts = np.concatenate([h.counts for h in histograms])
    low, high = int(keys.min()), int(keys.max())
    if high - low > _SPLIT_SPAN * 16:  # far apart: sort them instead of counting the span
        keys, where = np.unique(keys, return_inverse=True)
        summed = np.zeros(len(keys), dtype=np.int64)
        np.add.at(summed, where, counts)
        return Histogram(keys.astype(np.int64), summed)
    dense = np.zeros(high - low + 1, dtype=np.int64)
    np.add.at(dense, keys - low, counts)
    used = np.flatnonzero(dense)
    return Histogram(used.astype(np.int64) + low, dense[used])
