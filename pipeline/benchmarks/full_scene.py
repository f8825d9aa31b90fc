"""``python -m pipeline.benchmarks --full-scene``: one full-size scene pair, three ways.

One full-size Sentinel-2 tile paired with a Sentinel-1 RTC scene on another UTM zone
(:mod:`pipeline.benchmarks.sentinel_tile_pair`), co-registered into one chip file three ways,
each run in a fresh process of its own pinned to one core:

- ``blocked``: :func:`~pipeline.coregister.write_item_chips` as the coregister stage calls it,
  block by block (``read_whole=False``);
- ``whole_scene``: the same with ``read_whole=True``: every raster read whole first, the same
  blocks cut from memory; the same chips by construction (the chunk files are compared byte
  for byte);
- ``warp_bound``: GDAL's own work in ``blocked``, alone: for every block, a windowed read of
  each raster on the reference grid, and a read of each other raster's source window (the
  same windows: :func:`~catalogs.scene_reading.source_window` with the stage's margin; rasters no
  larger than a block read once, whole, and warped whole onto each block, as the stage does)
  reprojected onto the block with the very GDAL call the stage makes
  (:func:`~catalogs.scene_reading.gdal_reproject`: same resampling, dtype, nodata rule, one
  thread); each file opened for each read, as the stage opens it. Nothing else: no radiometry,
  no linear-power round trip, no masks, no chips, no output.

Runs are interleaved (blocked, whole_scene, warp_bound, blocked, ...); each is a fresh process,
so its peak RSS is its own. Within a run, after imports and an untimed warm-up (every file
opened and a tile of it read, one transform between the CRSs, one tiny reprojection), the work
is timed: wall time, CPU time (user + system) and peak RSS sampled every 20 ms
(:func:`pipeline.benchmarks.resources.tree_usage`), under the allocator settings of the
pipeline's workers (:data:`pipeline.cluster.ALLOCATOR_ENVIRON`, set in the worker's
environment).
"""

from __future__ import annotations

import argparse
import dataclasses
import filecmp
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import psutil
import rasterio
from rasterio.warp import transform_bounds
from rasterio.windows import Window

from catalogs.grid import Grid
from catalogs.item_assets import SensorAsset, nodata_mask, sensor_assets
from catalogs.scene_reading import (
    block_grid,
    gdal_reproject,
    read_once,
    source_margin_px,
    source_window,
)
from pipeline.benchmarks.resources import pinned, tree_usage
from pipeline.benchmarks.sentinel_tile_pair import FULL_TILE_PX, FullScene, ensure_full_scene
from pipeline.benchmarks.suite import run_dir
from pipeline.chips import LocationChips, chunk_file
from pipeline.cluster import ALLOCATOR_ENVIRON
from pipeline.coregister import PARTNER_ITEMS, chip_blocks, chip_windows, write_item_chips
from pipeline.pairing import PAIR, PARTNERS
from pipeline.params import PairSource, PipelineParams, load_params

MIB = 1 << 20
PAIR_NAME = "s1s2"
S2_COLLECTION, S1_COLLECTION = "sentinel-2-l2a", "sentinel-1-rtc"
CHIP_PX = 256
PATHS = ("blocked", "whole_scene", "warp_bound")
LABELS = {
    "blocked": "(a) blocked (write_item_chips)",
    "whole_scene": "(b) whole-scene read (read_whole=True)",
    "warp_bound": "(c) warp bound (GDAL read + reproject)",
}
SUMMARY_KEYS = (
    "full_scene_chips_per_s_per_core",
    "ratio_vs_warp_bound",
    "peak_rss_mb_blocked",
    "peak_rss_mb_whole_scene",
    "chips",
)
REPO = Path(__file__).resolve().parents[2]

Progress = Callable[[str], None]


@dataclass(frozen=True)
class FullSceneConfig:
    """What ``--full-scene`` runs: the tile's size, the block size, the files, the repeats."""

    tile_px: int = FULL_TILE_PX
    block_px: int | None = None  # None: the parameter file's pipeline.coregister.block_px
    params_path: Path = Path("params.yaml")
    bench_dir: Path = Path("data/bench")
    repeats: int = 2


def full_scene_params(params_path: Path, block_px: int | None = None) -> PipelineParams:
    """The project's parameters with the pair ``s1s2`` and, where given, another ``block_px``.

    The pair: Sentinel-2 L2A reference, Sentinel-1 RTC partner, chips of 256 px every 256 px.
    """
    params = load_params(params_path)
    pair = PairSource(
        reference=S2_COLLECTION, partners=(S1_COLLECTION,), chip_px=CHIP_PX, stride_px=CHIP_PX
    )
    coregister = dataclasses.replace(
        params.coregister,
        pairs={PAIR_NAME: pair},
        block_px=params.coregister.block_px if block_px is None else block_px,
    )
    return dataclasses.replace(
        params, collections=(S2_COLLECTION, S1_COLLECTION), coregister=coregister
    )


def work_unit(scene: FullScene) -> dict[str, Any]:
    """The coregister stage's unit of work for the pair (``pipeline.stages.work_units``).

    The Sentinel-2 item annotated as pairing annotates it, carrying its partner item.
    """
    from pipeline.stages import work_units  # the stage's own shape of a unit

    reference = {
        **scene.s2,
        "properties": {
            **scene.s2["properties"],
            PAIR: PAIR_NAME,
            PARTNERS: {S1_COLLECTION: [scene.s1["id"]]},
        },
    }
    (unit,) = work_units([reference, scene.s1])
    return unit


# --- one run, in its own process -------------------------------------------------------------


def run_path(name: str, unit: dict[str, Any], params: PipelineParams, chip_file: Path) -> None:
    """The work of one path (module doc)."""
    if name == "warp_bound":
        warp_bound(unit, params)
    else:
        write_item_chips(unit, params, chip_file, read_whole=name == "whole_scene")


@dataclass(frozen=True)
class _BoundRaster:
    asset: SensorAsset
    grid: Grid
    nodata: float | None  # of the file
    whole: np.ndarray | None  # no larger than a block: read once


def warp_bound(unit: dict[str, Any], params: PipelineParams) -> int:
    """GDAL's own work in the blocked path (module doc); returns the number of blocks."""
    pair = params.coregister.pairs[unit["properties"][PAIR]]
    block_px = params.coregister.block_px
    rasters: list[_BoundRaster] = []
    reference = None
    for item in (unit, *unit.get(PARTNER_ITEMS, [])):
        for assets in sensor_assets(item).values():
            for asset in assets:
                if asset.sensor.kind == "mask":
                    continue
                reference = reference or asset.sensor.name
                rasters.append(_open(asset, block_px))
    grid = min(
        (r.grid for r in rasters if r.asset.sensor.name == reference), key=lambda g: g.pixel_area
    )
    windows = chip_windows(grid.shape, pair.chip_px, pair.stride_px)
    blocks = chip_blocks(windows, grid.shape, pair.stride_px, block_px)
    for block, _ in blocks:
        target = block_grid(grid, block)
        for raster in rasters:
            if raster.grid == grid:
                _read(raster, block)
                continue
            if raster.whole is not None:
                window: Window | None = Window(0, 0, raster.grid.shape[1], raster.grid.shape[0])
                data = raster.whole
            else:
                margin = source_margin_px(raster.grid, target, raster.asset.sensor)
                window = source_window(raster.grid, target, margin)
                if window is None:
                    continue
                data = _read(raster, window)
            has_nodata = bool(nodata_mask(data, raster.nodata).any())
            gdal_reproject(
                data, block_grid(raster.grid, window), target, raster.asset.sensor, has_nodata
            )
    return len(blocks)


def _open(asset: SensorAsset, block_px: int) -> _BoundRaster:
    """A raster's grid; read whole where the stage reads it whole.

    That is, no larger than a block: the rule of :func:`catalogs.scene_reading.open_raster`.
    """
    with rasterio.open(asset.href) as src:
        grid = Grid(src.crs, src.transform, (src.height, src.width))
        small = read_once(src.height, src.width, block_px)
        whole = src.read(list(asset.indexes) if asset.indexes else None) if small else None
    nodata = asset.radiometry.nodata if asset.radiometry is not None else asset.sensor.nodata
    return _BoundRaster(asset, grid, nodata, whole)


def _read(raster: _BoundRaster, window: Window) -> np.ndarray:
    indexes = list(raster.asset.indexes) if raster.asset.indexes else None
    with rasterio.open(raster.asset.href) as src:
        return src.read(indexes, window=window)


def _warm_up(unit: dict[str, Any]) -> None:
    """Untimed: GDAL and PROJ initialised, every file opened and a tile of it read."""
    crses = []
    for item in (unit, *unit.get(PARTNER_ITEMS, [])):
        for assets in sensor_assets(item).values():
            for asset in assets:
                with rasterio.open(asset.href) as src:
                    src.read(1, window=Window(0, 0, min(256, src.width), min(256, src.height)))
                    crses.append(src.crs)
    transform_bounds(crses[-1], crses[0], *transform_bounds(crses[0], crses[-1], 0, 0, 1, 1))
    tiny = Grid(crses[0], rasterio.Affine(10, 0, 0, 0, -10, 0), (8, 8))
    gdal_reproject(
        np.ones((1, 8, 8), np.float32),
        tiny,
        tiny,
        sensor_assets(unit)[next(iter(sensor_assets(unit)))][0].sensor,
        False,
    )


def _peak_rss_since_exec() -> int:
    """The kernel's high-water mark of this process's RSS (``VmHWM``).

    Exact, but over the whole process life since exec (imports and warm-up included). Not
    ``ru_maxrss``, which Linux carries over from the forking parent through exec.
    """
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    return 0


def _worker(argv: list[str]) -> int:
    """One timed run of one path; its figures go to ``R`` (JSON).

    The command line: ``python -m pipeline.benchmarks.full_scene PATH --unit U --params P
    --chip-file F --result R [--block-px N]``.
    """
    parser = argparse.ArgumentParser(prog="python -m pipeline.benchmarks.full_scene")
    parser.add_argument("path", choices=PATHS)
    parser.add_argument("--unit", type=Path, required=True)
    parser.add_argument("--params", type=Path, required=True)
    parser.add_argument("--block-px", type=int, default=None)
    parser.add_argument("--chip-file", type=Path, required=True)
    parser.add_argument("--result", type=Path, required=True)
    args = parser.parse_args(argv)
    missing = {k: v for k, v in ALLOCATOR_ENVIRON.items() if os.environ.get(k) != v}
    if missing:  # glibc reads them at start-up; mallopt at run time caps the mmap threshold
        raise SystemExit(f"run with the pipeline workers' allocator settings {missing}")
    unit = json.loads(args.unit.read_text())
    params = full_scene_params(args.params, args.block_px)
    _warm_up(unit)
    me = psutil.Process()
    with pinned(1), tree_usage() as usage:
        before_rss = me.memory_info().rss
        cpu = usage.cpu_seconds()
        start = time.perf_counter()
        run_path(args.path, unit, params, args.chip_file)
        seconds = time.perf_counter() - start
        cpu_seconds = usage.cpu_seconds() - cpu
    args.result.write_text(
        json.dumps(
            {
                "path": args.path,
                "seconds": seconds,
                "cpu_seconds": cpu_seconds,
                "peak_rss_bytes": usage.peak_rss_bytes,
                "rss_before_bytes": before_rss,
                "hwm_bytes": _peak_rss_since_exec(),
            }
        )
    )
    return 0


# --- the bench, in the command's process -----------------------------------------------------


@dataclass(frozen=True)
class Run:
    """One timed run of one path (in a process of its own, on 1 core)."""

    path: str
    seconds: float
    cpu_seconds: float
    peak_rss_bytes: int
    rss_before_bytes: int
    hwm_bytes: int


@dataclass(frozen=True)
class FullSceneResult:
    """The ``--full-scene`` figures: every path's runs, the chips and blocks, the checks."""

    config: FullSceneConfig
    params: PipelineParams
    scene: FullScene
    runs: dict[str, list[Run]]  # path -> its runs, in order
    chips: int
    windows: int
    dropped: int
    blocks: int
    chunk_bytes: int
    identical: list[bool]  # per repeat: the chunk files of blocked and whole_scene

    def median_seconds(self, path: str) -> float:
        """The median wall time of ``path``'s runs."""
        return statistics.median(run.seconds for run in self.runs[path])

    def median_cpu(self, path: str) -> float:
        """The median CPU time (user + system) of ``path``'s runs."""
        return statistics.median(run.cpu_seconds for run in self.runs[path])

    def peak_rss_mb(self, path: str) -> float:
        """The largest peak RSS of ``path``'s runs, in MiB."""
        return max(run.peak_rss_bytes for run in self.runs[path]) / MIB

    def chips_per_s_per_core(self, path: str) -> float:
        """Chips per second of ``path``'s median run, on its one core."""
        return self.chips / self.median_seconds(path)  # 1 core

    def summary(self) -> dict[str, Any]:
        """The summary figures, as today's bench.

        The ratio is of chips/s per core (wall time, per pinned core), here of the median runs.
        """
        values = {
            "full_scene_chips_per_s_per_core": self.chips_per_s_per_core("blocked"),
            "ratio_vs_warp_bound": self.chips_per_s_per_core("blocked")
            / self.chips_per_s_per_core("warp_bound"),
            "peak_rss_mb_blocked": self.peak_rss_mb("blocked"),
            "peak_rss_mb_whole_scene": self.peak_rss_mb("whole_scene"),
            "chips": self.chips,
        }
        return {key: values[key] for key in SUMMARY_KEYS}


def _to_stderr(message: str) -> None:
    print(f"[bench] {message}", file=sys.stderr, flush=True)


def run_full_scene(config: FullSceneConfig, progress: Progress = _to_stderr) -> FullSceneResult:
    """Render (or reuse) the input, then run the paths interleaved ``config.repeats`` times.

    The page cache is warmed first; blocked and whole-scene chips are checked to be the same
    bytes.
    """
    scene = ensure_full_scene(config.bench_dir, config.tile_px, progress=progress)
    for path in scene.files():  # every path starts from the same warm page cache
        with open(path, "rb") as f:
            while f.read(1 << 24):
                pass
    params = full_scene_params(config.params_path, config.block_px)
    unit = work_unit(scene)
    pair = params.coregister.pairs[PAIR_NAME]
    s2_shape = max(
        (tuple(a["proj:shape"]) for a in scene.s2["assets"].values()), key=lambda s: s[0] * s[1]
    )
    windows = chip_windows(s2_shape, pair.chip_px, pair.stride_px)
    blocks = len(chip_blocks(windows, s2_shape, pair.stride_px, params.coregister.block_px))
    scratch = run_dir(config.bench_dir / "full-scene" / "runs")
    try:
        unit_file = scratch / "unit.json"
        unit_file.write_text(json.dumps(unit))
        progress(
            f"{scene.input_bytes / MIB:.0f} MiB of COGs; {len(windows)} chip windows in "
            f"{blocks} blocks of {params.coregister.block_px} px; {config.repeats} "
            f"interleaved repeat(s) of {', '.join(PATHS)}, each a process on 1 core"
        )
        runs: dict[str, list[Run]] = {path: [] for path in PATHS}
        identical = []
        for repeat in range(config.repeats):
            for path in PATHS:
                progress(f"repeat {repeat + 1}: {LABELS[path]}")
                run = _run_worker(path, unit_file, config, scratch)
                runs[path].append(run)
                progress(
                    f"    {run.seconds:.1f} s, {run.cpu_seconds:.1f} CPU s, peak RSS "
                    f"{run.peak_rss_bytes / MIB:.0f} MiB"
                )
            identical.append(_same_chip_files(scratch / "blocked.npz", scratch / "whole_scene.npz"))
        header = LocationChips.load_header(scratch / "blocked.npz")
        chips = header.count
        dropped = sum(header.dropped.values())
        chunk_bytes = chunk_file(scratch / "blocked.npz").stat().st_size
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    result = FullSceneResult(
        config, params, scene, runs, chips, len(windows), dropped, blocks, chunk_bytes, identical
    )
    if not all(identical):
        raise RuntimeError(
            f"the chip files of the blocked path and of the whole-scene read "
            f"differ (repeats: {identical}): the same blocks should give the "
            f"same bytes"
        )
    return result


def _run_worker(path: str, unit_file: Path, config: FullSceneConfig, run_dir: Path) -> Run:
    """One run of ``path`` in a fresh process (its output replaces the previous run's)."""
    result = run_dir / f"{path}.json"
    chip_file = run_dir / f"{path}.npz"
    for old in (result, chip_file, chunk_file(chip_file)):
        old.unlink(missing_ok=True)
    command = [
        sys.executable,
        "-m",
        "pipeline.benchmarks.full_scene",
        path,
        "--unit",
        str(unit_file),
        "--params",
        str(config.params_path.resolve()),
        "--chip-file",
        str(chip_file),
        "--result",
        str(result),
    ]
    if config.block_px is not None:
        command += ["--block-px", str(config.block_px)]
    environ = {
        **os.environ,
        **ALLOCATOR_ENVIRON,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
    }
    subprocess.run(command, check=True, env=environ, stdout=sys.stderr)
    figures = json.loads(result.read_text())
    return Run(
        path,
        figures["seconds"],
        figures["cpu_seconds"],
        figures["peak_rss_bytes"],
        figures["rss_before_bytes"],
        figures["hwm_bytes"],
    )


def _same_chip_files(a: Path, b: Path) -> bool:
    """Chunk files byte for byte, and every member of the chip files equal.

    Not the zip archives themselves: they carry their write times.
    """
    if not filecmp.cmp(chunk_file(a), chunk_file(b), shallow=False):
        return False
    with np.load(a) as x, np.load(b) as y:
        return x.files == y.files and all(np.array_equal(x[k], y[k]) for k in x.files)


def format_full_scene_report(result: FullSceneResult) -> str:
    """The table of every path and the figures, for people (the JSON line is for machines)."""
    scene, params = result.scene, result.params
    pair = params.coregister.pairs[PAIR_NAME]
    s1_shape = scene.s1["properties"]["proj:shape"]
    gsds = [a["proj:transform"][0] for a in scene.s2["assets"].values()]
    rendered = (
        f"rendered now in {scene.render_seconds:.1f} s"
        if scene.rendered_now
        else f"cached (rendered in {scene.render_seconds:.1f} s)"
    )
    header = (
        f"{'path':40s} {'wall s median [range]':>24s} {'CPU s':>6s} {'chips/s':>8s} "
        f"{'/CPU s':>7s} {'peak RSS':>9s} {'at start':>9s} {'VmHWM':>9s}"
    )
    lines = [
        f"input: Sentinel-2 L2A tile {scene.s2['properties'].get('s2:mgrs_tile')} of "
        f"{result.config.tile_px} px ({gsds.count(10.0)} bands at 10 m, {gsds.count(20.0)} at "
        f"20 m, {gsds.count(60.0)} at 60 m; EPSG:{scene.s2['properties']['proj:epsg']}) + "
        f"Sentinel-1 RTC vv/vh {s1_shape[0]}x{s1_shape[1]} px at 10 m on "
        f"EPSG:{scene.s1['properties']['proj:epsg']}; {scene.input_bytes / MIB:.0f} MiB of "
        f"COGs, {rendered}",
        f"pair {PAIR_NAME}: chips of {pair.chip_px} px every {pair.stride_px} px, blocks of "
        f"{params.coregister.block_px} px: {result.blocks} blocks; {result.windows} chip "
        f"windows, {result.dropped} dropped (nodata), {result.chips} chips kept",
        f"{result.config.repeats} interleaved repeat(s), each run a fresh process pinned to 1 "
        f"core; wall time median [min-max]; chips/s per core; peak RSS: the worker's, the "
        f"largest of its runs, sampled every 20 ms while timed (at start: when timing began; "
        f"VmHWM: the kernel's high-water mark over the whole process)",
        "",
        header,
        "-" * len(header),
    ]
    for path in PATHS:
        runs = result.runs[path]
        wall = [run.seconds for run in runs]
        timing = f"{result.median_seconds(path):.2f} [{min(wall):.2f}-{max(wall):.2f}]"
        lines.append(
            f"{LABELS[path]:40s} {timing:>24s} {result.median_cpu(path):6.1f} "
            f"{result.chips_per_s_per_core(path):8.2f} "
            f"{result.chips / result.median_cpu(path):7.2f} "
            f"{result.peak_rss_mb(path):5.0f} MiB "
            f"{max(run.rss_before_bytes for run in runs) / MIB:5.0f} MiB "
            f"{max(run.hwm_bytes for run in runs) / MIB:5.0f} MiB"
        )
    summary = result.summary()
    per_repeat = [
        bound.seconds / blocked.seconds
        for blocked, bound in zip(result.runs["blocked"], result.runs["warp_bound"], strict=True)
    ]
    lines += [
        "",
        f"chunk files byte-identical (blocked vs whole-scene read): "
        f"{'yes' if all(result.identical) else 'NO'} ({result.chunk_bytes} bytes, "
        f"{len(result.identical)} repeat(s))",
        f"blocked / warp bound, chips/s per core (wall time): "
        f"{summary['ratio_vs_warp_bound']:.2f} (per repeat: "
        f"{', '.join(f'{r:.2f}' for r in per_repeat)}); on CPU time: "
        f"{result.median_cpu('warp_bound') / result.median_cpu('blocked'):.2f}",
        f"peak RSS per worker: blocked {summary['peak_rss_mb_blocked']:.0f} MiB, whole-scene "
        f"read {summary['peak_rss_mb_whole_scene']:.0f} MiB "
        f"({summary['peak_rss_mb_whole_scene'] / summary['peak_rss_mb_blocked']:.1f}x), "
        f"warp bound {result.peak_rss_mb('warp_bound'):.0f} MiB",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(_worker(sys.argv[1:]))
