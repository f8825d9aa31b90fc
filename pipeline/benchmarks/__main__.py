"""Command line of the pipeline benchmarks: ``python -m pipeline.benchmarks``.

The pipeline's throughput against GDAL's own work and against a naive per-chip script, on one
full-size scene (``--full-scene``) or at scale (``--items N``); ``--help`` says what each
measures.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from catalogs.sample.scenes import LAYOUTS
from pipeline.benchmarks.full_scene import (
    FullSceneConfig,
    format_full_scene_report,
    run_full_scene,
)
from pipeline.benchmarks.scale_catalog import picture_mix
from pipeline.benchmarks.scale_projection import ScaleConfig, format_scale_report, run_scale
from pipeline.benchmarks.sentinel_tile_pair import FULL_TILE_PX
from pipeline.benchmarks.suite import (
    BenchConfig,
    format_report,
    format_rss_report,
    run_bench,
    run_rss_check,
    summary_line,
)
from pipeline.cluster import ALLOCATOR_ENVIRON
from pipeline.params import PARAMS_PATH

DESCRIPTION = (
    """\
Build the same paired chips (Sentinel-2 L2A + Sentinel-1, 256 px, as params.yaml cuts sen12ms)
from the same scene-level COGs three ways, each timed alone, and print chips/s per core:

  (a) ours        the coregister and shard stages end to end: read every raster, warp the
                  secondaries onto the reference grid (S1 averaged in linear power), QA shift,
                  cut chips, compress them (Blosc LZ4) and measure their statistics, write
                  the intermediate chip and chunk files (fsynced), copy the compressed chunks
                  into the shard files of the Zarr v3 store, merge the statistics, fsync and
                  publish. Run in this process (the ratios), then on a dask LocalCluster of 1
                  and of 2 worker processes (the speed-up).
  (b) warp bound  GDAL's own work in (a), alone: GDAL (rasterio) reading every input raster
                  whole and reprojecting each one off the reference grid onto it, into
                  memory, one thread, with the registry's resampling method and the very
                  GDAL call (a) makes (its source masks skipped for a raster without nodata
                  pixels, as (a) does), nothing else.
  (c) naive       a per-chip script as many published dataset scripts are written: for each
                  chip window, a windowed read of the reference, a rasterio reproject of every
                  other raster onto the chip grid, the same nodata rule, and one GeoTIFF per
                  sensor per chip (SEN12MS's layout; uncompressed, as SEN12MS ships them).

A chip is a paired chip: one 256 px window, every sensor. Per core: chips/s divided by the
CPUs the path was pinned to (sched_setaffinity on every thread, inherited by the threads and
processes it starts): 1 for (b), (c) and (a) in this process; the worker count for the dask
runs (the scheduler and this process share those cores). CPU s: the process tree's user +
system time. Files: for (a) the store's image shard files (the files that grow with the
chips; the store's fixed metadata files and the two intermediate files per scene are listed
below the table); for (c) its GeoTIFFs. Peak RSS: the largest sum of the resident set sizes
of this process and all its descendants (dask nannies and workers), sampled every 20 ms
(shared pages count once per process), and the largest single process; the JSON's
peak_rss_mb is the largest tree sum of any path.

Each path runs once untimed on the first scene (warm processes: dask workers started, modules
loaded), then --repeats times on the whole input; the fastest run counts. The command runs
under the allocator settings the pipeline gives its dask workers (ALLOCATOR_ENVIRON in
pipeline/cluster.py; it restarts itself with them), so all paths and processes share one
malloc behaviour. The input is rendered from the sample world once (about 2 s per scene on
2 cores) and cached under --bench-dir; every file is read once before the first path runs,
so all start from a warm page cache.

The last line printed is one JSON object:
  {"ours_chips_per_s_per_core", "warp_bound_chips_per_s_per_core",
   "naive_chips_per_s_per_core", "ratio_vs_warp_bound", "ratio_vs_naive",
   "files_per_1000_chips", "speedup_2_workers", "peak_rss_mb"}
With --rss-check, only (a) runs (in this process and on 2 workers), at 1x and at 4x the input,
and the JSON line holds the peak RSS of each and its growth from 1x to 4x.
Progress goes to stderr; the table and the JSON line to stdout.

With --full-scene, one full-size scene instead (see pipeline/benchmarks/full_scene.py): a
Sentinel-2 L2A tile as Planetary Computer publishes it (tests/data/stac_items, 12 band COGs,
10980 px at 10 m; --full-scene-px scales it down) paired with a Sentinel-1 RTC scene relocated
onto the neighbouring UTM zone (pair s1s2, 256 px chips, the parameter file's block_px unless
--block-px), rendered once and cached under --bench-dir, co-registered into one chip file three
ways, each run in a fresh process pinned to 1 core (its peak RSS its own), the three
interleaved --repeats times (median and range):
  (a) blocked       write_item_chips, block by block, as the coregister stage runs it;
  (b) whole scene   the same with every raster read whole first (same blocks: the same chips;
                    the chunk files are checked byte for byte);
  (c) warp bound    GDAL's own work in (a), alone: per block, the same windowed reads and the
                    same reprojection call of each raster off the reference grid.
Last line: {"full_scene_chips_per_s_per_core", "ratio_vs_warp_bound" (chips/s per core of (a)
over (c), as above), "peak_rss_mb_blocked", "peak_rss_mb_whole_scene", "chips"}.

With --items N, the scale bench instead (see pipeline/benchmarks/scale_projection.py): a static STAC
catalog of N small items in GeoPile-2's proportions (1.0 M Million-AID : 0.6 M GeoPile
pictures : 0.18 M SEN12MS S1 + S2 + land-cover patch triplets of 256 px; MDAS's few large
scenes left out), each item its own files (copies of a pool rendered from the sample world,
under the item's own names), catalogued as the builders do. Pictures are square JPEGs, sides
in px with their shares (an assumption: Million-AID's sizes range widely, GeoPile's sources
are mostly 256-600 px):
"""
    + picture_mix()
    + """
Rendered once, cached under --bench-dir by N and seed (about 20 s, plus 3 s per 2,000 items).
It is built by the real stages (discover, fetch, coregister, shard, validate, through the
command line's stage table) on a dask LocalCluster of --workers processes started here. Per
stage: wall time, this process's CPU (time.process_time: stage code, dask scheduler and
client; the serial part) and the workers' CPU (getrusage in each worker, before and after;
the parallel part); items/s per core = N / (serial + parallel CPU s). Then: files in the work
dir and in the store per 1,000 items, the peak RSS of this process and all its descendants
(sampled every 20 ms), and the projected wall time for 2,000,000 items on 64 cores, a linear
extrapolation: the sum over stages of serial CPU/item x 2e6 + parallel CPU/item x 2e6 / 64
(the cluster's start and other fixed costs left out). The decode/encode bound: in this
process, on one core, for a spread of at most 2,000 of the items, read and decode each file of
a sensor the store holds (JPEGs with Image.draft at the smallest scale keeping a 256 px chip,
GeoTIFFs with rasterio) and encode the chunk of its central 256 px chip with the store's
codec; nothing else. Last line: {"items", "items_per_s_per_core": {"discover", "fetch",
"coregister", "shard", "validate"}, "serial_s_per_million", "work_files_per_1000_items",
"projected_hours_2m_items_64_cores", "decode_encode_bound_items_per_s_per_core"}; the table
also gives (coregister + shard CPU per item) / (bound CPU per item).
"""
)


def main(argv: list[str] | None = None) -> int:
    """Run ``python -m pipeline.benchmarks`` (``python -m pipeline bench`` forwards here).

    Args:
        argv: the arguments after the command (default: ``sys.argv[1:]``).

    Returns:
        The exit status, 0; argparse exits with 2 on bad arguments.
    """
    parser = argparse.ArgumentParser(
        prog="python -m pipeline.benchmarks",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--scenes",
        type=int,
        default=None,
        help="scenes at scale 1 (default 16: 256 chips, one full shard per "
        "sensor; about 1.5 minutes in all on 2 cores once the input is "
        "cached, under 2 minutes the first time, which renders it)",
    )
    parser.add_argument(
        "--scale", type=int, default=1, help="multiply the input: scenes x scale (default 1)"
    )
    parser.add_argument(
        "--scene-px", type=int, default=None, help="side of a scene in 10 m pixels (default 1024)"
    )
    parser.add_argument(
        "--layout",
        choices=sorted(LAYOUTS),
        default="native",
        help="Sentinel-2 files per scene: 'native' (default) one COG per "
        "resolution, 10/20/60 m, as Level-2A products deliver them (the "
        "20 and 60 m bands are resampled onto the 10 m grid); 'stacked' "
        "all 12 bands at 10 m in one COG, as SEN12MS ships its patches",
    )
    parser.add_argument("--seed", type=int, default=0, help="sample world seed (default 0)")
    parser.add_argument(
        "--params",
        type=Path,
        default=PARAMS_PATH,
        help="parameter file: chip grid of sen12ms, nodata rule, "
        "chips_per_shard (default: params.yaml)",
    )
    parser.add_argument(
        "--bench-dir",
        type=Path,
        default=Path("data/bench"),
        help="input cache and scratch space (default: data/bench)",
    )
    parser.add_argument(
        "--naive-compress",
        choices=["none", "deflate", "lzw", "zstd"],
        default="none",
        help="GeoTIFF compression of the naive script's chips (default: none)",
    )
    parser.add_argument(
        "--repeats",
        type=int,
        default=None,
        help="timed runs of each path; the fastest counts, as timeit does "
        "(default 2; 1 with --rss-check and --quick); with --full-scene, "
        "interleaved runs of the three paths, the median counts",
    )
    parser.add_argument(
        "--rss-check",
        action="store_true",
        help="run only (a), in this process and on 2 workers, at 1x and 4x "
        "the input, and compare their peak RSS",
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="a tiny run to check the command works (2 scenes of 512 px); its figures mean nothing",
    )
    parser.add_argument(
        "--full-scene",
        action="store_true",
        help="measure one full-size Sentinel-2 tile paired with Sentinel-1 "
        "RTC instead (see above; about 3.5 minutes a repeat on 2 cores, "
        "plus about 1 minute the first time, to render it)",
    )
    parser.add_argument(
        "--full-scene-px",
        type=int,
        default=FULL_TILE_PX,
        help=f"with --full-scene: side of the Sentinel-2 tile in 10 m pixels "
        f"(default {FULL_TILE_PX}, a whole tile)",
    )
    parser.add_argument(
        "--block-px",
        type=int,
        default=None,
        help="with --full-scene: pipeline.coregister.block_px (default: the parameter file's)",
    )
    parser.add_argument(
        "--items",
        type=int,
        default=None,
        help="run the scale bench on this many items instead (see above; "
        "20,000: under 10 minutes on 2 cores, the first time included)",
    )
    parser.add_argument(
        "--workers", type=int, default=2, help="with --items: dask worker processes (default 2)"
    )
    args = parser.parse_args(argv)
    if args.items is not None:
        return _scale(parser, args)
    if args.full_scene:
        return _full_scene(parser, args)
    scenes = args.scenes if args.scenes is not None else (2 if args.quick else 16)
    scene_px = args.scene_px if args.scene_px is not None else (512 if args.quick else 1024)
    repeats = (
        args.repeats if args.repeats is not None else (1 if args.quick or args.rss_check else 2)
    )
    if min(scenes, args.scale, repeats) < 1 or scene_px < 256:
        parser.error("--scenes, --scale and --repeats must be at least 1, --scene-px at least 256")
    config = BenchConfig(
        scenes=scenes,
        scale=args.scale,
        scene_px=scene_px,
        layout=args.layout,
        seed=args.seed,
        params_path=args.params,
        bench_dir=args.bench_dir,
        naive_compress=None if args.naive_compress == "none" else args.naive_compress,
        repeats=repeats,
    )
    if args.rss_check:
        check = run_rss_check(config)
        print(format_rss_report(check))
        print(summary_line(check.summary()))
        return 0
    result = run_bench(config)
    print(format_report(result))
    print(summary_line(result.summary()))
    return 0


def _full_scene(parser: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    repeats = 2 if args.repeats is None else args.repeats
    if args.rss_check or args.quick:
        parser.error("--full-scene takes neither --rss-check nor --quick")
    if repeats < 1 or args.full_scene_px < 256 or (args.block_px or 0) < 0:
        parser.error(
            "--repeats must be at least 1, --full-scene-px at least 256, --block-px at least 0"
        )
    config = FullSceneConfig(
        tile_px=args.full_scene_px,
        block_px=args.block_px,
        params_path=args.params,
        bench_dir=args.bench_dir,
        repeats=repeats,
    )
    result = run_full_scene(config)
    print(format_full_scene_report(result))
    print(summary_line(result.summary()))
    return 0


def _scale(parser: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    if args.full_scene or args.rss_check or args.quick:
        parser.error("--items takes none of --full-scene, --rss-check, --quick")
    if args.items < 1 or args.workers < 1:
        parser.error("--items and --workers must be at least 1")
    result = run_scale(
        ScaleConfig(
            items=args.items,
            seed=args.seed,
            workers=args.workers,
            params_path=args.params,
            bench_dir=args.bench_dir,
        )
    )
    print(format_scale_report(result))
    print(summary_line(result.summary()))
    return 0


def restart_with_allocator_environ(argv: list[str]) -> None:
    """Start ``python -m pipeline.benchmarks argv`` again under the pipeline's allocator settings.

    glibc reads :data:`~pipeline.cluster.ALLOCATOR_ENVIRON` at start-up only, and every path
    measured in this process should run under the allocator settings the pipeline's worker
    processes get. Returns without restarting when they are set already.

    Args:
        argv: the bench's arguments (without the command itself).
    """
    if any(os.environ.get(name) != value for name, value in ALLOCATOR_ENVIRON.items()):
        os.execve(
            sys.executable,
            [sys.executable, "-m", "pipeline.benchmarks", *argv],
            {**os.environ, **ALLOCATOR_ENVIRON},
        )


if __name__ == "__main__":
    restart_with_allocator_environ(sys.argv[1:])
    sys.exit(main())
