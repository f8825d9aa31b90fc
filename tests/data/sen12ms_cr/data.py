"""Generate a tiny SEN12MS-CR copy in the official layout."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from affine import Affine

from tests.data.rasters import write_geotiff

SEED = 0
SIZE = 16  # pixels per side of every patch
CRS = "EPSG:32633"  # the three files of a triplet share one grid, as in the real data
TRANSFORM = (10.0, 0.0, 250000.0, 0.0, -10.0, 5341000.0)
MODALITIES = ("s1", "s2", "s2_cloudy")
DTYPES = {"s1": "float32", "s2": "uint16", "s2_cloudy": "uint16"}

# (season folder, scene, patch) -> {modality: band count} of the valid triplets.
VALID_TRIPLETS: dict[tuple[str, int, int], dict[str, int]] = {
    ("ROIs1158_spring", 1, 30): {"s1": 2, "s2": 13, "s2_cloudy": 13},
    ("ROIs1158_spring", 1, 31): {"s1": 2, "s2": 12, "s2_cloudy": 12},  # L2A band count
    ("ROIs2017_winter", 5, 7): {"s1": 2, "s2": 13, "s2_cloudy": 13},
}
# Triplets with a problem, written only with ``broken=True``.
BROKEN_TRIPLETS: dict[tuple[str, int, int], dict[str, int]] = {
    ("ROIs1158_spring", 1, 40): {"s1": 2, "s2": 13},  # s2_cloudy missing
    ("ROIs1158_spring", 1, 41): {"s1": 2, "s2": 13, "s2_cloudy": 13},  # s2_cloudy truncated
    ("ROIs2017_winter", 5, 8): {"s1": 3, "s2": 13, "s2_cloudy": 13},  # s1 with a 3rd band
}
# Complete 13-band triplets in scenes of SEN12MS-CR's official validation and test splits,
# written only with ``splits=True`` (from their own random stream).
SPLIT_TRIPLETS: dict[tuple[str, int, int], dict[str, int]] = {
    ("ROIs2017_winter", 22, 4): {"s1": 2, "s2": 13, "s2_cloudy": 13},  # val scene
    ("ROIs1158_spring", 106, 3): {"s1": 2, "s2": 13, "s2_cloudy": 13},  # test scene
}
TRUNCATED = ("ROIs1158_spring", 1, 41, "s2_cloudy")
MISNAMED = "ROIs2017_winter_s2/s2_5/ROIs2017_winter_s2_6_p9.tif"  # scene 6 in folder s2_5
STRAY_FOLDER = "ROIs2017_winter_lc"


def triplet_path(root: Path, season_folder: str, scene: int, patch: int, modality: str) -> Path:
    """Where the official layout puts one file of a triplet."""
    name = f"{season_folder}_{modality}_{scene}_p{patch}.tif"
    return root / f"{season_folder}_{modality}" / f"{modality}_{scene}" / name


def _values(rng: np.random.Generator, modality: str, count: int) -> np.ndarray:
    if modality == "s1":  # backscatter in dB
        return rng.normal(-15.0, 4.0, (count, SIZE, SIZE)).astype(DTYPES[modality])
    return rng.integers(1, 10000, (count, SIZE, SIZE)).astype(DTYPES[modality])  # reflectance


def _triplet_values(
    rng: np.random.Generator, triplets: dict[tuple[str, int, int], dict[str, int]]
) -> dict[tuple[str, int, int], dict[str, np.ndarray]]:
    """The pixels of ``triplets``, drawn from ``rng`` in the order they are written."""
    return {
        triplet: {modality: _values(rng, modality, count) for modality, count in counts.items()}
        for triplet, counts in triplets.items()
    }


def triplet_values(splits: bool = False) -> dict[tuple[str, int, int], dict[str, np.ndarray]]:
    """The pixels :func:`make_sen12ms_cr` writes for ``VALID_TRIPLETS`` (and, with ``splits``,
    ``SPLIT_TRIPLETS``): ``{(season folder, scene, patch): {modality: (bands, rows, cols)}}``."""
    values = _triplet_values(np.random.default_rng(SEED), VALID_TRIPLETS)
    if splits:
        values.update(_triplet_values(np.random.default_rng([SEED, 1]), SPLIT_TRIPLETS))
    return values


def make_sen12ms_cr(root: Path, broken: bool = False, splits: bool = False) -> Path:
    """Write the valid triplets (and, with ``broken``, the damaged and stray files) under ``root``.

    Args:
        root: the folder to hold the ``ROIs<id>_<season>_<modality>`` folders.
        broken: also write ``BROKEN_TRIPLETS``, truncate ``TRUNCATED`` and write ``MISNAMED``
            and ``STRAY_FOLDER``.
        splits: also write ``SPLIT_TRIPLETS`` (scenes of the validation and test splits).

    Returns:
        ``root``.
    """
    rng = np.random.default_rng(SEED)
    triplets = {**VALID_TRIPLETS, **(BROKEN_TRIPLETS if broken else {})}
    values = _triplet_values(rng, triplets)
    if splits:
        values.update(_triplet_values(np.random.default_rng([SEED, 1]), SPLIT_TRIPLETS))
    for (season_folder, scene, patch), by_modality in values.items():
        for modality, pixels in by_modality.items():
            write_geotiff(
                triplet_path(root, season_folder, scene, patch, modality),
                pixels,
                CRS,
                Affine(*TRANSFORM),
            )
    if broken:
        truncated = triplet_path(root, *TRUNCATED)
        truncated.write_bytes(truncated.read_bytes()[: truncated.stat().st_size // 2])
        write_geotiff(root / MISNAMED, _values(rng, "s2", 13), CRS, Affine(*TRANSFORM))
        (root / STRAY_FOLDER).mkdir()
    return root
