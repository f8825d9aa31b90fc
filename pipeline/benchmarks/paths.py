"""The three ways ``python -m pipeline.benchmarks`` builds the same paired chips, each timed alone.

- :func:`run_pipeline` -- ours, end to end: the ``coregister`` and ``shard`` stages
  (read, warp, QA, chip, compress, statistics, intermediate chip files, the sharded store)
  on an :class:`~pipeline.cluster.Executor` of 0 (this process), 1 or more dask workers.
- :func:`run_warp_bound` -- GDAL's own work in ours, alone: GDAL (through rasterio) reading
  every input raster whole and reprojecting each one that is not on the reference grid onto
  it, into memory, one thread, with the registry's resampling method and the very GDAL call
  ours makes (:func:`~catalogs.scene_reading.gdal_reproject`, which skips GDAL's source masks
  for a raster without nodata pixels), and nothing else (no linear-power round trip, no
  masks, no chips, no output).
- :func:`run_naive` -- a per-chip script as many published dataset scripts are written: for
  each chip window of the reference grid, a windowed read of the reference, a rasterio
  ``reproject`` of every other raster onto the chip's grid, the same nodata rule as ours, then
  one GeoTIFF per sensor per chip (SEN12MS's own layout: ``s1`` and ``s2`` files per patch),
  uncompressed by default as SEN12MS ships its patches.

Each returns a :class:`PathRun`; the caller times nothing itself.
"""

from __future__ import annotations

import dataclasses
import math
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
from rasterio.enums import Resampling
from rasterio.warp import reproject
from rasterio.windows import transform as window_transform

from catalogs import store_format as fmt
from catalogs.grid import Grid
from catalogs.scene_reading import gdal_reproject, invalid_pixels
from catalogs.sensors import Sensor, get_sensor
from catalogs.stac import SENSOR_FIELD
from pipeline.benchmarks.resources import best_of, pinned, tree_usage
from pipeline.cluster import Executor, executor
from pipeline.coregister import chip_windows
from pipeline.items import write_items
from pipeline.params import PipelineParams
from pipeline.stages import run_coregister, run_shard


@dataclass(frozen=True)
class PathRun:
    """One timed run of one path.

    Attributes:
        name: what ran.
        chips: paired chips built (one chip of every sensor over one window).
        seconds: wall time of the work (a dask cluster's start-up excluded).
        cores: CPUs the path was pinned to (its process tree could use no more).
        cpu_seconds: user + system CPU time of the process tree during the run.
        peak_rss_bytes: peak summed RSS of the process tree (see ``resources.tree_usage``).
        peak_process_rss_bytes: peak RSS of its largest process.
        chip_files: files written that hold chips (the store's shard files; GeoTIFFs).
        files: what else was written, by kind -> number of files.
    """

    name: str
    chips: int
    seconds: float
    cores: int
    cpu_seconds: float
    peak_rss_bytes: int
    peak_process_rss_bytes: int
    chip_files: int
    files: dict[str, int] = field(default_factory=dict)

    @property
    def chips_per_s(self) -> float:
        """Paired chips per second of wall time."""
        return self.chips / self.seconds

    @property
    def chips_per_s_per_core(self) -> float:
        """Paired chips per second divided by the cores the path was pinned to."""
        return self.chips_per_s / self.cores


def run_pipeline(
    items: list[dict[str, Any]], params: PipelineParams, workers: int, repeats: int = 1
) -> PathRun:
    """Ours: ``run_coregister`` then ``run_shard`` over ``items``, timed.

    They write into ``params.work_dir`` and ``params.store`` (both removed before each run), in
    this process (``workers`` 0) or on a LocalCluster of ``workers`` single-threaded processes
    pinned, with this process, to ``workers`` cores; the fastest of ``repeats`` runs counts.
    Before the clock starts, the cluster is up and both stages have run once on the first item
    (into a scratch store), so what is timed is processes that have loaded the pipeline, not
    their start-up.
    """
    warm_up = dataclasses.replace(
        params, work_dir=_beside(params.work_dir, "warm-up"), store=_beside(params.store, "warm-up")
    )

    def clear(*configs: PipelineParams) -> None:
        for config in configs:
            for path in (config.work_dir, config.store):
                shutil.rmtree(path, ignore_errors=True)

    def fresh_start() -> None:
        clear(params)
        write_items(params.fetched_table, items)

    clear(params, warm_up)
    write_items(warm_up.fetched_table, items[:1])
    cores = max(workers, 1)
    with pinned(cores), tree_usage() as usage, executor(workers) as ex:
        _run_stages(warm_up, ex)
        timing = best_of(repeats, usage, lambda: _run_stages(params, ex), before=fresh_start)
    clear(warm_up)
    manifest = fmt.read_manifest(params.store)
    shard_files = _count_files(params.store, lambda path: _is_image_shard(path, params.store))
    store_files = _count_files(params.store)
    label = "this process" if workers == 0 else f"{workers} dask worker{'s' * (workers > 1)}"
    return PathRun(
        name=f"ours ({label})",
        chips=manifest.pair_count,
        seconds=timing.seconds,
        cores=cores,
        cpu_seconds=timing.cpu_seconds,
        peak_rss_bytes=usage.peak_rss_bytes,
        peak_process_rss_bytes=usage.peak_process_rss_bytes,
        chip_files=shard_files,
        files={
            "store, metadata and tables": store_files - shard_files,
            "intermediate chip and chunk files (.npz + .chunks, per scene)": _count_files(
                params.chips_dir
            ),
        },
    )


def _run_stages(params: PipelineParams, ex: Executor) -> None:
    run_coregister(params, ex, progress=False)
    run_shard(params, ex, progress=False)


def _beside(path: Path, suffix: str) -> Path:
    return path.with_name(f"{path.name}-{suffix}")


def _is_image_shard(path: Path, store: Path) -> bool:
    """Whether ``path`` is a shard file of a sensor's ``image`` (``<sensor>/image/c/...``)."""
    parts = path.relative_to(store).parts
    return len(parts) > 3 and parts[1] == fmt.IMAGE and parts[2] == "c"


def _count_files(folder: Path, keep: Callable[[Path], bool] = lambda _: True) -> int:
    return sum(1 for path in folder.rglob("*") if path.is_file() and keep(path))


@dataclass(frozen=True)
class _Raster:
    """One raster asset of an item: its file, registry sensor and bands (registry names)."""

    path: str
    sensor: Sensor
    bands: tuple[str, ...]

    @classmethod
    def of(cls, asset: dict[str, Any]) -> _Raster:
        sensor = get_sensor(asset[SENSOR_FIELD])
        bands = tuple(band["name"] for band in asset.get("bands") or ()) or sensor.band_names
        return cls(asset["href"], sensor, bands)

    @property
    def resampling(self) -> Resampling:
        return Resampling[self.sensor.resampling.method]

    @property
    def nodata(self) -> float | None:
        return self.sensor.nodata


def _rasters(item: dict[str, Any], reference: str) -> tuple[_Raster, list[_Raster]]:
    """The item's reference raster and its other rasters (masks left out)."""
    rasters = {
        key: _Raster.of(asset)
        for key, asset in item["assets"].items()
        if SENSOR_FIELD in asset and get_sensor(asset[SENSOR_FIELD]).kind != "mask"
    }
    return rasters.pop(reference), list(rasters.values())


def run_warp_bound(
    items: list[dict[str, Any]], params: PipelineParams, chips: int, repeats: int = 1
) -> PathRun:
    """GDAL's own work on ``items``, in this process on one core.

    Every raster read whole, each one off the reference grid reprojected onto it in memory (see
    module doc); the fastest of ``repeats`` runs counts, after one untimed run on the first
    item. ``chips`` is the number of paired chips those grids hold (ours built them): the
    bound's rate is in that unit.
    """

    def run() -> None:
        for item in items:
            _warp_item(item, params)

    with pinned(1), tree_usage() as usage:
        _warp_item(items[0], params)
        timing = best_of(repeats, usage, run)
    return PathRun(
        name="warp bound (GDAL read + reproject)",
        chips=chips,
        seconds=timing.seconds,
        cores=1,
        cpu_seconds=timing.cpu_seconds,
        peak_rss_bytes=usage.peak_rss_bytes,
        peak_process_rss_bytes=usage.peak_process_rss_bytes,
        chip_files=0,
    )


def _warp_item(item: dict[str, Any], params: PipelineParams) -> None:
    """Read every raster of ``item``; reproject each one off the reference grid onto it.

    With the GDAL call ours makes.
    """
    reference, others = _rasters(item, params.coregister.sources[item["collection"]].reference)
    with rasterio.open(reference.path) as src:
        src.read()
        grid = Grid(src.crs, src.transform, src.shape)
    for raster in others:
        with rasterio.open(raster.path) as src:
            data = src.read()
            source = Grid(src.crs, src.transform, src.shape)
        has_nodata = bool(invalid_pixels(data, raster.sensor).any())
        gdal_reproject(data, source, grid, raster.sensor, has_nodata)


def run_naive(
    items: list[dict[str, Any]],
    params: PipelineParams,
    out_dir: Path,
    compress: str | None = None,
    repeats: int = 1,
) -> PathRun:
    """A per-chip script over ``items`` (see module doc), in this process on one core.

    It writes ``out_dir/<item id>/<sensor>_<chip>.tif`` (removed before each run);
    ``compress`` is a GDAL GeoTIFF compression (None: none). The fastest of ``repeats`` runs
    counts, after one untimed run on the first item.
    """
    warm_up = _beside(out_dir, "warm-up")

    def run() -> int:
        return sum(_naive_item(item, params, out_dir / item["id"], compress) for item in items)

    with pinned(1), tree_usage() as usage:
        _naive_item(items[0], params, warm_up, compress)
        timing = best_of(
            repeats, usage, run, before=lambda: shutil.rmtree(out_dir, ignore_errors=True)
        )
    shutil.rmtree(warm_up, ignore_errors=True)
    return PathRun(
        name="naive per-chip script",
        chips=timing.value,
        seconds=timing.seconds,
        cores=1,
        cpu_seconds=timing.cpu_seconds,
        peak_rss_bytes=usage.peak_rss_bytes,
        peak_process_rss_bytes=usage.peak_process_rss_bytes,
        chip_files=_count_files(out_dir),
    )


def _naive_item(
    item: dict[str, Any], params: PipelineParams, folder: Path, compress: str | None
) -> int:
    """The chips of one item, one reprojection and one GeoTIFF per sensor per chip."""
    grid = params.coregister.sources[item["collection"]]
    reference, others = _rasters(item, grid.reference)
    folder.mkdir(parents=True, exist_ok=True)
    written = 0
    with rasterio.open(reference.path) as ref:
        sources = [(raster, rasterio.open(raster.path)) for raster in others]
        try:
            for window in chip_windows(ref.shape, grid.chip_px, grid.stride_px):
                transform = window_transform(window, ref.transform)
                layers: dict[str, dict[str, np.ndarray]] = {
                    reference.sensor.name: dict(
                        zip(reference.bands, ref.read(window=window), strict=True)
                    )
                }
                for raster, src in sources:
                    out = np.empty((src.count, grid.chip_px, grid.chip_px), dtype=src.dtypes[0])
                    reproject(
                        rasterio.band(src, list(range(1, src.count + 1))),
                        out,
                        dst_transform=transform,
                        dst_crs=ref.crs,
                        resampling=raster.resampling,
                        src_nodata=raster.nodata,
                        dst_nodata=raster.nodata,
                        num_threads=1,
                    )
                    layers.setdefault(raster.sensor.name, {}).update(
                        zip(raster.bands, out, strict=True)
                    )
                stacks = {
                    name: np.stack([bands[b] for b in get_sensor(name).band_names])
                    for name, bands in layers.items()
                }
                if _nodata_share(stacks) > params.coregister.max_nodata_share:
                    continue
                for name, data in stacks.items():
                    _write_chip(
                        folder / f"{name}_{written}.tif",
                        data,
                        ref.crs,
                        transform,
                        get_sensor(name).nodata,
                        compress,
                    )
                written += 1
        finally:
            for _, src in sources:
                src.close()
    return written


def _nodata_share(stacks: dict[str, np.ndarray]) -> float:
    """The largest share of pixels of one chip where any band of a sensor is nodata."""
    shares = []
    for name, data in stacks.items():
        nodata = get_sensor(name).nodata
        invalid = (
            np.isnan(data).any(axis=0)
            if data.dtype.kind == "f"
            else np.zeros(data.shape[1:], dtype=bool)
        )
        if nodata is not None and not math.isnan(nodata):
            invalid |= (data == nodata).any(axis=0)
        shares.append(float(invalid.mean()))
    return max(shares)


def _write_chip(
    path: Path,
    data: np.ndarray,
    crs: Any,
    transform: Any,
    nodata: float | None,
    compress: str | None,
) -> None:
    profile = {
        "driver": "GTiff",
        "count": data.shape[0],
        "height": data.shape[1],
        "width": data.shape[2],
        "dtype": data.dtype.name,
        "crs": crs,
        "transform": transform,
        "nodata": nodata,
    }
    if compress:
        profile["compress"] = compress
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(data)
