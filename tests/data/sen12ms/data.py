"""Generate a tiny SEN12MS copy in the official layout."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from affine import Affine

from tests.data.rasters import write_geotiff

SEED = 0
SIZE = 16  # pixels per side of every patch
# Sentinel-1 and Sentinel-2 of one patch lie on different grids and CRSs, as in the sample world.
S1_GRID = ("EPSG:32632", Affine(10.0, 0.0, 690000.0, 0.0, -10.0, 5340000.0))
S2_GRID = ("EPSG:32633", Affine(10.0, 0.0, 250000.0, 0.0, -10.0, 5341000.0))
LC_GRID = S2_GRID
KIND_GRIDS = {"s1": S1_GRID, "s2": S2_GRID, "lc": LC_GRID}

# (season folder, scene, patch) -> {kind: band count} of the valid patches.
VALID_PATCHES: dict[tuple[str, int, int], dict[str, int]] = {
    ("ROIs1158_spring", 1, 4): {"s1": 2, "s2": 12},
    ("ROIs1158_spring", 1, 30): {"s1": 2, "s2": 13, "lc": 4},
    ("ROIs2017_winter", 7, 2): {"s1": 2, "s2": 12, "lc": 4},
}
# Patches with a problem, written only with ``broken=True``; the truncated file is s2 of p41.
BROKEN_PATCHES: dict[tuple[str, int, int], dict[str, int]] = {
    ("ROIs1158_spring", 1, 40): {"s1": 2},  # s2 partner missing
    ("ROIs1158_spring", 1, 41): {"s1": 2, "s2": 13},  # s2 truncated
    ("ROIs2017_winter", 7, 3): {"s1": 3, "s2": 12},  # s1 with a 3rd band
    ("ROIs2017_winter", 7, 9): {"s1": 2, "s2": 12, "lc": 2},  # lc with 2 of its 4 bands
}
TRUNCATED = ("ROIs1158_spring", 1, 41, "s2")
MISNAMED = "ROIs2017_winter/s1_7/ROIs2017_winter_s1_8_p5.tif"  # scene 8 in folder s1_7
STRAY_FOLDER = "extras"
DTYPES = {"s1": "float32", "s2": "uint16", "lc": "uint16"}


def patch_path(root: Path, season_folder: str, scene: int, patch: int, kind: str) -> Path:
    """Where the official layout puts one file of a patch."""
    name = f"{season_folder}_{kind}_{scene}_p{patch}.tif"
    return root / season_folder / f"{kind}_{scene}" / name


def _patch_data(rng: np.random.Generator, kind: str, count: int) -> np.ndarray:
    if kind == "s1":  # backscatter in dB
        return rng.normal(-15.0, 4.0, (count, SIZE, SIZE)).astype(DTYPES[kind])
    if kind == "s2":  # reflectance * 10000
        return rng.integers(1, 6000, (count, SIZE, SIZE)).astype(DTYPES[kind])
    return rng.integers(1, 18, (count, SIZE, SIZE)).astype(DTYPES[kind])  # land-cover classes


def make_sen12ms(root: Path, broken: bool = False) -> Path:
    """Write the valid patches (and, with ``broken``, the damaged and stray files) under ``root``.

    Args:
        root: the folder to hold the ``ROIs<id>_<season>`` folders; created if missing.
        broken: also write ``BROKEN_PATCHES``, the truncated file, ``MISNAMED`` and
            ``STRAY_FOLDER``.

    Returns:
        ``root``.
    """
    rng = np.random.default_rng(SEED)
    patches = {**VALID_PATCHES, **(BROKEN_PATCHES if broken else {})}
    for (season_folder, scene, patch), counts in patches.items():
        for kind, count in counts.items():
            path = patch_path(root, season_folder, scene, patch, kind)
            write_geotiff(path, _patch_data(rng, kind, count), *KIND_GRIDS[kind])
    if broken:
        truncated = patch_path(root, *TRUNCATED)
        truncated.write_bytes(truncated.read_bytes()[: truncated.stat().st_size // 2])
        write_geotiff(root / MISNAMED, _patch_data(rng, "s1", 2), *S1_GRID)
        (root / STRAY_FOLDER).mkdir()
    return root
