"""Scene-level Sentinel-2 L2A / Sentinel-1 pairs rendered from the sample world, as COGs.

They are the input of the pipeline and loader benchmarks (``python -m pipeline.benchmarks``,
``python -m model.benchmarks loader``), catalogued as the fetch stage hands items on or as a static
STAC catalog.

Each scene is ``scene_px`` x ``scene_px`` pixels of 10 m Sentinel-2 L2A (12 bands, uint16) on
UTM 32N and a Sentinel-1 dB pair (VV, VH, float32) on UTM 33N over the same ground plus a
margin: a grid rotated by about 2 degrees with a sub-pixel origin shift, as
:func:`catalogs.sample.pretraining.write_sen12ms` renders its patches, but scene-sized. Two
Sentinel-2 layouts (:data:`LAYOUTS`):

- ``native``: as Level-2A products deliver a scene (the R10m / R20m / R60m folders of a SAFE
  product): one COG per resolution, B02 B03 B04 B08 at 10 m (asset ``s2``, the reference grid),
  B05 B06 B07 B8A B11 B12 at 20 m (``s2_20m``), B01 B09 at 60 m (``s2_60m``), all grids from
  one origin; co-registration resamples the 20 m and 60 m bands onto the 10 m grid.
- ``stacked``: all 12 bands already at 10 m in one COG (asset ``s2``), as SEN12MS ships its
  patches; only Sentinel-1 is warped.

Scenes are cached under ``<cache_dir>/<key>/`` (the key names every parameter the files depend
on), one scene at a time, each moved into place whole, so a later run with more scenes renders
only the new ones.
"""

from __future__ import annotations

from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pystac

from catalogs.atomic_files import atomic_folder
from catalogs.collections import source_collection
from catalogs.grid import Grid
from catalogs.sample import render
from catalogs.sample.camera import quantize_db, to_scaled_integers
from catalogs.sample.files import write_cog
from catalogs.sample.pretraining import S2_NOISE
from catalogs.sample.sites import covering_grid, random_centers, world_grid
from catalogs.sample.world import World
from catalogs.sensors import get_sensor
from catalogs.stac import make_item, raster_asset, write_catalog

COLLECTION = "sen12ms"  # params.yaml's sen12ms grid applies: reference asset s2, 256 px chips
S2_SENSOR = "sentinel2_l2a"
S1_SENSOR = "sentinel1_grd"
S1_ASSET = "s1"
S1_CRS = "EPSG:32633"
GSD_M = 10.0
S1_MARGIN_M = 60.0
S1_ORIGIN_SHIFT_M = (3.0, 7.0)
SUPERSAMPLE = 1  # one world sample per pixel: the pixels' content does not matter to a bench
ACQUIRED = datetime(2017, 6, 15, 10, 30, tzinfo=UTC)
FORMAT = 1  # bump when the files a key names change

# Layout -> Sentinel-2 asset key -> (pixel size in m, the registry bands the file holds).
LAYOUTS: dict[str, dict[str, tuple[float, tuple[str, ...]]]] = {
    "native": {
        "s2": (10.0, ("B02", "B03", "B04", "B08")),
        "s2_20m": (20.0, ("B05", "B06", "B07", "B8A", "B11", "B12")),
        "s2_60m": (60.0, ("B01", "B09")),
    },
    "stacked": {
        "s2": (
            10.0,
            ("B01", "B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B09", "B11", "B12"),
        ),
    },
}


@dataclass(frozen=True)
class SceneSet:
    """The bench scenes of one set of generation parameters, and where they are cached."""

    cache_dir: Path
    seed: int = 0
    scene_px: int = 1024
    layout: str = "native"

    def __post_init__(self) -> None:
        """Check the layout.

        Raises:
            ValueError: ``layout`` is not one of :data:`LAYOUTS`.
        """
        if self.layout not in LAYOUTS:
            raise ValueError(f"layout {self.layout!r}: not one of {sorted(LAYOUTS)}")

    @property
    def root(self) -> Path:
        """The folder of this key's scenes."""
        return self.cache_dir / f"scenes-v{FORMAT}-{self.layout}-seed{self.seed}-px{self.scene_px}"

    @property
    def asset_keys(self) -> tuple[str, ...]:
        """The asset keys of every scene: this layout's Sentinel-2 assets, then Sentinel-1's."""
        return (*LAYOUTS[self.layout], S1_ASSET)

    def path(self, scene: int, asset: str) -> Path:
        """The COG of asset ``asset`` of scene ``scene``."""
        return self.root / f"{scene:04d}" / f"{asset}.tif"

    def exists(self, scene: int) -> bool:
        """Whether every asset of scene ``scene`` is cached."""
        return all(self.path(scene, asset).exists() for asset in self.asset_keys)

    def item_id(self, scene: int) -> str:
        """The STAC item id of scene ``scene``."""
        return f"bench_{self.layout}_{scene:04d}"


def ensure_scenes(scenes: SceneSet, count: int, processes: int = 1) -> int:
    """Render the scenes ``0 .. count-1`` not cached yet; returns how many were rendered."""
    missing = [i for i in range(count) if not scenes.exists(i)]
    if not missing:
        return 0
    scenes.root.mkdir(parents=True, exist_ok=True)
    if processes <= 1 or len(missing) == 1:
        for scene in missing:
            render_scene(scenes, scene)
    else:
        with ProcessPoolExecutor(min(processes, len(missing))) as pool:
            list(pool.map(render_scene, [scenes] * len(missing), missing))
    return len(missing)


def render_scene(scenes: SceneSet, scene: int) -> None:
    """Render one scene's COGs into a temporary folder, then move them into place."""
    world = World(scenes.seed)
    rng = np.random.default_rng([scenes.seed, 9000, scene])
    (center,) = random_centers(1, rng)
    grid = world_grid(center, (scenes.scene_px, scenes.scene_px), GSD_M)
    files = sentinel2_files(world, grid, scenes.layout, rng)
    files[S1_ASSET] = sentinel1_file(world, grid, rng)
    with atomic_folder(scenes.path(scene, S1_ASSET).parent) as staging:
        staging.chmod(0o755)
        for asset, (data, on, nodata) in files.items():
            write_cog(staging / f"{asset}.tif", data, on, nodata=nodata)


def sentinel2_files(
    world: World, grid: Grid, layout: str, rng: np.random.Generator
) -> dict[str, tuple[np.ndarray, Grid, float | None]]:
    """Sentinel-2 L2A over the 10 m ``grid`` in ``layout``, as the files of one scene.

    Args:
        world: the sample world.
        grid: the 10 m reference grid.
        layout: one of :data:`LAYOUTS`.
        rng: the sensor-noise stream (drawn asset by asset, in layout order).

    Returns:
        asset key -> (stored uint16 (bands, rows, cols), its grid, nodata), in layout order
    """
    s2 = get_sensor(S2_SENSOR)
    files: dict[str, tuple[np.ndarray, Grid, float | None]] = {}
    for asset, (gsd_m, bands) in LAYOUTS[layout].items():
        on = grid.coarsened(gsd_m / grid.transform.a)  # as a tile's 20 m and 60 m grids
        reflectance = render.surface_reflectance(world, on, s2, supersample=SUPERSAMPLE)
        picked = reflectance[[s2.band_names.index(name) for name in bands]]
        files[asset] = (to_scaled_integers(picked, s2, S2_NOISE, rng), on, s2.nodata)
        del reflectance, picked
        render.observe.cache_clear()
    return files


def sentinel1_file(
    world: World, grid: Grid, rng: np.random.Generator
) -> tuple[np.ndarray, Grid, float | None]:
    """Sentinel-1 dB (VV, VH) on UTM 33N over ``grid``'s footprint plus a margin.

    Its grid is :func:`~catalogs.sample.sites.covering_grid` of ``grid`` in :data:`S1_CRS`:
    another zone (so rotated by about 2 degrees against ``grid``), :data:`S1_MARGIN_M` beyond it
    on every side, its origin moved by :data:`S1_ORIGIN_SHIFT_M`.

    Returns:
        (stored float32 (2, rows, cols), its grid, nodata)
    """
    s1 = get_sensor(S1_SENSOR)
    s1_grid = covering_grid(grid, S1_CRS, GSD_M, margin=S1_MARGIN_M, origin_shift=S1_ORIGIN_SHIFT_M)
    sigma0 = render.backscatter_db(world, s1_grid, s1, rng, supersample=SUPERSAMPLE)
    render.observe.cache_clear()
    return quantize_db(sigma0), s1_grid, s1.nodata


def scene_items(scenes: SceneSet, count: int) -> list[pystac.Item]:
    """The STAC items of scenes ``0 .. count-1``, with absolute local asset hrefs.

    Each asset is made by :func:`catalogs.stac.raster_asset` as the catalog builders make them.

    Raises:
        RuntimeError: when a scene is not rendered.
    """
    missing = [scene for scene in range(count) if not scenes.exists(scene)]
    if missing:
        raise RuntimeError(f"{scenes.root}: scenes {missing} are not rendered (ensure_scenes)")
    s2, s1 = get_sensor(S2_SENSOR), get_sensor(S1_SENSOR)
    items = []
    for scene in range(count):
        assets = {
            key: raster_asset(scenes.path(scene, key).resolve(), s2, band_names=bands)
            for key, (_, bands) in LAYOUTS[scenes.layout].items()
        }
        assets[S1_ASSET] = raster_asset(scenes.path(scene, S1_ASSET).resolve(), s1)
        items.append(make_item(scenes.item_id(scene), assets, ACQUIRED, footprint_asset="s2"))
    return items


def write_scene_catalog(scenes: SceneSet, count: int, out_dir: Path) -> Path:
    """A static STAC catalog ``out_dir/catalog.json`` of scenes ``0 .. count-1``.

    The scenes form one :data:`COLLECTION` collection (their files stay where they are).

    Raises:
        RuntimeError: when a scene is not rendered.
    """
    collection = source_collection(COLLECTION, scene_items(scenes, count), sample=True)
    return write_catalog(
        out_dir,
        [collection],
        "bench-scenes",
        f"{count} bench scenes ({scenes.layout}, {scenes.scene_px} px) "
        f"rendered from sample world seed {scenes.seed}",
    )


def catalog_items(scenes: SceneSet, count: int) -> list[dict[str, Any]]:
    """The items of scenes ``0 .. count-1`` as the fetch stage hands them on.

    STAC item dicts with ``collection`` and absolute local asset hrefs, each asset made by
    :func:`catalogs.stac.raster_asset` (registry sensor, bands, file size and checksum) as the
    catalog builders make them.

    Raises:
        RuntimeError: when a scene is not rendered.
    """
    items = []
    for item in scene_items(scenes, count):
        record = item.to_dict(include_self_link=False, transform_hrefs=False)
        record["collection"] = COLLECTION
        items.append(record)
    return items
