"""The bench as functions: prepare the input, run the three paths, summarise.

See ``python -m pipeline.benchmarks --help`` for what is measured.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil

from catalogs.sample.scenes import COLLECTION, SceneSet, catalog_items, ensure_scenes
from pipeline.benchmarks.paths import PathRun, run_naive, run_pipeline, run_warp_bound
from pipeline.cluster import keep_freed_memory
from pipeline.params import PipelineParams, load_params

MIB = 1 << 20
SUMMARY_KEYS = (
    "ours_chips_per_s_per_core",
    "warp_bound_chips_per_s_per_core",
    "naive_chips_per_s_per_core",
    "ratio_vs_warp_bound",
    "ratio_vs_naive",
    "files_per_1000_chips",
    "speedup_2_workers",
    "peak_rss_mb",
)
RSS_CHECK_SCALES = (1, 4)

Progress = Callable[[str], None]


def to_stderr(message: str) -> None:
    """Print a progress ``message`` to stderr, marked ``[bench]``."""
    print(f"[bench] {message}", file=sys.stderr, flush=True)


@dataclass(frozen=True)
class BenchConfig:
    """What to build and where (the command's options)."""

    scenes: int = 16
    scale: int = 1
    scene_px: int = 1024
    layout: str = "native"
    seed: int = 0
    params_path: Path = Path("params.yaml")
    bench_dir: Path = Path("data/bench")
    naive_compress: str | None = None
    repeats: int = 2

    @property
    def scene_count(self) -> int:
        """The number of scenes to build: ``scenes`` x ``scale``."""
        return self.scenes * self.scale

    def scene_set(self) -> SceneSet:
        """The rendered scenes' set under the bench folder."""
        return SceneSet(self.bench_dir.resolve(), self.seed, self.scene_px, self.layout)


@dataclass(frozen=True)
class BenchInput:
    """The prepared input: the scenes' items, their bytes, how many scenes were rendered now."""

    items: list[dict[str, Any]]
    input_bytes: int
    rendered: int


def prepare_input(config: BenchConfig, progress: Progress = to_stderr) -> BenchInput:
    """Render the scenes not cached yet, catalogue them, and read every file once.

    So every path starts from the same warm page cache.
    """
    scenes = config.scene_set()
    count = config.scene_count
    missing = sum(not scenes.exists(i) for i in range(count))
    if missing:
        progress(f"rendering {missing} of {count} scenes into {scenes.root} (cached; not measured)")
    rendered = ensure_scenes(scenes, count, processes=len(os.sched_getaffinity(0)))
    items = catalog_items(scenes, count)
    input_bytes = 0
    for item in items:
        for asset in item["assets"].values():
            with open(asset["href"], "rb") as f:
                while block := f.read(1 << 24):
                    input_bytes += len(block)
    return BenchInput(items, input_bytes, rendered)


def bench_params(config: BenchConfig, run_dir: Path) -> PipelineParams:
    """The project's parameters, writing into ``run_dir``."""
    params = load_params(
        config.params_path,
        {"work_dir": str(run_dir / "work"), "store": str(run_dir / "geopile2.zarr")},
    )
    if COLLECTION not in params.coregister.sources:
        raise ValueError(
            f"{config.params_path}: pipeline.coregister.sources has no "
            f"{COLLECTION!r} grid (reference asset, chip size) for the bench scenes"
        )
    return params


@dataclass(frozen=True)
class BenchResult:
    """The bench's runs: the warp bound, the naive script and ours by dask workers."""

    config: BenchConfig
    params: PipelineParams
    input: BenchInput
    warp_bound: PathRun
    naive: PathRun
    ours: dict[int, PathRun]  # dask workers (0: this process) -> run

    def summary(self) -> dict[str, float]:
        """The summary figures, by the names of ``SUMMARY_KEYS``, in that order."""
        ours = self.ours[0]
        runs = [self.warp_bound, self.naive, *self.ours.values()]
        values = {
            "ours_chips_per_s_per_core": ours.chips_per_s_per_core,
            "warp_bound_chips_per_s_per_core": self.warp_bound.chips_per_s_per_core,
            "naive_chips_per_s_per_core": self.naive.chips_per_s_per_core,
            "ratio_vs_warp_bound": ours.chips_per_s_per_core / self.warp_bound.chips_per_s_per_core,
            "ratio_vs_naive": ours.chips_per_s_per_core / self.naive.chips_per_s_per_core,
            "files_per_1000_chips": 1000.0 * ours.chip_files / ours.chips,
            "speedup_2_workers": self.ours[2].chips_per_s / self.ours[1].chips_per_s,
            "peak_rss_mb": max(run.peak_rss_bytes for run in runs) / MIB,
        }
        return {key: values[key] for key in SUMMARY_KEYS}


def run_bench(config: BenchConfig, progress: Progress = to_stderr) -> BenchResult:
    """Prepare the input and run the three paths, each alone, pinned to the cores it is charged.

    The paths: (b) the warp bound, (c) the naive script, (a) ours in this process, on 1 dask
    worker and on 2. This process gets the allocator settings of the pipeline's processes first
    (:func:`~pipeline.cluster.keep_freed_memory`), so that every path runs under the same.
    """
    keep_freed_memory()
    data = prepare_input(config, progress)
    run_dir = _run_dir(config)
    try:
        params = bench_params(config, run_dir)
        progress(
            f"{len(data.items)} scenes, {data.input_bytes / MIB:.0f} MiB of COGs; "
            f"{len(os.sched_getaffinity(0))} cores"
        )
        progress("(b) warp bound: GDAL read + reproject, 1 core")
        bound = run_warp_bound(data.items, params, chips=0, repeats=config.repeats)
        progress(f"    {bound.seconds:.1f} s")
        progress("(c) naive per-chip script, 1 core")
        naive = run_naive(
            data.items, params, run_dir / "naive", config.naive_compress, config.repeats
        )
        progress(f"    {naive.chips} chips in {naive.seconds:.1f} s")
        shutil.rmtree(run_dir / "naive", ignore_errors=True)
        ours = {}
        for workers in (0, 1, 2):
            where = (
                "this process, 1 core"
                if workers == 0
                else (
                    f"{workers} dask worker{'s' * (workers > 1)}, "
                    f"{workers} core{'s' * (workers > 1)}"
                )
            )
            progress(f"(a) ours: coregister + shard, {where}")
            ours[workers] = run_pipeline(data.items, params, workers, config.repeats)
            progress(f"    {ours[workers].chips} chips in {ours[workers].seconds:.1f} s")
        bound = dataclasses.replace(bound, chips=ours[0].chips)
        if naive.chips != ours[0].chips:
            progress(f"warning: the naive script kept {naive.chips} chips, ours {ours[0].chips}")
        return BenchResult(config, params, data, bound, naive, ours)
    finally:
        shutil.rmtree(run_dir, ignore_errors=True)


def _run_dir(config: BenchConfig) -> Path:
    """This run's scratch folder, ``<bench dir>/runs/run-<pid>`` (:func:`run_dir`)."""
    return run_dir(config.bench_dir / "runs")


def run_dir(runs: Path) -> Path:
    """``runs/run-<pid>``, this process's scratch folder.

    The folders of runs whose process is gone (killed benches) are removed first.
    """
    for stale in runs.glob("run-*"):
        pid = stale.name.removeprefix("run-")
        if not pid.isdigit() or int(pid) == os.getpid() or not psutil.pid_exists(int(pid)):
            shutil.rmtree(stale, ignore_errors=True)
    run_dir = runs / f"run-{os.getpid()}"
    run_dir.mkdir(parents=True)
    return run_dir


def format_report(result: BenchResult) -> str:
    """The table of every run and the ratios, for people (the JSON line is for machines)."""
    config, summary = result.config, result.summary()
    ours = result.ours[0]
    header = (
        f"{'path':38s} {'chips':>6s} {'wall s':>7s} {'cores':>5s} {'CPU s':>6s} "
        f"{'chips/s':>8s} {'/core':>7s} {'files':>6s} {'RSS tree':>9s} {'largest':>9s}"
    )
    lines = [
        f"input: {len(result.input.items)} scenes ({config.scenes} x scale {config.scale}) of "
        f"{config.scene_px} px, Sentinel-2 L2A layout '{config.layout}' + Sentinel-1 on "
        f"another UTM zone, {result.input.input_bytes / MIB:.0f} MiB of COGs; chips of "
        f"{result.params.coregister.sources[COLLECTION].chip_px} px, "
        f"{result.params.shard.chips_per_shard} per shard",
        "",
        header,
        "-" * len(header),
    ]
    for run in (result.warp_bound, result.naive, *result.ours.values()):
        lines.append(
            f"{run.name:38s} {run.chips:6d} {run.seconds:7.2f} {run.cores:5d} "
            f"{run.cpu_seconds:6.1f} {run.chips_per_s:8.1f} "
            f"{run.chips_per_s_per_core:7.1f} {run.chip_files:6d} "
            f"{run.peak_rss_bytes / MIB:5.0f} MiB "
            f"{run.peak_process_rss_bytes / MIB:5.0f} MiB"
        )
    lines += [
        "",
        f"ours / warp bound, chips/s per core:  {summary['ratio_vs_warp_bound']:.2f}",
        f"ours / naive, chips/s per core:       {summary['ratio_vs_naive']:.2f}",
        f"ours, 2 dask workers / 1 worker:      {summary['speedup_2_workers']:.2f}x",
        f"files holding chips per 1,000 chips:  ours {summary['files_per_1000_chips']:.1f} "
        f"(store shard files), naive "
        f"{1000.0 * result.naive.chip_files / max(result.naive.chips, 1):.0f} (GeoTIFFs)",
        *(f"  ours also wrote: {count} {kind}" for kind, count in ours.files.items()),
        f"  every file ours wrote: {ours.chip_files + sum(ours.files.values())}, "
        f"{1000.0 * (ours.chip_files + sum(ours.files.values())) / ours.chips:.0f} per 1,000 "
        f"chips at this size (the metadata files are fixed per store; .npz and .chunks: two "
        f"per scene)",
        f"peak RSS of the process tree, any path: {summary['peak_rss_mb']:.0f} MiB (RSS tree: "
        f"summed over this process and its dask processes; largest: its largest process)",
    ]
    return "\n".join(lines)


def summary_line(summary: dict[str, Any]) -> str:
    """``summary`` as one JSON line, floats rounded to 3 decimals (for machines)."""
    return json.dumps(
        {
            key: round(value, 3) if isinstance(value, float) else value
            for key, value in summary.items()
        }
    )


@dataclass(frozen=True)
class RssCheck:
    """Ours at 1x and 4x the input: peak RSS must not grow with the number of scenes."""

    config: BenchConfig
    runs: dict[int, dict[int, PathRun]]  # scale -> dask workers -> run

    def summary(self) -> dict[str, Any]:
        """Peak RSS per scale and its growth from the smallest to the largest, by path."""
        scales = sorted(self.runs)
        first, last = self.runs[scales[0]], self.runs[scales[-1]]
        summary: dict[str, Any] = {
            "scales": scales,
            "scenes": [self.config.scenes * s for s in scales],
            "chips": [self.runs[s][0].chips for s in scales],
        }
        for workers in first:
            label = _label(workers)
            summary[f"peak_rss_mb_{label}"] = [
                self.runs[s][workers].peak_rss_bytes / MIB for s in scales
            ]
            summary[f"peak_process_rss_mb_{label}"] = [
                self.runs[s][workers].peak_process_rss_bytes / MIB for s in scales
            ]
            summary[f"rss_growth_{label}"] = (
                last[workers].peak_rss_bytes / first[workers].peak_rss_bytes
            )
            summary[f"process_rss_growth_{label}"] = (
                last[workers].peak_process_rss_bytes / first[workers].peak_process_rss_bytes
            )
        return summary


def _label(workers: int) -> str:
    return "in_process" if workers == 0 else f"{workers}_workers"


def run_rss_check(
    config: BenchConfig,
    progress: Progress = to_stderr,
    scales: tuple[int, ...] = RSS_CHECK_SCALES,
    workers: tuple[int, ...] = (0, 2),
) -> RssCheck:
    """Ours (in this process and on 2 dask workers) at each of ``scales``.

    At scale s, the input is s times ``config.scenes`` scenes.
    """
    keep_freed_memory()
    runs: dict[int, dict[int, PathRun]] = {}
    for scale in scales:
        scaled = dataclasses.replace(config, scale=scale)
        data = prepare_input(scaled, progress)
        run_dir = _run_dir(scaled)
        try:
            params = bench_params(scaled, run_dir)
            runs[scale] = {}
            for count in workers:
                progress(f"ours at {scale}x ({len(data.items)} scenes), {_label(count)}")
                runs[scale][count] = run_pipeline(data.items, params, count, config.repeats)
                progress(f"    peak RSS {runs[scale][count].peak_rss_bytes / MIB:.0f} MiB")
        finally:
            shutil.rmtree(run_dir, ignore_errors=True)
    return RssCheck(config, runs)


def format_rss_report(check: RssCheck) -> str:
    """The table of every RSS check run and the growths, for people."""
    header = (
        f"{'input':>7s} {'scenes':>6s} {'path':28s} {'chips':>6s} {'wall s':>7s} "
        f"{'chips/s':>8s} {'RSS tree':>9s} {'largest':>9s}"
    )
    lines = [header, "-" * len(header)]
    for scale, by_workers in sorted(check.runs.items()):
        for run in by_workers.values():
            lines.append(
                f"{scale:6d}x {check.config.scenes * scale:6d} {run.name:28s} "
                f"{run.chips:6d} {run.seconds:7.2f} {run.chips_per_s:8.1f} "
                f"{run.peak_rss_bytes / MIB:5.0f} MiB "
                f"{run.peak_process_rss_bytes / MIB:5.0f} MiB"
            )
    summary = check.summary()
    scale = max(summary["scales"])
    for workers in next(iter(check.runs.values())):
        label = _label(workers)
        lines.append(
            f"peak RSS, {scale}x / 1x input, ours {label.replace('_', ' ')}: tree "
            f"{summary[f'rss_growth_{label}']:.2f}, largest process "
            f"{summary[f'process_rss_growth_{label}']:.2f}"
        )
    return "\n".join(lines)
