"""The paper's batching: every sensor in every batch, one sub-batch per sensor.

:class:`SensorBatchSampler` yields lists of :class:`~model.datasets.geopile2.GeoPile2`
indices, each list holding chips of every sensor; :func:`collate_by_sensor` turns the samples
of such a list into one sub-batch per sensor (each with its own channel count).
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch.utils.data import Sampler

from model.datasets.geopile2 import PARTNER_PREFIX

SENSORS_KEY = "sensors"  # batch["sensors"][name]: the sub-batch of one sensor
SKIPPED_KEY = "skipped"  # batch["skipped"]: samples dropped as damaged (on_error="skip")
ROWS_PREFIX = "rows_"  # sub-batch["rows_<partner>"]: rows of the sub-batch that have it
VALID_KEY = "valid"  # sub-batch["valid"]: (B, C, H, W) bool, True where "image" holds data
VALID_PREFIX = "valid_"  # sub-batch["valid_<partner>"]: the same for "image_<partner>"
DATA_STREAM = "data"  # the augmentation's draws (the datamodule)
MODEL_STREAM = "model"  # the masks, cross-sensor choices, gate noise, drop path (the model)


def step_seed(seed: int, step: int, rank: int, stream: str) -> int:
    """A seed of one training step on one rank, for one named stream of draws.

    Every draw of the step comes from such a seed, so a run resumed at any step repeats the
    uninterrupted one. The stream (:data:`DATA_STREAM`, :data:`MODEL_STREAM`) salts it: with
    equal seeds the model's draws do not replay the augmentation's.
    """
    salt = zlib.crc32(stream.encode())  # stable across processes, unlike hash()
    return int(np.random.SeedSequence([seed, step, rank, salt]).generate_state(1)[0])


def valid_key(image_key: str) -> str:
    """The key of the validity mask of ``image`` or ``image_<partner>``."""
    if image_key == "image":
        return VALID_KEY
    return VALID_PREFIX + image_key.removeprefix(PARTNER_PREFIX)


def apportion(total: int, weights: Sequence[float]) -> list[int]:
    """``total`` split into integers proportional to ``weights`` (largest remainder)."""
    shares = np.asarray(weights, dtype=np.float64)
    exact = total * shares / shares.sum()
    counts = np.floor(exact).astype(int)
    for position in np.argsort(-(exact - counts), kind="stable")[: total - counts.sum()]:
        counts[position] += 1
    return counts.tolist()


class SensorBatchSampler(Sampler[list[int]]):
    """Batches of GeoPile-2 indices that hold every sensor, split across DDP ranks.

    An epoch draws ``N`` samples in all (``N`` = the dataset's length), shared between the
    sensors by ``shares`` (default: in proportion to their chips, so every chip appears once
    per epoch). A sensor whose share exceeds its chips is drawn again from a fresh permutation
    (oversampled); one below takes the first chips of its permutation (a different subset each
    epoch). The epoch has ``T = ceil(N / batch_size)`` steps, rounded up to a multiple of the
    number of ranks, and each sensor's draws are cut into ``T`` near-equal parts, so every
    batch holds every sensor: a sensor with fewer draws than ``min_chips_per_sensor * T`` is
    drawn up to that floor (batches then exceed ``batch_size`` by what the floor adds).
    Step ``t`` goes to rank ``t mod world_size``: ranks are disjoint, together they are the
    epoch, and each has ``T / world_size`` steps. The order depends only on (seed, epoch).
    """

    def __init__(
        self,
        sensor_counts: Mapping[str, int],
        batch_size: int,
        shares: Mapping[str, float] | None = None,
        seed: int = 0,
        num_replicas: int | None = None,
        rank: int | None = None,
        min_chips_per_sensor: int = 1,
    ) -> None:
        """Initialize a new SensorBatchSampler.

        Args:
            sensor_counts: samples per sensor, in dataset index order (``GeoPile2.sensor_counts``:
                sensor ``s`` owns indices ``offset_s .. offset_s + count_s - 1``).
            batch_size: samples per batch (per rank).
            shares: each sensor's share of an epoch's samples (normalised; default
                proportional to ``sensor_counts``). Sensors without samples are left out.
            seed: base of the shuffle; with the epoch (:meth:`set_epoch`) it fixes the order.
            num_replicas: number of ranks (default: the process group's size, else 1).
            rank: this rank (default: the process group's rank, else 0).
            min_chips_per_sensor: fewest chips of each sensor in a batch (a floor on the
                sensor's draws per epoch); it matters where each sensor's loss weighs the same
                (``MsGFM(sensor_weighting="sensor")``): one chip of a rare sensor would weigh as
                much as all the chips of a common one.

        Raises:
            ValueError: for a batch smaller than ``min_chips_per_sensor`` times the number of
                sensors, a floor below 1, a share of an unknown sensor or a negative share, or
                a rank outside ``[0, num_replicas)``.
        """
        distributed = dist.is_available() and dist.is_initialized()
        self.num_replicas = num_replicas or (dist.get_world_size() if distributed else 1)
        self.rank = (dist.get_rank() if distributed else 0) if rank is None else rank
        if not 0 <= self.rank < self.num_replicas:
            raise ValueError(f"rank {self.rank} is not in [0, {self.num_replicas})")
        offsets = np.concatenate([[0], np.cumsum(list(sensor_counts.values()))[:-1]])
        self.offsets = {
            s: int(o) for s, o in zip(sensor_counts, offsets, strict=True) if sensor_counts[s] > 0
        }
        self.counts = {s: int(sensor_counts[s]) for s in self.offsets}
        if not self.counts:
            raise ValueError("no sensor has samples to draw from")
        if min_chips_per_sensor < 1:
            raise ValueError(f"min_chips_per_sensor must be at least 1, got {min_chips_per_sensor}")
        if batch_size < min_chips_per_sensor * len(self.counts):
            raise ValueError(
                f"batch size {batch_size} cannot hold {min_chips_per_sensor} chip(s) of each of "
                f"{len(self.counts)} sensors {list(self.counts)}"
            )
        shares = dict(shares) if shares is not None else dict(self.counts)
        unknown = set(shares) - set(sensor_counts)
        if unknown or any(v < 0 for v in shares.values()):
            raise ValueError(
                f"shares {shares}: unknown sensors {sorted(unknown)} or negative "
                f"shares; sensors: {list(sensor_counts)}"
            )
        self.batch_size, self.seed, self.epoch, self.skip = batch_size, seed, 0, 0
        total = sum(self.counts.values())
        self.steps = (
            math.ceil(math.ceil(total / batch_size) / self.num_replicas) * self.num_replicas
        )
        draws = apportion(total, [shares.get(s, 0.0) for s in self.counts])
        floor = min_chips_per_sensor * self.steps
        self.draws = {s: max(d, floor) for s, d in zip(self.counts, draws, strict=True)}

    def set_epoch(self, epoch: int) -> None:
        """Set the epoch: the next iteration uses the order of (seed, epoch)."""
        if epoch != self.epoch:
            self.skip = 0
        self.epoch = epoch

    def resume(self, epoch: int, batches_done: int) -> None:
        """Continue epoch ``epoch`` after its first ``batches_done`` batches of this rank.

        A run resumed mid-epoch sees the rest of the very epoch it was cut in.
        """
        self.epoch, self.skip = epoch, batches_done

    @property
    def sampler(self) -> SensorBatchSampler:
        """This sampler itself.

        Lightning calls ``set_epoch`` on ``batch_sampler.sampler`` (never on the batch sampler), so
        each epoch is reshuffled under a Trainer too.
        """
        return self

    def __len__(self) -> int:
        """Steps of this rank per epoch."""
        return self.steps // self.num_replicas

    def epoch_batches(self) -> list[list[int]]:
        """Every batch of the epoch, for all ranks (rank ``r`` takes ``r``, ``r + R``, ...)."""
        parts = []
        for position, (sensor, count) in enumerate(self.counts.items()):
            rng = np.random.default_rng([self.seed, self.epoch, position])
            rounds = math.ceil(self.draws[sensor] / count)
            drawn = np.concatenate([rng.permutation(count) for _ in range(rounds)])
            drawn = drawn[: self.draws[sensor]] + self.offsets[sensor]
            parts.append(np.array_split(drawn, self.steps))
        return [np.concatenate([p[step] for p in parts]).tolist() for step in range(self.steps)]

    def __iter__(self) -> Iterator[list[int]]:
        """This rank's batches of the current epoch (after the skipped ones of a resume)."""
        yield from self.epoch_batches()[self.rank :: self.num_replicas][self.skip :]


def collate_by_sensor(samples: Sequence[dict[str, Any] | None]) -> dict[str, Any]:
    """Samples of several sensors -> ``{"sensors": {name: sub_batch}, "skipped": n}``.

    A sub-batch stacks its samples' ``image`` (B, C, H, W), ``index`` (B,), ``transform``
    (B, 6) and ``bounds`` (B, 4) and lists ``crs``; a partner sensor ``p`` present in some of
    the rows gives ``image_<p>`` (B_p, C_p, H, W) and ``rows_<p>`` (B_p,), the rows of the
    sub-batch it belongs to. None samples (damaged chips skipped by the dataset) are dropped
    and counted in ``skipped``.
    """
    by_sensor: dict[str, list[dict[str, Any]]] = {}
    for sample in samples:
        if sample is not None:
            by_sensor.setdefault(sample["sensor"], []).append(sample)
    batches = {sensor: _sub_batch(group) for sensor, group in by_sensor.items()}
    return {SENSORS_KEY: batches, SKIPPED_KEY: sum(s is None for s in samples)}


def _sub_batch(samples: list[dict[str, Any]]) -> dict[str, Any]:
    batch: dict[str, Any] = {
        "image": stack_rows([s["image"] for s in samples]),
        "index": torch.tensor([s["index"] for s in samples]),
        "crs": [s["crs"] for s in samples],
        "transform": torch.stack([s["transform"] for s in samples]),
        "bounds": torch.stack([s["bounds"] for s in samples]),
    }
    partner_keys = sorted({k for s in samples for k in s if k.startswith(PARTNER_PREFIX)})
    for key in partner_keys:
        rows = [row for row, s in enumerate(samples) if key in s]
        batch[key] = stack_rows([samples[row][key] for row in rows])
        batch[ROWS_PREFIX + key.removeprefix(PARTNER_PREFIX)] = torch.tensor(rows)
    return batch


def stack_rows(tensors: Sequence[torch.Tensor]) -> torch.Tensor:
    """``torch.stack(tensors)``, without the copy where possible.

    No copy is made when they already are the rows 0, 1, ... of one tensor (as
    :meth:`GeoPile2.__getitems__` decodes them).
    """
    base = tensors[0]._base
    if (
        base is not None
        and base.shape[0] == len(tensors)
        and base.is_contiguous()
        and all(
            t._base is base and t.storage_offset() == row * t.numel() and t.shape == base.shape[1:]
            for row, t in enumerate(tensors)
        )
    ):
        return base
    return torch.stack(list(tensors))
