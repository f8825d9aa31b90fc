"""Generate a tiny MDAS copy in the official layout."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from affine import Affine
from rasterio.enums import ColorInterp

from tests.data.rasters import write_geotiff

SEED = 0
DATA_FOLDER = "Augsburg_data_4_publication"
CRS = "EPSG:32632"
ORIGIN = (640000.0, 5365000.0)  # Augsburg, UTM 32N
# Modality -> (bands, dtype, pixel size in m, pixels per side): each on its own grid.
MODALITIES: dict[str, tuple[int, str, float, int]] = {
    "3K_RGB": (3, "uint8", 0.3, 40),
    "3K_DSM": (1, "float32", 0.6, 20),
    "3K_dsm": (1, "float32", 0.6, 20),
    "Sentinel_2": (12, "uint16", 10.0, 2),
    "Sentinel_1": (2, "float32", 10.0, 2),
    "osm_buildings": (1, "uint8", 2.4, 5),
    "HySpex": (5, "int16", 2.4, 5),
    "EeteS_Sentinel_2_10m": (4, "uint16", 10.0, 2),
    "osm_landuse": (1, "float64", 2.4, 5),
    "osm_water": (1, "float64", 2.4, 5),
}
# Sub-area -> its modalities; sub-area 2's RGB has a 4th band declared alpha (``RGBA_SUB_AREA``).
VALID_SUB_AREAS: dict[int, tuple[str, ...]] = {
    1: (
        "3K_RGB",
        "3K_DSM",
        "Sentinel_2",
        "Sentinel_1",
        "osm_buildings",
        "HySpex",
        "EeteS_Sentinel_2_10m",
        "osm_landuse",
        "osm_water",
    ),
    2: ("3K_RGB", "3K_dsm", "osm_buildings"),
    3: ("3K_RGB", "3K_DSM"),
}
RGBA_SUB_AREA = 2
# Written only with ``broken=True``.
BROKEN_SUB_AREAS: dict[int, tuple[str, ...]] = {
    4: ("3K_RGB", "3K_DSM"),  # RGB with a 4th band not declared alpha
    5: ("3K_RGB", "3K_DSM"),  # DSM truncated
    6: ("3K_RGB",),  # no DSM
}
UNDECLARED_4TH_BAND_SUB_AREA = 4
TRUNCATED = (5, "3K_DSM")
WRONG_BANDS = (3, "Sentinel_2", 13)  # 13 bands where MDAS has 12 (L2A)
UNKNOWN_MODALITY = (1, "Landsat_8")
MISNAMED = "sub_area_1/3K_RGB_sub_area9.tif"
STRAY_FOLDER = "sub_area_x"


def sub_area_path(root: Path, number: int, modality: str) -> Path:
    """Where the official layout puts one modality of a sub-area."""
    return root / DATA_FOLDER / f"sub_area_{number}" / f"{modality}_sub_area{number}.tif"


def _write_modality(
    rng: np.random.Generator,
    path: Path,
    modality: str,
    bands: int | None = None,
    colorinterp: list[ColorInterp] | None = None,
) -> None:
    count, dtype, pixel_m, size = MODALITIES[modality]
    data = rng.integers(0, 200, (bands or count, size, size)).astype(dtype)
    transform = Affine(pixel_m, 0.0, ORIGIN[0], 0.0, -pixel_m, ORIGIN[1])
    write_geotiff(
        path,
        data,
        CRS,
        transform,
        photometric="RGB" if colorinterp else "MINISBLACK",
        colorinterp=colorinterp,
    )


def make_mdas(root: Path, broken: bool = False) -> Path:
    """Write the valid sub-areas (and, with ``broken``, the damaged and stray files) under ``root``.

    Besides the sub-areas, an ``entire_city`` folder and a README are written: MDAS has them,
    the builder leaves them alone.

    Args:
        root: the folder to hold ``Augsburg_data_4_publication``; created if missing.
        broken: also write ``BROKEN_SUB_AREAS``, the truncated, wrong-band, unknown and misnamed
            files, and ``STRAY_FOLDER``.

    Returns:
        ``root``.
    """
    rng = np.random.default_rng(SEED)
    rgba = [ColorInterp.red, ColorInterp.green, ColorInterp.blue, ColorInterp.alpha]
    sub_areas = {**VALID_SUB_AREAS, **(BROKEN_SUB_AREAS if broken else {})}
    for number, modalities in sub_areas.items():
        for modality in modalities:
            path = sub_area_path(root, number, modality)
            if modality == "3K_RGB" and number == RGBA_SUB_AREA:
                _write_modality(rng, path, modality, bands=4, colorinterp=rgba)
            elif modality == "3K_RGB" and number == UNDECLARED_4TH_BAND_SUB_AREA:
                _write_modality(rng, path, modality, bands=4)
            else:
                _write_modality(rng, path, modality)
    _write_modality(rng, root / DATA_FOLDER / "entire_city" / "3K_RGB.tif", "3K_RGB")
    (root / DATA_FOLDER / "README").write_text("Data description\n")
    if broken:
        truncated = sub_area_path(root, *TRUNCATED)
        truncated.write_bytes(truncated.read_bytes()[: truncated.stat().st_size // 2])
        number, modality, bands = WRONG_BANDS
        _write_modality(rng, sub_area_path(root, number, modality), modality, bands=bands)
        _write_modality(rng, sub_area_path(root, *UNKNOWN_MODALITY), "Sentinel_2")
        _write_modality(rng, root / DATA_FOLDER / MISNAMED, "3K_RGB")
        (root / DATA_FOLDER / STRAY_FOLDER).mkdir()
    return root
