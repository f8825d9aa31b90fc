"""Whole scenes of the sample world for each downstream task, as STAC items over COGs.

The input of whole-scene inference (``python -m model.predict``): larger than any training chip,
rendered by the same physics as the downstream sets (:mod:`catalogs.sample.downstream`) and the
bench scenes (:mod:`catalogs.sample.scenes`), each sensor on its own grid and CRS:

- ``segmentation``: one item, ISPRS Vaihingen-like IR-R-G (``cir``, uint8) and DSM (``dsm``,
  float32 m) on one 9 cm grid (UTM 32N).
- ``pansharpening``: one item, WorldView-3 PAN (``worldview3_pan``, ~0.3 m) and MS
  (``worldview3_ms``, 8 bands) at 4:1, in EPSG:4326 degrees as SpaceNet 2 ships them.
- ``cloud_removal``: cloudy Sentinel-2 L1C (``sentinel2_l1c``, 13 bands at 10 m, UTM 32N) as
  SEN12MS-CR renders its clouds; a partner item of Sentinel-1 (``sentinel1_grd``, VV VH dB) on
  UTM 33N: another zone, so a grid rotated by about 2 degrees, with a sub-pixel origin shift.
- ``classification``: Sentinel-2 L2A (``sentinel2_l2a``, 12 bands) in the native 10/20/60 m
  layout (assets ``s2``, ``s2_20m``, ``s2_60m``); a partner item of Sentinel-1 as above.

The reference item comes first; its first asset's grid is the scene's reference grid (that of
``cir``, ``pan``, ``s2_cloudy`` or the 10 m ``s2``). With ``partner_coverage`` F < 1 the partner
(Sentinel-1, or the item's second sensor) covers only the left share F of the scene's columns
(Sentinel-1: its covering grid of those columns, so up to its 60 m margin beyond them), and a
top-left block of about 5% of the reference grid, [0, 0, side, side] in reference pixels, is
nodata in the reference sensor's assets (in ``dsm``'s for segmentation: ``cir`` has no nodata
value in the registry). Every item's properties say so: ``msgfm:task``,
``msgfm:partner_coverage``, and for F < 1 ``msgfm:sample_nodata_window`` ([row, col, height,
width] on the reference grid) and ``msgfm:sample_nodata_sensor``.

A scene is one folder: ``<asset key>.tif`` COGs and ``<item id>.json`` items whose asset hrefs
are relative to the item file (``./s2.tif``), so the folder can move; it appears whole. The same
arguments give byte-identical files. ``python -m catalogs.sample.task_scenes --help``.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from catalogs.atomic_files import atomic_folder
from catalogs.grid import Grid
from catalogs.sample.downstream import (
    BUILT_UP_SPACING_M,
    VAIHINGEN_GSD_M,
    sentinel2_l1c_counts,
    vaihingen_rasters,
    worldview3_counts,
    worldview3_grids,
)
from catalogs.sample.files import write_cog
from catalogs.sample.scenes import (
    ACQUIRED,
    GSD_M,
    LAYOUTS,
    S1_ASSET,
    S1_SENSOR,
    SUPERSAMPLE,
    sentinel1_file,
    sentinel2_files,
)
from catalogs.sample.sites import find_sites, random_centers, world_grid
from catalogs.sample.world import LC, World
from catalogs.sensors import get_sensor
from catalogs.stac import make_item, raster_asset

TASKS = ("segmentation", "pansharpening", "cloud_removal", "classification")
DEFAULT_SIZE_PX = {
    "segmentation": 1536,
    "pansharpening": 2048,  # PAN pixels; MS has a quarter
    "cloud_removal": 1024,
    "classification": 1024,
}
PAN_PER_MS = 4
NODATA_SHARE = 0.05  # of the reference grid, nodata where the partner covers part of the scene
CLOUD_SCENE = 1  # the sky over the cloud-removal scene
RNG_STREAM = 9100  # scenes.py draws from 9000
PROPERTY_PREFIX = "msgfm:"  # our item properties


@dataclass(frozen=True)
class _File:
    """One COG of a scene: its registry sensor, the bands it holds (None: all), data and grid."""

    sensor: str
    data: np.ndarray
    grid: Grid
    band_names: tuple[str, ...] | None = None
    resampling: str = "average"


# An item of a scene: asset key -> file, in asset order.
_Item = dict[str, _File]


def render_task_scene(
    task: str,
    out_dir: Path,
    size_px: int | None = None,
    seed: int = 0,
    partner_coverage: float = 1.0,
) -> list[Path]:
    """Render the sample scene of ``task`` into the folder ``out_dir`` (replaced whole).

    Args:
        task: one of :data:`TASKS`.
        out_dir: the scene folder.
        size_px: the reference grid's side in pixels (PAN's for pan-sharpening, a multiple of
            4); :data:`DEFAULT_SIZE_PX` by default.
        seed: the sample world's seed (also that of the scene's place and noise).
        partner_coverage: the share of the scene's columns (from the left) the partner covers,
            in (0, 1]; below 1 a top-left block of the reference is nodata too.

    Returns:
        the item JSON paths, reference item first

    Raises:
        ValueError: an unknown task, naming the tasks; a size or coverage out of range.
    """
    if task not in TASKS:
        raise ValueError(f"task {task!r}: not one of {', '.join(TASKS)}")
    size_px = DEFAULT_SIZE_PX[task] if size_px is None else size_px
    multiple = PAN_PER_MS if task == "pansharpening" else 1
    if size_px <= 0 or size_px % multiple:
        raise ValueError(
            f"{task} scene: size_px {size_px} is not a positive multiple of {multiple}"
        )
    if not 0.0 < partner_coverage <= 1.0:
        raise ValueError(f"{task} scene: partner_coverage {partner_coverage} is not in (0, 1]")
    world = World(seed)
    rng = np.random.default_rng([seed, RNG_STREAM, TASKS.index(task)])
    items = _RENDERERS[task](world, size_px, rng, partner_coverage)
    properties: dict[str, Any] = {
        f"{PROPERTY_PREFIX}task": task,
        f"{PROPERTY_PREFIX}partner_coverage": partner_coverage,
    }
    if partner_coverage < 1.0:
        properties.update(_nodata_window(items[0]))
    out_dir = Path(out_dir)
    names = [f"{task}_scene", *(f"{task}_scene_{next(iter(item))}" for item in items[1:])]
    with atomic_folder(out_dir) as staging:
        staging.chmod(0o755)
        for item_id, item in zip(names, items, strict=True):
            _write_item(staging, item_id, item, properties)
    return [out_dir / f"{item_id}.json" for item_id in names]


def _write_item(folder: Path, item_id: str, item: _Item, properties: dict[str, Any]) -> None:
    """Write an item's COGs and its JSON (asset hrefs relative to it) into ``folder``."""
    assets = {}
    for key, file in item.items():
        sensor = get_sensor(file.sensor)
        path = write_cog(
            folder / f"{key}.tif",
            file.data,
            file.grid,
            nodata=sensor.nodata,
            resampling=file.resampling,
        )
        assets[key] = raster_asset(path, sensor, band_names=file.band_names)
        assets[key].href = f"./{path.name}"
    stac = make_item(item_id, assets, ACQUIRED, properties, footprint_asset=next(iter(item)))
    record = stac.to_dict(include_self_link=False, transform_hrefs=False)
    (folder / f"{item_id}.json").write_text(json.dumps(record, indent=2) + "\n")


def _nodata_window(reference: _Item) -> dict[str, Any]:
    """Make a top-left block of about :data:`NODATA_SHARE` of ``reference`` nodata.

    In the assets of the item's first sensor that has a registry nodata value; the block's side
    is a whole number of every such asset's pixels. Returns the item properties recording it.
    """
    ref_grid = next(iter(reference.values())).grid
    sensor = next(
        get_sensor(f.sensor) for f in reference.values() if get_sensor(f.sensor).nodata is not None
    )
    files = [f for f in reference.values() if f.sensor == sensor.name]
    factors = [round(f.grid.transform.a / ref_grid.transform.a) for f in files]
    step = math.lcm(*factors)
    side = math.ceil(math.sqrt(NODATA_SHARE) * min(ref_grid.shape) / step) * step
    for file, factor in zip(files, factors, strict=True):
        file.data[..., : side // factor, : side // factor] = sensor.nodata
    return {
        f"{PROPERTY_PREFIX}sample_nodata_window": [0, 0, side, side],
        f"{PROPERTY_PREFIX}sample_nodata_sensor": sensor.name,
    }


def _left_columns(grid: Grid, coverage: float) -> Grid:
    """``grid`` cut to its left share ``coverage`` of columns (at least one)."""
    rows, cols = grid.shape
    return Grid(grid.crs, grid.transform, (rows, max(1, round(cols * coverage))))


def _built_up_center(world: World, rng: np.random.Generator) -> tuple[float, float]:
    """A place rich in built-up ground, as SpaceNet 2 and Vaihingen tiles are placed."""
    (center,) = find_sites(world, LC["built_up"], 1, BUILT_UP_SPACING_M, rng)
    return center


def _sentinel2_grid(size_px: int, rng: np.random.Generator) -> Grid:
    """A 10 m grid at a random place, as the bench scenes are placed."""
    (center,) = random_centers(1, rng)
    return world_grid(center, (size_px, size_px), GSD_M)


def _segmentation(
    world: World, size_px: int, rng: np.random.Generator, coverage: float
) -> list[_Item]:
    grid = world_grid(_built_up_center(world, rng), (size_px, size_px), VAIHINGEN_GSD_M)
    top, heights = vaihingen_rasters(world, grid, rng)
    dsm_grid = _left_columns(grid, coverage)
    dsm = heights[None, :, : dsm_grid.shape[1]].copy()
    return [
        {
            "cir": _File("cir", top, grid),
            "dsm": _File("dsm", dsm, dsm_grid, resampling="bilinear"),
        }
    ]


def _pansharpening(
    world: World, size_px: int, rng: np.random.Generator, coverage: float
) -> list[_Item]:
    center = _built_up_center(world, rng)
    pan_grid, ms_grid = worldview3_grids(center, size_px, size_px // PAN_PER_MS)
    pan, ms = worldview3_counts(world, pan_grid, ms_grid, rng)
    ms_grid = _left_columns(ms_grid, coverage)
    ms = ms[:, :, : ms_grid.shape[1]].copy()
    return [
        {
            "pan": _File("worldview3_pan", pan, pan_grid),
            "ms": _File("worldview3_ms", ms, ms_grid),
        }
    ]


def _cloud_removal(
    world: World, size_px: int, rng: np.random.Generator, coverage: float
) -> list[_Item]:
    grid = _sentinel2_grid(size_px, rng)
    cloudy = sentinel2_l1c_counts(world, grid, rng, CLOUD_SCENE, supersample=SUPERSAMPLE)
    s1, s1_grid, _ = sentinel1_file(world, _left_columns(grid, coverage), rng)
    return [
        {"s2_cloudy": _File("sentinel2_l1c", cloudy, grid)},
        {S1_ASSET: _File(S1_SENSOR, s1, s1_grid)},
    ]


def _classification(
    world: World, size_px: int, rng: np.random.Generator, coverage: float
) -> list[_Item]:
    grid = _sentinel2_grid(size_px, rng)
    files = sentinel2_files(world, grid, "native", rng)
    s2 = {
        key: _File("sentinel2_l2a", data, on, LAYOUTS["native"][key][1])
        for key, (data, on, _) in files.items()
    }
    s1, s1_grid, _ = sentinel1_file(world, _left_columns(grid, coverage), rng)
    return [s2, {S1_ASSET: _File(S1_SENSOR, s1, s1_grid)}]


_RENDERERS: dict[str, Callable[[World, int, np.random.Generator, float], list[_Item]]] = {
    "segmentation": _segmentation,
    "pansharpening": _pansharpening,
    "cloud_removal": _cloud_removal,
    "classification": _classification,
}


def main(argv: list[str] | None = None) -> int:
    """Run ``python -m catalogs.sample.task_scenes`` on ``argv``; returns the exit status."""
    parser = argparse.ArgumentParser(
        prog="python -m catalogs.sample.task_scenes",
        description="Render a whole sample-world scene for one downstream task as COGs plus "
        "STAC item JSON files (asset hrefs relative to the item, msgfm:sensor on every asset), "
        "the input of `python -m model.predict --items REFERENCE.json [PARTNER.json]`. "
        "segmentation: Vaihingen-like cir + dsm at 9 cm; pansharpening: WorldView-3 PAN + MS "
        "at 4:1 in EPSG:4326; cloud_removal: cloudy Sentinel-2 L1C (UTM 32N) + a Sentinel-1 "
        "partner item (UTM 33N, rotated grid); classification: Sentinel-2 L2A at 10/20/60 m + "
        "a Sentinel-1 partner item. Prints the item paths, reference first. The same "
        "arguments give byte-identical files.",
    )
    parser.add_argument("--task", required=True, choices=TASKS, help="the downstream task")
    parser.add_argument("--out", type=Path, required=True, help="the scene folder (replaced)")
    parser.add_argument(
        "--size-px",
        type=int,
        default=None,
        help="reference grid side in pixels (pansharpening: PAN, a multiple of 4); default "
        + ", ".join(f"{task} {px}" for task, px in DEFAULT_SIZE_PX.items()),
    )
    parser.add_argument("--seed", type=int, default=0, help="sample world seed (default: 0)")
    parser.add_argument(
        "--partner-coverage",
        type=float,
        default=1.0,
        help="share of the scene's columns, from the left, the partner sensor covers (default "
        "1); below 1, a top-left block of about 5%% of the reference is nodata as well "
        "(item properties msgfm:sample_nodata_window, msgfm:sample_nodata_sensor)",
    )
    args = parser.parse_args(argv)
    start = time.perf_counter()
    try:
        paths = render_task_scene(
            args.task, args.out, args.size_px, args.seed, args.partner_coverage
        )
    except ValueError as error:
        parser.error(str(error))
    for path in paths:
        print(path)
    print(f"{args.task} scene in {time.perf_counter() - start:.1f} s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
