"""Seed statistics for the benchmark and ablation reports: mean ± std, paired bootstrap.

Each variant is fine-tuned once per seed; two variants fine-tuned with the same seeds (same data
order and head initialisation) are compared seed by seed. The 95 % interval of their mean
difference is a percentile bootstrap over the seeds, with a fixed generator seed so that a report
is the same every time it is written.

Caveat: the bootstrap resamples the seeds' differences, so with 3 seeds it can only take values
among the means of 3 numbers drawn with replacement (10 distinct means): the interval is coarse,
always lies within [min, max] of the differences, and says little more than "all seeds agree on
the sign" or "they do not". More seeds give a finer interval.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

RESAMPLES = 10_000
BOOTSTRAP_SEED = 0
CONFIDENCE = 0.95


def mean_std(values: Sequence[float]) -> tuple[float, float | None]:
    """The mean and sample standard deviation (ddof 1) of one metric over seeds.

    Args:
        values: the metric of each seed.

    Returns:
        (mean, std); std is None with a single seed.

    Raises:
        ValueError: when ``values`` is empty.
    """
    if not values:
        raise ValueError("mean_std: no values (no seed has this metric)")
    array = np.asarray(values, dtype=np.float64)
    return float(array.mean()), float(array.std(ddof=1)) if len(array) > 1 else None


@dataclass(frozen=True)
class PairedDifference:
    """The mean difference of two variants over matching seeds and its bootstrap interval.

    Attributes:
        diff: mean over seeds of (first - second), signed so that positive means the first
            variant is better.
        ci95: the 95 % percentile bootstrap interval of ``diff`` (low, high).
        seeds: how many seeds were paired.
    """

    diff: float
    ci95: tuple[float, float]
    seeds: int

    @property
    def excludes_zero(self) -> bool:
        """Whether the interval lies strictly on one side of zero."""
        return self.ci95[0] > 0 or self.ci95[1] < 0


def paired_difference(
    first: dict[int, float],
    second: dict[int, float],
    higher_is_better: bool,
    resamples: int = RESAMPLES,
    seed: int = BOOTSTRAP_SEED,
) -> PairedDifference:
    """Compare two variants seed by seed; positive means ``first`` is better.

    Args:
        first: the first variant's metric per fine-tuning seed.
        second: the second variant's metric per fine-tuning seed.
        higher_is_better: the metric's direction (a lower-is-better difference is negated).
        resamples: bootstrap resamples of the seeds.
        seed: the bootstrap generator's seed (fixed: the same inputs give the same interval).

    Returns:
        The mean signed difference and its 95 % percentile bootstrap interval.

    Raises:
        ValueError: when the two variants share no seed, or a shared seed's value is not finite.
    """
    seeds = sorted(first.keys() & second.keys())
    if not seeds:
        raise ValueError(
            f"paired_difference: no common seed (first has {sorted(first)}, "
            f"second has {sorted(second)})"
        )
    sign = 1.0 if higher_is_better else -1.0
    differences = np.array([sign * (first[s] - second[s]) for s in seeds], dtype=np.float64)
    if not np.isfinite(differences).all():
        bad = [s for s, d in zip(seeds, differences, strict=True) if not math.isfinite(d)]
        raise ValueError(f"paired_difference: seeds {bad} have a value that is not finite")
    generator = np.random.default_rng(seed)
    picks = generator.integers(0, len(seeds), size=(resamples, len(seeds)))
    means = differences[picks].mean(axis=1)
    tail = (1 - CONFIDENCE) / 2 * 100
    low, high = np.percentile(means, [tail, 100 - tail])
    return PairedDifference(float(differences.mean()), (float(low), float(high)), len(seeds))


def summarise(per_seed: Sequence[Mapping[str, float | None]]) -> dict[str, float | None]:
    """Each metric's mean over seeds with ``<metric>_std`` beside it.

    A metric unmeasurable (None) in a seed is left out of that metric's mean; a metric
    unmeasurable in every seed is None, and so is the std of fewer than two measured seeds.

    Args:
        per_seed: the metrics of each seed (one ``metrics.json``'s ``metrics`` each).

    Returns:
        ``{metric: mean, metric + "_std": std}`` in the first seed's metric order.
    """
    summary: dict[str, float | None] = {}
    for metric in per_seed[0] if per_seed else ():
        values = [s[metric] for s in per_seed if s.get(metric) is not None]
        mean, std = mean_std(values) if values else (None, None)
        summary[metric], summary[f"{metric}_std"] = mean, std
    return summary
