"""The input of ``python -m pipeline.benchmarks --full-scene``: a full-size S2 + S1 scene pair.

One full-size Sentinel-2 L2A tile as Planetary Computer publishes it, and a Sentinel-1 RTC
partner on the neighbouring UTM zone, rendered once as COGs and cached under the bench folder.

- Sentinel-2: ``tests/data/stac_items/pc_sentinel-2-l2a.json`` as published (tile 53NKG,
  EPSG:32653), its 12 band assets rendered on their own declared grids (10980 px at 10 m,
  5490 at 20 m, 1830 at 60 m; a ``tile_px`` other than 10980 keeps the tile's corner and
  scales every grid alike: ``ceil(tile_px * 10 / gsd)`` px at ``gsd`` m). Files: tiled,
  DEFLATE-compressed uint16 COGs with overviews, nodata 0, as Planetary Computer ships them.
  Pixels: a smooth pattern of DNs in 1100..3620 (reflectance 0.01..0.26 after the -1000 DN
  offset of processing baseline 05.11, which never clips), cheap to compute and of low entropy,
  so the files stay small. Only hrefs and the assets' ``proj:shape`` / ``proj:bbox`` (for a
  smaller ``tile_px``) change; assets the reading layer does not use (AOT, WVP, SCL, visual,
  metadata, previews) are left out, as the fetch stage leaves them out.
- Sentinel-1: ``tests/data/stac_items/pc_sentinel-1-rtc.json`` relocated, since no published
  RTC item overlaps that tile: its rasters (vv, vh: float32 linear gamma0, nodata -32768, 10 m)
  on UTM zone 52 (EPSG:32652, the tile's western neighbour) covering the Sentinel-2 tile with a
  :data:`S1_MARGIN_M` margin; changed fields: ``id`` (suffix ``_relocated``), ``geometry`` and
  ``bbox`` (the raster's footprint in lon/lat), ``proj:epsg``, ``proj:bbox``, ``proj:shape``,
  ``proj:transform``, ``datetime`` / ``start_datetime`` / ``end_datetime`` (one day before the
  Sentinel-2 acquisition, an 18 s slice as published) and the assets' ``href``,
  ``file:size`` and ``file:checksum``; every other field as published.

Rendering writes each raster strip by strip into an uncompressed tiled GeoTIFF, then GDAL's COG
driver copies it (compression, overviews): memory stays a few strips, whatever the tile size.
One process per raster, as many as there are cores (small tiles: in this process).
"""

from __future__ import annotations

import copy
import json
import math
import multiprocessing
import os
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
import rasterio.shutil
from affine import Affine
from rasterio.warp import transform as transform_points
from rasterio.warp import transform_bounds
from rasterio.windows import Window

from catalogs.atomic_files import atomic_path, write_text
from catalogs.item_assets import declared_crs, sensor_assets
from catalogs.stac import file_fields

ITEMS_DIR = Path(__file__).resolve().parents[2] / "tests" / "data" / "stac_items"
S2_ITEM = ITEMS_DIR / "pc_sentinel-2-l2a.json"
S1_ITEM = ITEMS_DIR / "pc_sentinel-1-rtc.json"
FULL_TILE_PX = 10980  # a Sentinel-2 tile at 10 m
S1_CRS = "EPSG:32652"
S1_GSD_M = 10.0
S1_MARGIN_M = 500.0  # beyond the tile on every side
S1_NODATA = -32768.0
S1_SLICE_S = 18.0
S2_NODATA = 0
STRIP_PX = 512  # rows written at a time; the COGs' tile size
COG_OPTIONS = {
    "COMPRESS": "DEFLATE",
    "PREDICTOR": "YES",
    "BLOCKSIZE": str(STRIP_PX),
    "OVERVIEWS": "AUTO",
    "RESAMPLING": "NEAREST",
    "NUM_THREADS": "1",
    "BIGTIFF": "IF_SAFER",
}
CACHE_VERSION = 1  # bump when what is rendered changes
SERIAL_TILE_PX = 2048  # tiles up to this size are rendered in this process
READY = "scene.json"  # written last: the items and how long rendering took

Progress = Callable[[str], None]


@dataclass(frozen=True)
class FullScene:
    """The rendered pair: both items, where they lie, their size, how long rendering took.

    The items have absolute local hrefs; rendering was done now or maybe by an earlier run.
    """

    s2: dict[str, Any]
    s1: dict[str, Any]
    folder: Path
    tile_px: int
    input_bytes: int
    render_seconds: float
    rendered_now: bool

    def files(self) -> list[Path]:
        """The asset files of both items."""
        return [Path(a["href"]) for item in (self.s2, self.s1) for a in item["assets"].values()]


@dataclass(frozen=True)
class _RasterJob:
    """One single-band raster to render (picklable: runs in a pool process)."""

    path: str
    crs: str
    transform: tuple[float, ...]
    shape: tuple[int, int]
    dtype: str
    nodata: float
    pattern: str  # "s2" or "s1"
    band: int


def ensure_full_scene(
    bench_dir: Path,
    tile_px: int = FULL_TILE_PX,
    processes: int | None = None,
    progress: Progress = lambda _: None,
) -> FullScene:
    """The pair of ``tile_px`` under ``bench_dir/full-scene/``, rendered unless cached.

    ``tile_px`` counts 10 m pixels a side of the Sentinel-2 grid; see the module doc.
    """
    folder = (bench_dir / "full-scene" / f"tile-{tile_px}-v{CACHE_VERSION}").resolve()
    ready = folder / READY
    if ready.exists():
        cached = json.loads(ready.read_text())
        return _scene(cached, folder, tile_px, rendered_now=False)
    processes = processes or len(os.sched_getaffinity(0))
    progress(
        f"rendering the full-scene input ({tile_px} px Sentinel-2 tile + Sentinel-1 RTC) "
        f"into {folder} on {processes} processes (cached; not measured)"
    )
    start = time.perf_counter()
    s2, s2_jobs = _sentinel2(folder / "sentinel-2-l2a", tile_px)
    s1, s1_jobs = _sentinel1(folder / "sentinel-1-rtc", s2, tile_px)
    jobs = sorted(s2_jobs + s1_jobs, key=lambda job: -job.shape[0] * job.shape[1])
    if processes > 1 and tile_px > SERIAL_TILE_PX:
        context = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(processes, mp_context=context) as pool:
            list(pool.map(_render, jobs))
    else:  # starting processes would take longer than the rendering
        for job in jobs:
            _render(job)
    for item in (s2, s1):
        for asset in item["assets"].values():
            if "file:size" in asset or "file:checksum" in asset:  # the publisher's: of its file
                asset.update(file_fields(Path(asset["href"])))
    seconds = time.perf_counter() - start
    record = {"s2": s2, "s1": s1, "render_seconds": seconds, "processes": processes}
    write_text(ready, json.dumps(record))
    progress(f"    rendered in {seconds:.1f} s")
    return _scene(record, folder, tile_px, rendered_now=True)


def _scene(record: dict[str, Any], folder: Path, tile_px: int, rendered_now: bool) -> FullScene:
    scene = FullScene(
        record["s2"],
        record["s1"],
        folder,
        tile_px,
        0,
        float(record["render_seconds"]),
        rendered_now,
    )
    size = sum(path.stat().st_size for path in scene.files())
    return FullScene(scene.s2, scene.s1, folder, tile_px, size, scene.render_seconds, rendered_now)


def _sentinel2(folder: Path, tile_px: int) -> tuple[dict[str, Any], list[_RasterJob]]:
    """The Sentinel-2 item and its rasters to render.

    The item keeps only the assets the reading layer uses, with hrefs into ``folder``.
    """
    item = json.loads(S2_ITEM.read_text())
    used = [a.key for assets in sensor_assets(item).values() for a in assets]
    local = copy.deepcopy(item)
    local["assets"] = {key: local["assets"][key] for key in item["assets"] if key in used}
    crs = declared_crs(item)
    assert crs is not None, S2_ITEM
    folder.mkdir(parents=True, exist_ok=True)
    jobs = []
    for band, (key, asset) in enumerate(local["assets"].items()):
        transform = Affine(*asset["proj:transform"][:6])
        side = math.ceil(tile_px * 10.0 / transform.a)
        shape = (side, side)
        asset["proj:shape"] = list(shape)
        if "proj:bbox" in asset:
            west, north = transform.c, transform.f
            asset["proj:bbox"] = [
                west,
                north + side * transform.e,
                west + side * transform.a,
                north,
            ]
        path = folder / f"{key}.tif"
        asset["href"] = str(path)
        jobs.append(
            _RasterJob(
                str(path),
                crs.to_wkt(),
                tuple(transform)[:6],
                shape,
                "uint16",
                S2_NODATA,
                "s2",
                band,
            )
        )
    return local, jobs


def _sentinel1(
    folder: Path, s2: dict[str, Any], tile_px: int
) -> tuple[dict[str, Any], list[_RasterJob]]:
    """The relocated Sentinel-1 RTC item and its rasters to render.

    The item (see the module doc) lies over the Sentinel-2 tile of ``tile_px``.
    """
    item = json.loads(S1_ITEM.read_text())
    s2_crs = declared_crs(s2)
    assert s2_crs is not None
    _, _, x0, _, _, y1 = next(
        a["proj:transform"][:6] for a in s2["assets"].values() if a["proj:transform"][0] == 10.0
    )
    tile = (x0, y1 - tile_px * 10.0, x0 + tile_px * 10.0, y1)
    west, south, east, north = transform_bounds(s2_crs, S1_CRS, *tile, densify_pts=21)
    west = S1_GSD_M * math.floor(west / S1_GSD_M) - S1_MARGIN_M
    south = S1_GSD_M * math.floor(south / S1_GSD_M) - S1_MARGIN_M
    east = S1_GSD_M * math.ceil(east / S1_GSD_M) + S1_MARGIN_M
    north = S1_GSD_M * math.ceil(north / S1_GSD_M) + S1_MARGIN_M
    shape = (round((north - south) / S1_GSD_M), round((east - west) / S1_GSD_M))
    transform = Affine(S1_GSD_M, 0.0, west, 0.0, -S1_GSD_M, north)

    item["id"] = f"{item['id']}_relocated"
    xs = [west, east, east, west, west]
    ys = [south, south, north, north, south]
    lons, lats = transform_points(S1_CRS, "EPSG:4326", xs, ys)
    item["geometry"] = {
        "type": "Polygon",
        "coordinates": [[[lon, lat] for lon, lat in zip(lons, lats, strict=True)]],
    }
    item["bbox"] = list(
        transform_bounds(S1_CRS, "EPSG:4326", west, south, east, north, densify_pts=21)
    )
    when = datetime.fromisoformat(s2["properties"]["datetime"].replace("Z", "+00:00"))
    middle = when - timedelta(days=1)
    item["properties"].update(
        {
            "datetime": _stac_time(middle),
            "start_datetime": _stac_time(middle - timedelta(seconds=S1_SLICE_S / 2)),
            "end_datetime": _stac_time(middle + timedelta(seconds=S1_SLICE_S / 2)),
            "proj:epsg": int(S1_CRS.split(":")[1]),
            "proj:bbox": [west, south, east, north],
            "proj:shape": list(shape),
            "proj:transform": [*tuple(transform)[:6], 0.0, 0.0, 1.0],
        }
    )
    used = [a.key for assets in sensor_assets(item).values() for a in assets]
    item["assets"] = {key: asset for key, asset in item["assets"].items() if key in used}
    polarizations = {a.key: a.band_names for assets in sensor_assets(item).values() for a in assets}
    folder.mkdir(parents=True, exist_ok=True)
    jobs = []
    for key, asset in item["assets"].items():
        path = folder / f"{key}.tif"
        asset["href"] = str(path)
        band = 0 if polarizations[key] == ("VV",) else 1  # co-pol stronger than cross-pol
        jobs.append(
            _RasterJob(
                str(path), S1_CRS, tuple(transform)[:6], shape, "float32", S1_NODATA, "s1", band
            )
        )
    return item, jobs


def _stac_time(when: datetime) -> str:
    return when.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def pattern_strip(job: _RasterJob, row0: int, rows: int) -> np.ndarray:
    """Rows ``row0:row0 + rows`` of a raster: a smooth product of waves along map x and y.

    The same ground looks alike at every resolution and in both CRSs' neighbourhood.
    """
    transform = Affine(*job.transform)
    cols = np.arange(job.shape[1], dtype=np.float64) + 0.5
    lines = np.arange(row0, row0 + rows, dtype=np.float64) + 0.5
    xs = transform.c + cols * transform.a
    ys = transform.f + lines * transform.e
    band = job.band
    wave_x = 1.0 + np.sin(xs * (2 * math.pi / (4000.0 + 350.0 * band)) + band)
    wave_y = 1.0 + np.cos(ys * (2 * math.pi / (5200.0 - 250.0 * band)))
    product = (wave_y[:, None] * wave_x[None, :]).astype(np.float32)  # 0..4
    if job.pattern == "s2":  # DNs 1100 + 120 band .. + 2520
        return np.rint(1100.0 + 120.0 * band + 300.0 * product).astype(np.uint16)
    # linear gamma0: vv (band 0) 0.01..0.25, vh a fifth of it, on a 1/4096 ladder (exact in
    # float32, few distinct values)
    power = (0.01 + 0.06 * product) * (1.0 if band == 0 else 0.2)
    return (np.maximum(np.round(power * 4096.0), 1.0) / 4096.0).astype(np.float32)


def _render(job: _RasterJob) -> str:
    """Write one raster: strips into an uncompressed tiled GeoTIFF, then a COG copy of it."""
    path = Path(job.path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.strips.tif")
    profile = {
        "driver": "GTiff",
        "height": job.shape[0],
        "width": job.shape[1],
        "count": 1,
        "dtype": job.dtype,
        "crs": job.crs,
        "transform": Affine(*job.transform),
        "nodata": job.nodata,
        "tiled": True,
        "blockxsize": STRIP_PX,
        "blockysize": STRIP_PX,
        "BIGTIFF": "IF_SAFER",
    }
    try:
        with rasterio.open(tmp, "w", **profile) as dst:
            for row0 in range(0, job.shape[0], STRIP_PX):
                rows = min(STRIP_PX, job.shape[0] - row0)
                dst.write(
                    pattern_strip(job, row0, rows), 1, window=Window(0, row0, job.shape[1], rows)
                )
        with atomic_path(path) as out:
            rasterio.shutil.copy(tmp, out, driver="COG", **COG_OPTIONS)
    finally:
        tmp.unlink(missing_ok=True)
    return job.path
