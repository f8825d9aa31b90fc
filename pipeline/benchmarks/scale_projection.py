"""The scale bench (``python -m pipeline.benchmarks --items N``): the whole pipeline, per stage.

The whole pipeline over N small items in GeoPile-2's proportions
(:mod:`pipeline.benchmarks.scale_catalog`), per stage, with the per-item costs projected to
GeoPile-2's two million items.

Each stage runs through the command line's stage table on a dask LocalCluster of ``workers``
processes started in this process. Per stage: wall time, this process's CPU time (its
``time.process_time`` less the RSS sampler's thread and less the dask upkeep: the stage's own
code and the scheduler's and client's work for its tasks; the *serial* part) and the workers'
CPU time (``getrusage`` in every worker before and after, summed: the
*parallel* part). Items/s per core = items / (serial + parallel CPU seconds).

The dask upkeep is what the scheduler and client threads of this process spend with no task to
handle (heartbeats, event-loop ticks): measured for ``UPKEEP_PROBE_S`` seconds with the cluster
idle before the stages, as CPU seconds per wall second, and taken out of each stage's serial CPU
(rate x its wall time). It grows with time, not with items, and on a cluster the scheduler runs
in a process of its own; it is printed apart.

The projection is linear: for T items on C cores, each stage takes serial x T + parallel x T / C
seconds (serial and parallel in CPU seconds per item); the cluster's start and anything else
that does not grow with the items is left out.

The decode/encode bound is the least any build must do per item, measured in this process on
one core: read and decode each source file of a sensor the store holds (a JPEG decoded at the
smallest scale whose sides are still at least one chip, as ``Image.draft`` picks it; GeoTIFF
bands with rasterio) and encode one chunk per sensor with the store's codec, of the decoded
raster's central chip (no resampling); nothing else.
"""

from __future__ import annotations

import math
import os
import resource
import shutil
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
from dask.distributed import Client
from PIL import Image

from catalogs.sensors import get_sensor
from catalogs.store_format import open_store
from catalogs.store_shards import chunk_codec, encode_chunk
from pipeline.benchmarks.resources import tree_usage
from pipeline.benchmarks.scale_catalog import (
    PROPORTIONS,
    asset_paths,
    catalog_items,
    ensure_items,
    geopile2_counts,
)
from pipeline.benchmarks.suite import MIB, Progress, run_dir, to_stderr
from pipeline.build_lock import build_lock
from pipeline.cluster import executor, keep_freed_memory
from pipeline.params import PipelineParams, load_params

STAGES = ("discover", "fetch", "coregister", "shard", "validate")
TARGET_ITEMS = 2_000_000
TARGET_CORES = 64
SUMMARY_KEYS = (
    "items",
    "items_per_s_per_core",
    "serial_s_per_million",
    "work_files_per_1000_items",
    "projected_hours_2m_items_64_cores",
    "decode_encode_bound_items_per_s_per_core",
    "dask_upkeep_cpu_s_per_wall_s",
)
UPKEEP_PROBE_S = 5.0  # the cluster idle this long before the stages: the dask upkeep
BOUND_MAX_ITEMS = 2000  # the bound is measured on every k-th item, at most this many


@dataclass(frozen=True)
class ScaleConfig:
    """The command's options."""

    items: int = 20_000
    seed: int = 0
    workers: int = 2
    params_path: Path = Path("params.yaml")
    bench_dir: Path = Path("data/bench")
    bound_max_items: int = BOUND_MAX_ITEMS


@dataclass(frozen=True)
class StageRun:
    """One stage's wall time and CPU seconds: this process's (serial) and the workers'."""

    name: str
    wall_s: float
    serial_cpu_s: float
    parallel_cpu_s: float
    upkeep_cpu_s: float = 0.0  # the dask upkeep taken out of this process's CPU

    def items_per_s_per_core(self, items: int) -> float:
        """``items`` per CPU second of this process and the workers together."""
        return items / max(self.serial_cpu_s + self.parallel_cpu_s, 1e-9)


def projected_seconds(
    stages: list[StageRun], items: int, target_items: int = TARGET_ITEMS, cores: int = TARGET_CORES
) -> float:
    """Linear projection of the build's seconds to ``target_items`` on ``cores``.

    The sum over stages of serial CPU per item x target_items plus parallel CPU per item x
    target_items / cores.
    """
    return sum(target_items * (s.serial_cpu_s + s.parallel_cpu_s / cores) / items for s in stages)


@dataclass(frozen=True)
class ScaleResult:
    """The scale bench's figures: the input, every stage's run, the files, the bound."""

    config: ScaleConfig
    catalog: Path
    input_bytes: int
    render_s: float
    cluster_start_s: float
    stages: list[StageRun]
    work_files: int
    store_files: int
    peak_rss_bytes: int
    bound_items: int
    bound_cpu_s: float
    upkeep_cpu_per_wall_s: float = 0.0

    def summary(self) -> dict[str, Any]:
        """The summary figures, by the names of ``SUMMARY_KEYS``, in that order."""
        items = self.config.items
        values = {
            "items": items,
            "items_per_s_per_core": {
                s.name: round(s.items_per_s_per_core(items), 3) for s in self.stages
            },
            "serial_s_per_million": 1e6 * sum(s.serial_cpu_s for s in self.stages) / items,
            "work_files_per_1000_items": 1000.0 * self.work_files / items,
            "projected_hours_2m_items_64_cores": projected_seconds(self.stages, items) / 3600,
            "decode_encode_bound_items_per_s_per_core": self.bound_items / self.bound_cpu_s,
            "dask_upkeep_cpu_s_per_wall_s": self.upkeep_cpu_per_wall_s,
        }
        return {key: values[key] for key in SUMMARY_KEYS}

    def stage(self, name: str) -> StageRun:
        """The run of the stage called ``name``."""
        return next(s for s in self.stages if s.name == name)

    def ratio_to_bound(self) -> float:
        """(coregister + shard CPU per item) / (bound CPU per item)."""
        build = (
            sum(
                self.stage(n).serial_cpu_s + self.stage(n).parallel_cpu_s
                for n in ("coregister", "shard")
            )
            / self.config.items
        )
        return build / (self.bound_cpu_s / self.bound_items)


def scale_params(config: ScaleConfig, catalog: Path, run: Path) -> PipelineParams:
    """The parameter file's pipeline, reading ``catalog`` and writing into ``run``."""
    return load_params(
        config.params_path,
        {
            "catalog": str(catalog),
            "api_url": None,
            "collections": list(PROPORTIONS),
            "bbox": None,
            "datetime": None,
            "work_dir": str(run / "work"),
            "store": str(run / "geopile2.zarr"),
            "reports_dir": str(run / "reports"),
            "workers": config.workers,
        },
    )


def run_scale(config: ScaleConfig, progress: Progress = to_stderr) -> ScaleResult:
    """Render (or reuse) the input, build it stage by stage, count the files, measure the bound.

    The bound is the decode/encode bound.
    """
    from pipeline.__main__ import _stage  # the command line's stage table

    if config.items < 1 or config.workers < 1:
        raise ValueError("the scale bench needs at least 1 item and 1 dask worker")
    keep_freed_memory()
    progress(f"input: {config.items} items (cached under {config.bench_dir}/scale)")
    start = time.perf_counter()
    catalog = ensure_items(config.bench_dir, config.items, config.seed)
    render_s = time.perf_counter() - start
    items = list(catalog_items(catalog))
    input_bytes = sum(
        path.stat().st_size for item in items for path in asset_paths(catalog, item).values()
    )
    run = run_dir(config.bench_dir / "scale" / "runs")
    try:
        params = scale_params(config, catalog, run)
        stages: list[StageRun] = []
        with tree_usage() as usage, build_lock(params):
            start = time.perf_counter()
            with executor(config.workers) as ex:
                cluster_start_s = time.perf_counter() - start
                upkeep = _upkeep_cpu_per_wall_s()
                functions = {name: _stage(name) for name in STAGES}  # (imports: not timed)
                for name in STAGES:
                    progress(f"{name} ...")
                    stages.append(
                        _timed_stage(
                            name, lambda n=name: functions[n](params, ex, False), ex.client, upkeep
                        )
                    )
                    progress(f"{name}: {stages[-1].wall_s:.1f} s")
        work_files = _count_files(params.work_dir)
        store_files = _count_files(params.store)
        sensors = set(open_store(params.store).group_keys())
    finally:
        shutil.rmtree(run, ignore_errors=True)
    progress("decode/encode bound, 1 core ...")
    step = math.ceil(len(items) / config.bound_max_items)
    subset = items[::step]
    bound_cpu_s = decode_encode_cpu_seconds(catalog, subset, sensors, _chip_px(params))
    return ScaleResult(
        config,
        catalog,
        input_bytes,
        render_s,
        cluster_start_s,
        stages,
        work_files,
        store_files,
        usage.peak_rss_bytes,
        len(subset),
        bound_cpu_s,
        upkeep,
    )


def _upkeep_cpu_per_wall_s() -> float:
    """CPU seconds per wall second this process spends with the cluster up and idle."""
    cpu, start = time.process_time() - _sampler_cpu_seconds(), time.perf_counter()
    time.sleep(UPKEEP_PROBE_S)
    return (time.process_time() - _sampler_cpu_seconds() - cpu) / (time.perf_counter() - start)


def _timed_stage(
    name: str, run: Callable[[], object], client: Client, upkeep_per_wall_s: float = 0.0
) -> StageRun:
    workers_before = client.run(_cpu_seconds)
    serial = time.process_time() - _sampler_cpu_seconds()
    start = time.perf_counter()
    run()
    wall = time.perf_counter() - start
    serial = time.process_time() - _sampler_cpu_seconds() - serial
    upkeep = min(serial, upkeep_per_wall_s * wall)
    workers_after = client.run(_cpu_seconds)
    parallel = sum(
        after - workers_before[worker]
        for worker, after in workers_after.items()
        if worker in workers_before
    )
    return StageRun(name, wall, serial - upkeep, parallel, upkeep)


def _sampler_cpu_seconds() -> float:
    """CPU seconds of the RSS sampler's thread (:func:`tree_usage`).

    Measuring, not building, so taken out of this process's figure.
    """
    return sum(
        time.clock_gettime(time.pthread_getcpuclockid(thread.ident))
        for thread in threading.enumerate()
        if thread.name == "tree-usage" and thread.ident is not None
    )


def _cpu_seconds() -> float:
    """User + system CPU seconds of this process (run in each dask worker)."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _count_files(folder: Path) -> int:
    return sum(len(files) for _, _, files in os.walk(folder))


def _chip_px(params: PipelineParams) -> int:
    sizes = {params.pictures.chip_px, *(g.chip_px for g in params.coregister.sources.values())}
    if len(sizes) != 1:
        raise ValueError(f"the bound assumes one chip size for every source, got {sizes}")
    return sizes.pop()


def decode_encode_cpu_seconds(
    catalog: Path, items: list[dict[str, Any]], sensors: set[str], chip_px: int
) -> float:
    """CPU seconds (this process) to decode ``items``' files of ``sensors`` and encode a chip.

    Every file of ``items`` that holds one of ``sensors`` is read and decoded, and each one's
    central ``chip_px`` chip encoded with the store's codec.
    """
    codecs: dict[str, Any] = {}
    start = time.process_time()
    for item in items:
        paths = asset_paths(catalog, item)
        for key, asset in item["assets"].items():
            sensor = asset.get("msgfm:sensor")
            if sensor not in sensors:
                continue
            pixels = _decode(paths[key], chip_px).astype(get_sensor(sensor).dtype, copy=False)
            if sensor not in codecs:
                codecs[sensor] = chunk_codec(pixels.dtype)
            encode_chunk(_central(pixels, chip_px), codecs[sensor])
    return time.process_time() - start


def _decode(path: Path, chip_px: int) -> np.ndarray:
    """(bands, rows, cols) of a picture file.

    A JPEG decoded at the smallest scale keeping ``chip_px``, or every band of a GeoTIFF.
    """
    if path.suffix.lower() in (".jpg", ".jpeg"):
        with Image.open(path) as image:
            image.draft("RGB", (chip_px, chip_px))
            return np.moveaxis(np.asarray(image.convert("RGB")), -1, 0)
    with rasterio.open(path) as dataset:
        return dataset.read()


def _central(pixels: np.ndarray, chip_px: int) -> np.ndarray:
    rows, cols = pixels.shape[1:]
    top, left = max(rows - chip_px, 0) // 2, max(cols - chip_px, 0) // 2
    return np.ascontiguousarray(pixels[:, top : top + chip_px, left : left + chip_px])


def format_scale_report(result: ScaleResult) -> str:
    """The per-stage table, the file counts and the projection, for people."""
    config, summary = result.config, result.summary()
    items = config.items
    header = (
        f"{'stage':11s} {'wall s':>8s} {'serial CPU s':>12s} {'workers CPU s':>13s} "
        f"{'items/s/core':>12s} {'ms/item ser.':>12s} {'ms/item par.':>12s}"
    )
    lines = [
        f"input: {items} items ({_mix(items)}; no MDAS: its few scenes are not small items), "
        f"{result.input_bytes / MIB:.0f} MiB, at {result.catalog} (rendering or finding it: "
        f"{result.render_s:.1f} s, not measured)",
        f"build: {config.workers} dask worker processes, {len(os.sched_getaffinity(0))} cores "
        f"here; the cluster started in {result.cluster_start_s:.1f} s (not in the figures)",
        "",
        header,
        "-" * len(header),
    ]
    for s in result.stages:
        lines.append(
            f"{s.name:11s} {s.wall_s:8.2f} {s.serial_cpu_s:12.2f} "
            f"{s.parallel_cpu_s:13.2f} {s.items_per_s_per_core(items):12.1f} "
            f"{1000 * s.serial_cpu_s / items:12.3f} "
            f"{1000 * s.parallel_cpu_s / items:12.3f}"
        )
    total = sum(s.wall_s for s in result.stages)
    lines += [
        f"{'all':11s} {total:8.2f}",
        "",
        "serial = this process's CPU (stage code, dask scheduler and client; the RSS sampler's "
        "thread and the dask upkeep left out); parallel = the workers' CPU",
        f"dask upkeep left out of serial: {result.upkeep_cpu_per_wall_s:.3f} CPU s per wall s "
        f"(the scheduler and client idle, measured for {UPKEEP_PROBE_S:.0f} s before the "
        f"stages), {sum(s.upkeep_cpu_s for s in result.stages):.1f} CPU s in all: it grows "
        "with time, not items, and a cluster's scheduler has a process of its own",
        f"files: work dir {result.work_files} ({summary['work_files_per_1000_items']:.1f} per "
        f"1,000 items), store {result.store_files} "
        f"({1000 * result.store_files / items:.1f} per 1,000 items)",
        f"peak RSS of this process and its descendants: {result.peak_rss_bytes / MIB:.0f} MiB",
        f"serial CPU per million items: {summary['serial_s_per_million']:.0f} s",
        f"projected wall time for {TARGET_ITEMS:,} items on {TARGET_CORES} cores: "
        f"{summary['projected_hours_2m_items_64_cores']:.2f} h (linear extrapolation: per stage "
        f"serial CPU/item x {TARGET_ITEMS:,} + workers' CPU/item x {TARGET_ITEMS:,} / "
        f"{TARGET_CORES}; fixed costs such as the cluster's start left out)",
        f"decode/encode bound: {summary['decode_encode_bound_items_per_s_per_core']:.1f} items/s "
        f"per core (read + decode each stored sensor's file, encode its chunk; measured on "
        f"{result.bound_items} of the items, 1 core, {result.bound_cpu_s:.2f} CPU s)",
        f"coregister + shard CPU per item / bound CPU per item: {result.ratio_to_bound():.2f}",
    ]
    return "\n".join(lines)


def _mix(items: int) -> str:
    return ", ".join(f"{count} {name}" for name, count in geopile2_counts(items).items())
