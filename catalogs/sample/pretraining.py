"""The pretraining sources of the sample world, each written in its official on-disk layout.

SEN12MS (S1 + S2 + land cover), MDAS (aerial RGB + DSM), Million-AID and GeoPile (pictures).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from catalogs.layouts import mdas as mdas_layout
from catalogs.layouts import millionaid
from catalogs.layouts.sen12ms import Patch, patch_path
from catalogs.sample import render
from catalogs.sample.camera import quantize_db, to_display_8bit, to_scaled_integers
from catalogs.sample.files import write_cog, write_picture
from catalogs.sample.sites import covering_grid, find_sites, random_centers, world_grid
from catalogs.sample.world import LANDCOVER_CLASSES, LC, World
from catalogs.sensors import get_sensor

S2_NOISE = 0.0005  # reflectance units, per band and pixel
SEN12MS_PATCH_PX = 256
# SEN12MS's four ROI collections, one per season; scene i is in SEN12MS_ROIS[i % 4], numbered
# 2 i + 1, a row of SEN12MS_PATCHES_PER_SCENE adjacent patches.
SEN12MS_ROIS = (
    ("ROIs1158", "spring"),
    ("ROIs1868", "summer"),
    ("ROIs1970", "fall"),
    ("ROIs2017", "winter"),
)
SEN12MS_PATCHES_PER_SCENE = 2


@dataclass(frozen=True)
class PretrainingSizes:
    """How much of the paired pretraining sources the writers render.

    Attributes:
        sen12ms_scenes: SEN12MS scenes (each ``SEN12MS_PATCHES_PER_SCENE`` S1 + S2 patches).
        mdas_sub_areas: MDAS sub-areas over built-up ground (each 4 chips of RGB + DSM).

    Raises:
        ValueError: if a count is below 1.
    """

    sen12ms_scenes: int
    mdas_sub_areas: int

    def __post_init__(self) -> None:
        """Check that every source has at least one scene or sub-area."""
        for name in ("sen12ms_scenes", "mdas_sub_areas"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")

    def sen12ms_scene_ids(self) -> list[tuple[str, str, int]]:
        """``(ROI collection, season, scene number)`` of each SEN12MS scene, in order."""
        return [
            (*SEN12MS_ROIS[i % len(SEN12MS_ROIS)], 2 * i + 1) for i in range(self.sen12ms_scenes)
        ]


# The tests' world: every source in seconds (4 S1 + S2 pairs, 8 DSM + RGB chips).
SMALL = PretrainingSizes(sen12ms_scenes=2, mdas_sub_areas=2)
# `dvc repro`'s corpus: 32 S1 + S2 pairs and 24 DSM + RGB chips, so that pretraining sees more
# ground than a downstream training set holds, as GeoPile-2 does at full scale. SMALL's 4
# Sentinel-2 chips hold less Sentinel-2 ground than the 64 BigEarthNet training patches.
CORPUS = PretrainingSizes(sen12ms_scenes=16, mdas_sub_areas=6)
# The sizes the command line and params.yaml can name.
NAMED_SIZES: dict[str, PretrainingSizes] = {"small": SMALL, "corpus": CORPUS}
# Our land-cover classes as the MODIS layers SEN12MS ships: IGBP, LCCS land cover, LCCS land
# use, LCCS surface hydrology (MCD12Q1 legend codes).
MODIS_CODES = {
    "water": (17, 3, 3, 3),
    "tree_cover": (5, 15, 10, 10),
    "shrubland": (7, 43, 40, 40),
    "grassland": (10, 31, 30, 30),
    "cropland": (12, 31, 36, 30),
    "built_up": (13, 1, 9, 1),
    "bare": (16, 1, 1, 1),
    "wetland": (11, 31, 30, 50),
}
MODIS_TABLE = np.array([MODIS_CODES[c] for c in LANDCOVER_CLASSES], dtype=np.uint16)


def _rng(seed: int, *stream: int) -> np.random.Generator:
    return np.random.default_rng([seed, *stream])


def write_sen12ms(world: World, root: Path, sizes: PretrainingSizes = SMALL) -> None:
    """SEN12MS-like patches: Sentinel-2 L2A, Sentinel-1 and MODIS-coded land cover.

    Sentinel-2 L2A on UTM 32N, Sentinel-1 on UTM 33N (a rotated grid with a sub-pixel origin shift,
    so co-registration is real work) and land cover on the Sentinel-2 grid, as
    ``ROIs<id>_<season>/<kind>_<scene>/..._p<patch>.tif``; ``sizes.sen12ms_scenes`` scenes.
    """
    s2, s1 = get_sensor("sentinel2_l2a"), get_sensor("sentinel1_grd")
    rng = _rng(world.seed, 1)
    scenes = sizes.sen12ms_scene_ids()
    centers = random_centers(len(scenes), rng)
    width_m = SEN12MS_PATCH_PX * 10.0
    for (roi, season, scene), (cx, cy) in zip(scenes, centers, strict=True):
        for patch in range(SEN12MS_PATCHES_PER_SCENE):
            center = (cx + (patch - 0.5) * width_m, cy)
            grid = world_grid(center, (SEN12MS_PATCH_PX, SEN12MS_PATCH_PX), 10.0)
            name = f"{roi}_{season}"

            def stem(kind: str, name: str = name, scene: int = scene, patch: int = patch) -> Path:
                return patch_path(root / name, Patch(name, scene, patch), kind)

            noise_rng = _rng(world.seed, 1, scene, patch)
            reflectance = render.surface_reflectance(world, grid, s2)
            write_cog(
                stem("s2"),
                to_scaled_integers(reflectance, s2, S2_NOISE, noise_rng),
                grid,
                nodata=s2.nodata,
            )
            s1_grid = covering_grid(grid, "EPSG:32633", 10.0, margin=60.0, origin_shift=(3.0, 7.0))
            sigma0 = render.backscatter_db(world, s1_grid, s1, noise_rng)
            write_cog(stem("s1"), quantize_db(sigma0), s1_grid, nodata=s1.nodata)
            classes = render.landcover(world, grid)
            write_cog(
                stem("lc"),
                np.moveaxis(MODIS_TABLE[classes], -1, 0),
                grid,
                nodata=0,
                resampling="nearest",
            )


MDAS_RGB_GSD_M = 0.3
MDAS_RGB_PX = 400
MDAS_DSM_GSD_M = 0.5


def write_mdas(world: World, root: Path, sizes: PretrainingSizes = SMALL) -> None:
    """MDAS-like sub-areas over built-up ground: 3K_RGB, 3K_DSM and osm_buildings.

    ``sizes.mdas_sub_areas`` sub-areas. 3K_RGB (8-bit, 0.3 m, UTM 32N / WGS84), 3K_DSM (0.5 m,
    ETRS89 / UTM 32N, its own origin) and osm_buildings on the DSM grid, as
    ``Augsburg_data_4_publication/sub_area_<N>/<modality>_sub_area<N>.tif``.
    """
    rgb_sensor, dsm_sensor = get_sensor("rgb"), get_sensor("dsm")
    rng = _rng(world.seed, 2)
    centers = find_sites(world, LC["built_up"], sizes.mdas_sub_areas, 3000.0, rng)
    for number, center in enumerate(centers, start=1):
        folder = root / mdas_layout.DATA_FOLDER / mdas_layout.SUB_AREA_FOLDER.format(number=number)
        grid = world_grid(center, (MDAS_RGB_PX, MDAS_RGB_PX), MDAS_RGB_GSD_M)
        noise_rng = _rng(world.seed, 2, number)
        reflectance = render.surface_reflectance(world, grid, rgb_sensor, supersample=1)
        write_cog(
            folder / mdas_layout.sub_area_file("3K_RGB", number),
            to_display_8bit(reflectance, noise_rng),
            grid,
        )
        dsm_grid = covering_grid(
            grid, "EPSG:25832", MDAS_DSM_GSD_M, margin=2.0, origin_shift=(0.2, 0.1)
        )
        ground = render.observe(world, dsm_grid, 1)[2]
        height = ground.terrain_m + ground.object_height_m
        height = (height + noise_rng.normal(0.0, 0.05, height.shape)).astype(np.float32)
        write_cog(
            folder / mdas_layout.sub_area_file("3K_DSM", number),
            height,
            dsm_grid,
            nodata=dsm_sensor.nodata,
            resampling="bilinear",
        )
        write_cog(
            folder / mdas_layout.sub_area_file("osm_buildings", number),
            ground.building.astype(np.uint8),
            dsm_grid,
            resampling="nearest",
        )


# Million-AID's scene hierarchy (level 1 / level 2 / level 3) for the dominant class of a picture.
MILLIONAID_CATEGORIES = {
    "water": ("water_area", "lake"),
    "tree_cover": ("agriculture_land", "woodland", "forest"),
    "shrubland": ("agriculture_land", "woodland", "shrubwood"),
    "grassland": ("agriculture_land", "grassland", "meadow"),
    "cropland": ("agriculture_land", "arable_land", "dry_field"),
    "built_up": ("residential_land", "detached_house"),
    "bare": ("unutilized_land", "bare_land"),
    "wetland": ("unutilized_land", "natural_land", "wetland"),
}
MILLIONAID_TRAIN = 12
MILLIONAID_TEST = 4
PICTURE_GSDS_M = (0.5, 1.0, 2.0, 4.0, 8.0)


def _picture(
    world: World, rng: np.random.Generator, size_px: int, gsd_m: float
) -> tuple[np.ndarray, str]:
    """An 8-bit RGB picture of random ground and its dominant land-cover class."""
    (center,) = random_centers(1, rng)
    grid = world_grid(center, (size_px, size_px), gsd_m)
    reflectance = render.surface_reflectance(world, grid, get_sensor("rgb"), supersample=1)
    counts = np.bincount(render.landcover(world, grid).ravel(), minlength=len(LANDCOVER_CLASSES))
    return to_display_8bit(reflectance, rng), LANDCOVER_CLASSES[int(np.argmax(counts))]


def write_millionaid(world: World, root: Path) -> None:
    """Million-AID-like JPEGs without georeference, at varied GSD.

    As ``train/<L1>/<L2>[/<L3>]/P<number>.jpg`` labelled by dominant class, and ``test/``.
    """
    rng = _rng(world.seed, 3)
    for number in range(MILLIONAID_TRAIN + MILLIONAID_TEST):
        size = int(rng.choice((128, 192, 256)))
        rgb, dominant = _picture(world, rng, size, float(rng.choice(PICTURE_GSDS_M)))
        name = f"P{number:07d}{millionaid.IMAGE_SUFFIX}"
        if number < MILLIONAID_TRAIN:
            labels = Path(*MILLIONAID_CATEGORIES[dominant])
            path = root / millionaid.TRAIN_FOLDER / labels / name
        else:
            path = root / millionaid.TEST_FOLDER / name
        write_picture(path, rgb)


# GeoPile's constituents: folder name -> (file suffix, typical GSDs in m).
GEOPILE_CONSTITUENTS = {
    "NAIP": (".png", (1.0,)),
    "RSD46-WHU": (".jpg", (0.5, 1.0, 2.0)),
    "MLRSNet": (".jpg", (0.5, 1.0, 2.0, 4.0)),
    "RESISC45": (".jpg", (0.5, 1.0, 2.0, 8.0)),
    "PatternNet": (".jpg", (0.5, 1.0)),
}
GEOPILE_PER_CONSTITUENT = 3


def write_geopile(world: World, root: Path) -> None:
    """GeoPile-like pictures without georeference, one folder per constituent dataset.

    As ``<constituent>/<dominant class>/<constituent>_<number>.<jpg|png>``.
    """
    rng = _rng(world.seed, 4)
    for constituent, (suffix, gsds) in GEOPILE_CONSTITUENTS.items():
        for number in range(GEOPILE_PER_CONSTITUENT):
            rgb, dominant = _picture(world, rng, 128, float(rng.choice(gsds)))
            name = f"{constituent.lower().replace('-', '_')}_{number:04d}{suffix}"
            write_picture(root / constituent / dominant / name, rgb)
