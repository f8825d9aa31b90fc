"""The loader benchmark: our GeoPile-2 loader against the TorchGeo path and the decode bound.

All three read the same paired Sentinel-2 + Sentinel-1 chips, one pair per sample:

* ours: :class:`~model.datasets.geopile2.GeoPile2` (S2 chips with their S1 partner) through
  a plain ``DataLoader`` with :func:`~model.datasets.batching.collate_by_sensor`, in the main
  process and with worker processes, chips as stored (as pretraining loads them) or in the
  model's unit;
* TorchGeo: what a TorchGeo user does without our store: an ``IntersectionDataset`` of an S2
  and an S1 ``RasterDataset`` over the source COGs (S1 warped onto the S2 grid on the fly)
  with ``RandomGeoSampler`` at the same chip size (:mod:`model.benchmarks.torchgeo_path`);
* the decode bound: the same chunks' compressed bytes, already in memory, decoded with the
  store's own codec into a reused buffer in a tight loop: the most any reader of this store
  can do on one core's worth of Blosc.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Generator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numcodecs.blosc
import numpy as np
import psutil
import torch
from torch.utils.data import DataLoader

from catalogs.store_shards import chunk_codec
from model.datasets.batching import collate_by_sensor
from model.datasets.geopile2 import GeoPile2

S2_SENSOR = "sentinel2_l2a"
S1_SENSOR = "sentinel1_grd"


@dataclass(frozen=True)
class Rate:
    """A measured throughput, with the CPU time every process that loaded it spent."""

    samples: int
    seconds: float
    cpu_seconds: float | None = None  # None: not measured

    @property
    def per_s(self) -> float:
        """Samples per second of wall-clock time."""
        return self.samples / self.seconds

    @property
    def per_cpu_s(self) -> float | None:
        """Samples per CPU-second: the per-core rate, whatever else runs on the machine."""
        return None if self.cpu_seconds is None else self.samples / self.cpu_seconds


def paired_dataset(store: Path, verify: bool = True, stored: bool = False) -> GeoPile2:
    """Every Sentinel-2 chip of ``store`` that has a Sentinel-1 partner, with that partner.

    Each chunk's checksum is checked unless ``verify`` is False; chips are as stored if
    ``stored``.

    Raises:
        ValueError: when the store has no such pair.
    """
    dataset = GeoPile2(
        store, sensors=[S2_SENSOR], split="all", paired_only=True, verify=verify, stored=stored
    )
    if not len(dataset) or f"image_{S1_SENSOR}" not in dataset[0]:
        raise ValueError(f"{store}: no {S2_SENSOR} chip paired with a {S1_SENSOR} chip")
    return dataset


def time_ours(
    dataset: GeoPile2,
    passes: int,
    batch_size: int,
    num_workers: int,
    seed: int = 0,
    pin_memory: bool = False,
) -> Rate:
    """Samples per second of ``passes`` shuffled passes over ``dataset`` through a DataLoader.

    The first batch, which starts the workers, is not timed; the CPU time is this process's
    (its pin-memory thread included) and its workers'.
    """
    generator = torch.Generator().manual_seed(seed)
    loader = DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=True,
        generator=generator,
        num_workers=num_workers,
        collate_fn=collate_by_sensor,
        persistent_workers=num_workers > 0,
        pin_memory=pin_memory,
    )
    batches = _endless(loader)
    next(batches)
    workers = psutil.Process().children()
    samples, start, cpu = 0, time.perf_counter(), _cpu_seconds(workers)
    while samples < passes * len(dataset):
        batch = next(batches)
        samples += batch["sensors"][S2_SENSOR]["image"].shape[0]
    rate = Rate(samples, time.perf_counter() - start, _cpu_seconds(workers) - cpu)
    batches.close()  # with the return, frees the loader: its workers end here
    return rate


def _cpu_seconds(workers: list[psutil.Process]) -> float:
    """CPU time of this process and of ``workers``, user and system."""
    times = [worker.cpu_times() for worker in workers]
    return time.process_time() + sum(t.user + t.system for t in times)


def _endless(loader: DataLoader) -> Generator[dict[str, Any], None, None]:
    while True:  # with persistent_workers, every pass reuses the same workers
        yield from loader


def time_decode_bound(dataset: GeoPile2, passes: int) -> Rate:
    """Samples per second of decoding each pair's two chunks, from memory, into reused buffers.

    The chunks are decoded with the store's codec: no I/O, no conversion, no allocation.
    """
    jobs: list[tuple[Callable[..., object], bytes, np.ndarray]] = []
    for index in range(len(dataset)):
        sensor, chip = dataset.locate(index)
        for name, number in [(sensor, chip), *dataset.partners_of(sensor, chip)]:
            reader = dataset.chip_reader(name)
            codec = chunk_codec(reader.layout.dtype)
            jobs.append((codec.decode, bytes(reader.chunk(number)), reader.empty()[0]))
    for decode, data, out in jobs:  # warm up
        decode(data, out=out)
    start, cpu = time.perf_counter(), time.process_time()
    for _ in range(passes):
        for decode, data, out in jobs:
            decode(data, out=out)
    return Rate(passes * len(dataset), time.perf_counter() - start, time.process_time() - cpu)


@contextlib.contextmanager
def one_thread_per_process() -> Iterator[None]:
    """Blosc and torch on one thread in this process while inside.

    DataLoader workers already run so. Blosc's single-threaded context
    (``numcodecs.blosc.use_threads = False``, which zarr also sets on import) and
    ``torch.set_num_threads(1)``.
    """
    blosc_threads, torch_threads = numcodecs.blosc.use_threads, torch.get_num_threads()
    numcodecs.blosc.use_threads = False
    torch.set_num_threads(1)
    try:
        yield
    finally:
        numcodecs.blosc.use_threads = blosc_threads
        torch.set_num_threads(torch_threads)


def interleaved(runs: dict[str, Callable[[], Rate]], rounds: int) -> dict[str, list[Rate]]:
    """Each of ``runs`` ``rounds`` times, in turn (A B C A B C ...).

    So a change in the machine's load falls on all of them alike.
    """
    rates: dict[str, list[Rate]] = {name: [] for name in runs}
    for _ in range(rounds):
        for name, run in runs.items():
            rates[name].append(run())
    return rates
