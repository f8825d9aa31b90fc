"""The downstream benchmark sets of the sample world, each in its official on-disk layout.

BigEarthNet (S1 + S2 multi-label), SEN12MS-CR (cloud removal), SpaceNet 2 (PAN + MS) and ISPRS
Vaihingen (IR-R-G + DSM + 6-class mask). Labels come from the same ground the pixels show.

Every writer renders the sizes of a :class:`DownstreamSizes`: :data:`SAMPLE` (the default: the
tiny sets of the sample world) or :data:`BENCHMARK` (mini benchmarks, every split non-empty).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import numpy as np
import rasterio.features
from affine import Affine
from pyproj import Transformer
from shapely.geometry import mapping, shape

from catalogs.grid import Grid
from catalogs.layouts import bigearthnet as bigearthnet_layout
from catalogs.layouts import sen12ms_cr as sen12ms_cr_layout
from catalogs.layouts import spacenet2 as spacenet2_layout
from catalogs.layouts import vaihingen as vaihingen_layout
from catalogs.layouts.sen12ms import Patch
from catalogs.sample import render
from catalogs.sample.camera import (
    quantize_db,
    to_display_8bit,
    to_linear_counts,
    to_scaled_integers,
)
from catalogs.sample.files import write_cog
from catalogs.sample.pretraining import S2_NOISE
from catalogs.sample.sites import find_sites, random_centers, world_grid
from catalogs.sample.world import LANDCOVER_CLASSES, LC, MAT, WORLD_CRS, World
from catalogs.sensors import get_sensor

# CORINE Land Cover level-3 names (BigEarthNet's 43-class nomenclature) of our classes.
CLC_NAMES = {
    "water": "Water bodies",
    "tree_cover": "Mixed forest",
    "shrubland": "Transitional woodland/shrub",
    "grassland": "Pastures",
    "cropland": "Non-irrigated arable land",
    "built_up": "Discontinuous urban fabric",
    "bare": "Sparsely vegetated areas",
    "wetland": "Inland marshes",
}
BIGEARTHNET_SPLITS = {"train": 4, "val": 2, "test": 2}  # the sample's
BIGEARTHNET_PATCH_PX = 120
BIGEARTHNET_MIN_SHARE = 0.05  # a class is a label when it covers at least this share of a patch
BIGEARTHNET_S2_PRODUCT = "S2A_MSIL2A_20170613T101031"
BIGEARTHNET_S2_SOURCE = "S2A_MSIL1C_20170613T101031_N0205_R022_T32UPU_20170613T101525"
BIGEARTHNET_S1_PRODUCT = "S1A_IW_GRDH_1SDV_20170613T165043"
BIGEARTHNET_ACQUIRED = datetime(2017, 6, 13, 10, 10, 31)
BIGEARTHNET_S1_ACQUIRED = datetime(2017, 6, 13, 16, 50, 43)
SEN12MSCR_TRIPLETS = (("ROIs1158_spring", 11, 0), ("ROIs1868_summer", 12, 0))  # the sample's
SEN12MSCR_PATCH_PX = 256
SPACENET_AOI = "AOI_2_Vegas"
SPACENET_IMAGES = 2  # the sample's
SPACENET_PAN_PX = 650
SPACENET_MS_PX = 163
MS_SUPERSAMPLE = 4  # world samples per WorldView-3 MS pixel side
SPACENET_PAN_DEG = 2.7e-6  # SpaceNet ships square pixels in degrees (about 0.3 m of latitude)
VAIHINGEN_AREAS = (1, 2)  # the sample's
VAIHINGEN_PX = 512
VAIHINGEN_GSD_M = 0.09
BUILT_UP_SPACING_M = 1500.0  # least distance between SpaceNet 2 (or Vaihingen) tile centres
CENTER_DRAWS = 100  # rounds of redrawing overlapping patch centres before giving up


@dataclass(frozen=True)
class DownstreamSizes:
    """How much of each downstream set the writers render; each set splits by its own rule.

    Attributes:
        bigearthnet_patches: ``train``, ``val`` and ``test`` -> the number of BigEarthNet
            patches listed in that split's csv.
        sen12ms_cr_triplets: ``(season folder, scene, patch)`` of each SEN12MS-CR triplet, the
            season folder as ``ROIs<id>_<season>``; the dataset splits by (season folder, scene).
        spacenet2_images: the SpaceNet 2 image numbers ``k`` (the dataset splits by ``k % 10``).
        vaihingen_areas: the ISPRS Vaihingen area numbers (the dataset splits by area).

    Raises:
        ValueError: if a set would be empty, the BigEarthNet counts are not three counts >= 0
            for train, val and test, or a triplet, image or area is listed twice.
    """

    bigearthnet_patches: Mapping[str, int]
    sen12ms_cr_triplets: tuple[tuple[str, int, int], ...]
    spacenet2_images: tuple[int, ...]
    vaihingen_areas: tuple[int, ...]

    def __post_init__(self) -> None:
        """Check that every set has a sample, under valid BigEarthNet splits, no entry listed twice.

        Raises:
            ValueError: a BigEarthNet split missing, extra or counted below 0, no BigEarthNet
                patch at all, or an empty list or a repeated entry in another set, naming it.
        """
        counts = dict(self.bigearthnet_patches)
        if sorted(counts) != sorted(BIGEARTHNET_SPLITS) or min(counts.values()) < 0:
            raise ValueError(
                "bigearthnet_patches must give a count >= 0 for each of "
                f"{', '.join(BIGEARTHNET_SPLITS)}, not {counts}"
            )
        if sum(counts.values()) == 0:
            raise ValueError("bigearthnet_patches counts no patch: every set needs a sample")
        listed = {
            "sen12ms_cr_triplets": self.sen12ms_cr_triplets,
            "spacenet2_images": self.spacenet2_images,
            "vaihingen_areas": self.vaihingen_areas,
        }
        for name, entries in listed.items():
            if not entries:
                raise ValueError(f"{name} is empty: every set needs a sample")
            if len(set(entries)) != len(entries):
                raise ValueError(f"{name} lists an entry twice: {entries}")


def scene_triplets(
    patches_per_scene: Mapping[tuple[str, int], int],
) -> tuple[tuple[str, int, int], ...]:
    """SEN12MS-CR triplets ``(season folder, scene, patch)``, patches numbered from 0 per scene.

    Args:
        patches_per_scene: ``(season folder, scene)`` -> the number of triplets in that scene.

    Returns:
        the triplets, scene by scene in the mapping's order
    """
    return tuple(
        (folder, scene, patch)
        for (folder, scene), count in patches_per_scene.items()
        for patch in range(count)
    )


# The tiny sets of the sample world (tests): BigEarthNet 4/2/2 patches, SEN12MS-CR 2 triplets and
# SpaceNet 2 images 1-2 (all train), Vaihingen areas 1 (train) and 2 (test).
SAMPLE = DownstreamSizes(
    bigearthnet_patches=BIGEARTHNET_SPLITS,
    sen12ms_cr_triplets=SEN12MSCR_TRIPLETS,
    spacenet2_images=tuple(range(1, SPACENET_IMAGES + 1)),
    vaihingen_areas=VAIHINGEN_AREAS,
)
# Mini benchmarks: BigEarthNet 64/16/48 patches; SEN12MS-CR 32 train triplets in four scenes off
# the official val/test lists (one per season), 4 in two official val scenes and 12 in four
# official test scenes (one per season); SpaceNet 2 images 1-50 (40/5/5); Vaihingen 6 train and
# 4 test areas.
BENCHMARK = DownstreamSizes(
    bigearthnet_patches={"train": 64, "val": 16, "test": 48},
    sen12ms_cr_triplets=scene_triplets(
        {
            ("ROIs1158_spring", 11): 8,
            ("ROIs1868_summer", 12): 8,
            ("ROIs1970_fall", 13): 8,
            ("ROIs2017_winter", 14): 8,
            ("ROIs1158_spring", 17): 2,
            ("ROIs1970_fall", 65): 2,
            ("ROIs1158_spring", 106): 3,
            ("ROIs1868_summer", 119): 3,
            ("ROIs1970_fall", 139): 3,
            ("ROIs2017_winter", 63): 3,
        }
    ),
    spacenet2_images=tuple(range(1, 51)),
    vaihingen_areas=(1, 2, 3, 4, 5, 6, 7, 8, 11, 13),
)


def _rng(seed: int, *stream: int) -> np.random.Generator:
    return np.random.default_rng([seed, *stream])


def _distinct_centers(
    count: int, width_m: float, rng: np.random.Generator
) -> list[tuple[float, float]]:
    """``count`` random centres of north-up squares ``width_m`` wide that do not overlap.

    The centres come from ``random_centers``; a centre whose square overlaps an earlier one is
    redrawn.
    """
    chosen: list[tuple[float, float]] = []
    for _ in range(CENTER_DRAWS):
        for x, y in random_centers(count - len(chosen), rng):
            if all(max(abs(x - cx), abs(y - cy)) >= width_m for cx, cy in chosen):
                chosen.append((x, y))
        if len(chosen) == count:
            return chosen
    raise ValueError(
        f"could not place {count} non-overlapping patches {width_m:.0f} m wide in "
        f"the world ({len(chosen)} placed)"
    )


def _pool(values: np.ndarray, factor: int) -> np.ndarray:
    """Mean over ``factor`` x ``factor`` blocks: a coarser band integrating the same ground."""
    return render.pixel_mean(values, factor)


def _bigearthnet_metadata(grid: Grid, labels: list[str]) -> dict[str, object]:
    left, bottom, right, top = grid.bounds
    return {
        "labels": labels,
        "coordinates": {"ulx": left, "uly": top, "lrx": right, "lry": bottom},
        "projection": rasterio.crs.CRS.from_user_input(grid.crs).to_wkt(),
    }


def write_bigearthnet(world: World, root: Path, sizes: DownstreamSizes = SAMPLE) -> None:
    """BigEarthNet v1.0-like patches at random places, none overlapping another.

    ``sizes.bigearthnet_patches`` patches: 12 single-band S2 L2A GeoTIFFs per patch on their
    native grids (10/20/60 m), a co-registered S1 patch (VV, VH), CLC labels in the metadata
    JSONs and ``bigearthnet-{train,val,test}.csv`` pairing S2 and S1 patch names (TorchGeo's
    layout).
    """
    s2, s1 = get_sensor("sentinel2_l2a"), get_sensor("sentinel1_grd")
    rng = _rng(world.seed, 5)
    count = sum(sizes.bigearthnet_patches.values())
    centers = _distinct_centers(count, BIGEARTHNET_PATCH_PX * 10.0, rng)
    rows: dict[str, list[str]] = {split: [] for split in sizes.bigearthnet_patches}
    splits = [s for s, n in sizes.bigearthnet_patches.items() for _ in range(n)]
    for index, (center, split) in enumerate(zip(centers, splits, strict=True)):
        grid = world_grid(center, (BIGEARTHNET_PATCH_PX, BIGEARTHNET_PATCH_PX), 10.0)
        patch = f"{index // 10}_{index % 10}"
        s2_name = f"{BIGEARTHNET_S2_PRODUCT}_{patch}"
        s1_name = f"{BIGEARTHNET_S1_PRODUCT}_32UPU_{patch}"
        classes = render.landcover(world, grid)
        shares = np.bincount(classes.ravel(), minlength=len(LANDCOVER_CLASSES)) / classes.size
        labels = sorted(
            CLC_NAMES[c]
            for c, share in zip(LANDCOVER_CLASSES, shares, strict=True)
            if share >= BIGEARTHNET_MIN_SHARE
        )
        noise_rng = _rng(world.seed, 5, index)
        reflectance = render.surface_reflectance(world, grid, s2)
        folder = root / bigearthnet_layout.S2_FOLDER / s2_name
        for band, values in zip(s2.bands, reflectance, strict=True):
            factor = int(band.gsd_m // 10)
            band_grid = Grid(
                grid.crs,
                grid.transform @ Affine.scale(factor),
                (BIGEARTHNET_PATCH_PX // factor,) * 2,
            )
            stored = to_scaled_integers(_pool(values, factor), s2, S2_NOISE, noise_rng)
            write_cog(
                folder / bigearthnet_layout.band_file(s2_name, band.name),
                stored,
                band_grid,
                nodata=s2.nodata,
            )
        metadata = _bigearthnet_metadata(grid, labels)
        (folder / bigearthnet_layout.metadata_file(s2_name)).write_text(
            json.dumps(
                {
                    **metadata,
                    "tile_source": BIGEARTHNET_S2_SOURCE,
                    "acquisition_date": BIGEARTHNET_ACQUIRED.strftime("%Y-%m-%d %H:%M:%S"),
                },
                indent=2,
            )
        )
        folder = root / bigearthnet_layout.S1_FOLDER / s1_name
        sigma0 = quantize_db(render.backscatter_db(world, grid, s1, noise_rng))
        for band, values in zip(s1.bands, sigma0, strict=True):
            write_cog(
                folder / bigearthnet_layout.band_file(s1_name, band.name),
                values,
                grid,
                nodata=s1.nodata,
            )
        (folder / bigearthnet_layout.metadata_file(s1_name)).write_text(
            json.dumps(
                {
                    **metadata,
                    "scene_source": f"{BIGEARTHNET_S1_PRODUCT}_020000_02A0B2_6E9C",
                    "acquisition_time": BIGEARTHNET_S1_ACQUIRED.strftime("%Y-%m-%dT%H:%M:%S"),
                    "corresponding_s2_patch": s2_name,
                },
                indent=2,
            )
        )
        rows[split].append(f"{s2_name},{s1_name}")
    for split, lines in rows.items():
        split_file = root / bigearthnet_layout.SPLIT_FILE.format(split=split)
        split_file.write_text("\n".join(lines) + "\n")


def write_sen12ms_cr(world: World, root: Path, sizes: DownstreamSizes = SAMPLE) -> None:
    """SEN12MS-CR-like triplets at random places, none overlapping another.

    The triplets of ``sizes.sen12ms_cr_triplets``: cloud-free S2 L1C, the same ground under
    fractal clouds and their shadows (another sky per triplet), and S1 (which sees through
    clouds), co-registered, as
    ``ROIs<id>_<season>_{s1,s2,s2_cloudy}/<kind>_<scene>/..._p<patch>.tif``.
    """
    s2, s1 = get_sensor("sentinel2_l1c"), get_sensor("sentinel1_grd")
    rng = _rng(world.seed, 6)
    centers = _distinct_centers(len(sizes.sen12ms_cr_triplets), SEN12MSCR_PATCH_PX * 10.0, rng)
    for index, ((name, scene, patch), center) in enumerate(
        zip(sizes.sen12ms_cr_triplets, centers, strict=True)
    ):
        grid = world_grid(center, (SEN12MSCR_PATCH_PX, SEN12MSCR_PATCH_PX), 10.0)
        noise_rng = _rng(world.seed, 6, index)

        def path(kind: str, name: str = name, scene: int = scene, patch: int = patch) -> Path:
            return sen12ms_cr_layout.member_path(root, Patch(name, scene, patch), kind)

        for kind, cloud_scene in (("s2", None), ("s2_cloudy", index + 1)):
            counts = sentinel2_l1c_counts(world, grid, noise_rng, cloud_scene)
            write_cog(path(kind), counts, grid, nodata=s2.nodata)
        sigma0 = render.backscatter_db(world, grid, s1, _rng(world.seed, 6, index, 1))
        write_cog(path("s1"), quantize_db(sigma0), grid, nodata=s1.nodata)


def sentinel2_l1c_counts(
    world: World,
    grid: Grid,
    rng: np.random.Generator,
    cloud_scene: int | None = None,
    supersample: int = 2,
) -> np.ndarray:
    """Sentinel-2 L1C as SEN12MS-CR stores it: top-of-atmosphere reflectance, scaled uint16.

    Args:
        world: the sample world.
        grid: the grid all 13 bands are rendered on.
        rng: the sensor-noise stream.
        cloud_scene: the sky whose clouds and shadows cover the ground; None: a clear sky.
        supersample: world samples per pixel side.

    Returns:
        (13, rows, cols) uint16
    """
    s2 = get_sensor("sentinel2_l1c")
    reflectance = render.surface_reflectance(
        world, grid, s2, supersample=supersample, cloud_scene=cloud_scene
    )
    return to_scaled_integers(render.top_of_atmosphere(reflectance, s2), s2, S2_NOISE, rng)


def _building_polygons(mask: np.ndarray, grid: Grid) -> list[dict[str, object]]:
    """GeoJSON features of the connected building regions of ``mask`` (the grid's CRS)."""
    features = []
    for number, (geometry, _) in enumerate(
        rasterio.features.shapes(
            mask.astype(np.uint8), mask=mask, transform=grid.transform, connectivity=4
        )
    ):
        features.append(
            {
                "type": "Feature",
                "properties": {"BuildingId": number + 1},
                "geometry": mapping(shape(geometry)),
            }
        )
    return features


def write_spacenet2(world: World, root: Path, sizes: DownstreamSizes = SAMPLE) -> None:
    """SpaceNet 2-like WorldView-3 tiles over built-up ground, in EPSG:4326 as distributed.

    For each ``k`` of ``sizes.spacenet2_images``: ``<AOI>_Train/PAN/PAN_<AOI>_img<k>.tif``
    (11-bit, ~0.3 m), ``MUL/MUL_<AOI>_img<k>.tif`` (8 bands, 4x coarser) and
    ``geojson/buildings/buildings_<AOI>_img<k>.geojson``.
    """
    pan, ms = get_sensor("worldview3_pan"), get_sensor("worldview3_ms")
    rng = _rng(world.seed, 7)
    centers = find_sites(
        world, LC["built_up"], len(sizes.spacenet2_images), BUILT_UP_SPACING_M, rng
    )
    folder = root / spacenet2_layout.AOI_FOLDER_NAME.format(aoi=SPACENET_AOI)
    for k, center in zip(sizes.spacenet2_images, centers, strict=True):
        pan_grid, ms_grid = worldview3_grids(center, SPACENET_PAN_PX, SPACENET_MS_PX)
        noise_rng = _rng(world.seed, 7, k)

        def path(product: str, k: int = k) -> Path:
            return spacenet2_layout.chip_path(folder, product, SPACENET_AOI, k)

        pan_counts, ms_counts = worldview3_counts(world, pan_grid, ms_grid, noise_rng)
        write_cog(
            path(spacenet2_layout.RASTER_PRODUCTS["pan"][0]),
            pan_counts,
            pan_grid,
            nodata=pan.nodata,
        )
        write_cog(
            path(spacenet2_layout.RASTER_PRODUCTS["ms"][0]), ms_counts, ms_grid, nodata=ms.nodata
        )
        building = render.observe(world, pan_grid, 1)[2].building
        labels = path(spacenet2_layout.LABEL_PRODUCT)
        labels.parent.mkdir(parents=True, exist_ok=True)
        labels.write_text(
            json.dumps(
                {"type": "FeatureCollection", "features": _building_polygons(building, pan_grid)}
            )
        )


def worldview3_grids(center: tuple[float, float], pan_px: int, ms_px: int) -> tuple[Grid, Grid]:
    """SpaceNet's square EPSG:4326 PAN and MS grids of one tile centred at ``center``.

    Args:
        center: the tile centre in the world CRS.
        pan_px: the PAN grid's side in pixels of :data:`SPACENET_PAN_DEG`.
        ms_px: the MS grid's side in pixels, over the same extent.

    Returns:
        (PAN grid, MS grid), from one origin
    """
    to_wgs84 = Transformer.from_crs(WORLD_CRS, "EPSG:4326", always_xy=True)
    cx, cy = to_wgs84.transform(*center)
    half = pan_px * SPACENET_PAN_DEG / 2
    pan_grid = Grid(
        "EPSG:4326",
        Affine(SPACENET_PAN_DEG, 0, cx - half, 0, -SPACENET_PAN_DEG, cy + half),
        (pan_px, pan_px),
    )
    ms_step = SPACENET_PAN_DEG * pan_px / ms_px
    ms_grid = Grid(
        "EPSG:4326", Affine(ms_step, 0, cx - half, 0, -ms_step, cy + half), (ms_px, ms_px)
    )
    return pan_grid, ms_grid


def worldview3_counts(
    world: World, pan_grid: Grid, ms_grid: Grid, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """WorldView-3 PAN and MS 11-bit counts as SpaceNet 2 ships them.

    PAN samples the world once per pixel, MS 4 x 4 times (about PAN's sampling at 4x its pixel
    size); the noise of PAN is drawn from ``rng`` before that of MS.

    Returns:
        (PAN (1, rows, cols), MS (8, rows, cols)), uint16
    """
    pan, ms = get_sensor("worldview3_pan"), get_sensor("worldview3_ms")
    k = MS_SUPERSAMPLE
    pan_counts = to_linear_counts(render.surface_reflectance(world, pan_grid, pan, 1), rng)
    if ms_grid.transform == pan_grid.transform * Affine.scale(k) and pan_grid.shape == tuple(
        k * n for n in ms_grid.shape
    ):
        # MS at exactly k x PAN's pixel size: its k x k points per pixel are PAN's pixel centres
        # (bit for bit: the scales are powers of two), so PAN's ground is reused, which halves
        # the cost of a scene; the values are those of the general path below.
        reflectance = render.surface_reflectance(world, pan_grid, ms, 1)
        ms_counts = to_linear_counts(render.pixel_mean(reflectance, k), rng)
    else:
        ms_counts = to_linear_counts(render.surface_reflectance(world, ms_grid, ms, k), rng)
    return pan_counts, ms_counts


# ISPRS colour code: impervious, building, low vegetation, tree, car, clutter/background.
ISPRS_COLOURS = {
    "impervious": (255, 255, 255),
    "building": (0, 0, 255),
    "low_vegetation": (0, 255, 255),
    "tree": (0, 255, 0),
    "car": (255, 255, 0),
    "clutter": (255, 0, 0),
}
_MATERIAL_TO_ISPRS = {
    "water": "clutter",
    "tree": "tree",
    "shrub": "low_vegetation",
    "grass": "low_vegetation",
    "crop": "low_vegetation",
    "impervious": "impervious",
    "roof": "building",
    "bare_soil": "clutter",
    "wetland": "low_vegetation",
    "car": "car",
}
ISPRS_TABLE = np.array([ISPRS_COLOURS[_MATERIAL_TO_ISPRS[m]] for m in MAT], dtype=np.uint8)


def vaihingen_rasters(
    world: World, grid: Grid, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """The IR-R-G orthophoto and the DSM of ISPRS Vaihingen over ``grid``.

    One world sample per pixel; the orthophoto's noise is drawn from ``rng`` before the DSM's
    (5 cm).

    Returns:
        (IR-R-G (3, rows, cols) uint8, surface height in m (rows, cols) float32)
    """
    ground = render.observe(world, grid, 1)[2]
    reflectance = render.surface_reflectance(world, grid, get_sensor("cir"), supersample=1)
    top = to_display_8bit(reflectance, rng)
    height = ground.terrain_m + ground.object_height_m
    return top, (height + rng.normal(0.0, 0.05, height.shape)).astype(np.float32)


def write_vaihingen(world: World, root: Path, sizes: DownstreamSizes = SAMPLE) -> None:
    """ISPRS Vaihingen-like tiles over built-up ground at 9 cm, all on one grid (UTM 32N).

    For each area ``N`` of ``sizes.vaihingen_areas``: ``top/top_mosaic_09cm_area<N>.tif``
    (IR-R-G), ``dsm/dsm_09cm_matching_area<N>.tif`` and the colour-coded ground truth
    ``top_mosaic_09cm_area<N>.tif`` at the root (where the extracted ``..._COMPLETE.zip`` puts
    it and TorchGeo's Vaihingen2D reads it).
    """
    rng = _rng(world.seed, 8)
    centers = find_sites(world, LC["built_up"], len(sizes.vaihingen_areas), BUILT_UP_SPACING_M, rng)
    for area, center in zip(sizes.vaihingen_areas, centers, strict=True):
        grid = world_grid(center, (VAIHINGEN_PX, VAIHINGEN_PX), VAIHINGEN_GSD_M)
        noise_rng = _rng(world.seed, 8, area)
        top, dsm = (
            vaihingen_layout.TOP_FILE.format(area=area),
            vaihingen_layout.DSM_FILE.format(area=area),
        )
        top_counts, heights = vaihingen_rasters(world, grid, noise_rng)
        write_cog(root / vaihingen_layout.TOP_FOLDER / top, top_counts, grid)
        write_cog(root / vaihingen_layout.DSM_FOLDER / dsm, heights, grid, resampling="bilinear")
        ground = render.observe(world, grid, 1)[2]
        write_cog(
            root / vaihingen_layout.LABEL_FOLDERS[0] / top,  # the ground truth
            np.moveaxis(ISPRS_TABLE[ground.material], -1, 0),
            grid,
            resampling="nearest",
        )
