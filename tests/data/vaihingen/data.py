"""Generate a tiny ISPRS Vaihingen copy in the layout TorchGeo's Vaihingen2D reads."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from affine import Affine

from tests.data.rasters import write_geotiff

SEED = 0
HEIGHT, WIDTH = 24, 32
CRS = "EPSG:32632"
GSD_M = 0.09
BUILDING, TREE = (0, 0, 255), (0, 255, 0)  # ISPRS colours of two of the six classes
# Area -> folder of its ground truth ("." is the root, as unpacked from the COMPLETE zip),
# None where it has none.
GEOREFERENCED_AREAS: dict[int, str | None] = {1: ".", 2: "gts_for_participants"}
UNGEOREFERENCED_AREAS: dict[int, str | None] = {4: None}  # as the real files: no CRS

# What ``damage`` does, in the order the builder reports it.
MISNAMED = "top/top_mosaic_09cm_area5.tiff"
ORPHAN_DSM = "dsm/dsm_09cm_matching_area9.tif"
WRONG_BAND_COUNT = "dsm/dsm_09cm_matching_area1.tif"  # 2 bands
TRUNCATED = "top/top_mosaic_09cm_area2.tif"


def area_path(root: Path, area: int, kind: str, folder: str = ".") -> Path:
    """The ``cir`` (top), ``dsm`` or ``labels`` file of ``area``; labels in ``folder``."""
    if kind == "cir":
        return root / "top" / f"top_mosaic_09cm_area{area}.tif"
    if kind == "dsm":
        return root / "dsm" / f"dsm_09cm_matching_area{area}.tif"
    return root / folder / f"top_mosaic_09cm_area{area}.tif"


def area_transform(area: int) -> list[float]:
    """The affine transform (6 coefficients) of a georeferenced area's grid (UTM 32N)."""
    return [GSD_M, 0.0, 496000.0 + 100.0 * area, 0.0, -GSD_M, 5420000.0]


def cir_values(area: int) -> np.ndarray:
    """The orthophoto (near-infrared, red, green) of an area."""
    rng = np.random.default_rng([SEED, area])
    return rng.integers(0, 256, (3, HEIGHT, WIDTH)).astype("uint8")


def label_values() -> np.ndarray:
    """Ground truth: building on the left half, tree on the right."""
    colours = np.empty((3, HEIGHT, WIDTH), dtype="uint8")
    colours[:, :, : WIDTH // 2] = np.array(BUILDING, dtype="uint8")[:, None, None]
    colours[:, :, WIDTH // 2 :] = np.array(TREE, dtype="uint8")[:, None, None]
    return colours


def dsm_values(area: int) -> np.ndarray:
    """The DSM (1 band, metres) of an area."""
    return _dsm_values(area)


def _dsm_values(area: int, count: int = 1) -> np.ndarray:
    rng = np.random.default_rng([SEED, area, 1])
    return (250.0 + rng.random((count, HEIGHT, WIDTH)) * 20.0).astype("float32")


def write_tiff(path: Path, values: np.ndarray, transform: list[float] | None) -> None:
    """Write ``values`` (bands, rows, cols) as a TIFF: in UTM 32N, or ungeoreferenced."""
    if transform is None:
        write_geotiff(path, values)
    else:
        write_geotiff(path, values, CRS, Affine(*transform))


def make_vaihingen(root: Path) -> Path:
    """Write the areas of :data:`GEOREFERENCED_AREAS` and :data:`UNGEOREFERENCED_AREAS`.

    Returns:
        ``root``.
    """
    areas = {
        **{a: (f, area_transform(a)) for a, f in GEOREFERENCED_AREAS.items()},
        **{a: (f, None) for a, f in UNGEOREFERENCED_AREAS.items()},
    }
    for area, (label_folder, transform) in areas.items():
        write_tiff(area_path(root, area, "cir"), cir_values(area), transform)
        write_tiff(area_path(root, area, "dsm"), _dsm_values(area), transform)
        if label_folder is not None:
            write_tiff(area_path(root, area, "labels", label_folder), label_values(), transform)
    (root / "ISPRS_semantic_labeling_Vaihingen.zip").write_bytes(b"PK\x05\x06" + bytes(18))
    return root


def damage(root: Path) -> None:
    """Damage a copy made by :func:`make_vaihingen` in the ways the module constants name."""
    write_tiff(root / MISNAMED, cir_values(5), area_transform(5))
    write_tiff(root / ORPHAN_DSM, _dsm_values(9), area_transform(9))
    write_tiff(root / WRONG_BAND_COUNT, _dsm_values(1, count=2), area_transform(1))
    truncated = root / TRUNCATED
    truncated.write_bytes(truncated.read_bytes()[: truncated.stat().st_size // 2])
