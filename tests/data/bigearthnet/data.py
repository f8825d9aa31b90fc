"""Generate a tiny BigEarthNet v1.0 copy in the official layout."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
from affine import Affine

from tests.data.rasters import write_geotiff

SEED = 0
CRS = "EPSG:32633"  # UTM 33N, as the real patches of tile 33UUP
WEST, NORTH = 451200.0, 6679800.0  # corner of the first patch; the others follow eastwards
PATCH_M = 1200.0
S2_BAND_GSD_M = {
    "B01": 60.0,
    "B02": 10.0,
    "B03": 10.0,
    "B04": 10.0,
    "B05": 20.0,
    "B06": 20.0,
    "B07": 20.0,
    "B08": 10.0,
    "B8A": 20.0,
    "B09": 60.0,
    "B11": 20.0,
    "B12": 20.0,
}
S1_POLARIZATIONS = ("VV", "VH")
S2_ACQUIRED = datetime(2017, 6, 13, 10, 10, 31, tzinfo=UTC)
S1_ACQUIRED = datetime(2017, 6, 13, 16, 50, 43, tzinfo=UTC)


@dataclass(frozen=True)
class Patch:
    """One S2 patch of the fixture: its S1 partner (if any), labels and split (if any)."""

    s2: str
    s1: str | None
    labels: tuple[str, ...]
    split: str | None


PATCHES = (
    Patch(
        "S2A_MSIL2A_20170613T101031_0_45",
        "S1A_IW_GRDH_1SDV_20170613T165043_33UUP_0_45",
        ("Non-irrigated arable land", "Pastures"),
        "train",
    ),
    Patch(
        "S2A_MSIL2A_20170613T101031_0_46",
        "S1A_IW_GRDH_1SDV_20170613T165043_33UUP_0_46",
        ("Coniferous forest", "Water bodies"),
        "train",
    ),
    Patch(
        "S2A_MSIL2A_20170613T101031_0_47",
        "S1A_IW_GRDH_1SDV_20170613T165043_33UUP_0_47",
        ("Land principally occupied by agriculture, with significant areas of natural vegetation",),
        "val",
    ),
    Patch("S2A_MSIL2A_20170613T101031_0_48", None, ("Sea and ocean",), None),
)
SPLITS = ("train", "val", "test")

# What ``damage`` does, in the order the builder reports it.
MISSING_S2 = "S2A_MSIL2A_20170613T101031_9_99"
ORPHAN_S1 = "S1A_IW_GRDH_1SDV_20170613T165043_33UUP_9_99"
STRAY = f"{PATCHES[0].s2}/{PATCHES[0].s2}_B10.tif"
WRONG_BAND_COUNT = f"{PATCHES[0].s1}/{PATCHES[0].s1}_VH.tif"  # 2 bands
TRUNCATED = f"{PATCHES[1].s2}/{PATCHES[1].s2}_B03.tif"
WRONG_SIZE = f"{PATCHES[2].s2}/{PATCHES[2].s2}_B05.tif"  # 120 x 120 instead of 60 x 60


def s2_path(root: Path, patch: str, suffix: str) -> Path:
    """The ``<patch>_<suffix>`` file (a band's ``<band>.tif``, ``labels_metadata.json``)."""
    return root / "BigEarthNet-v1.0" / patch / f"{patch}_{suffix}"


def s1_path(root: Path, patch: str, suffix: str) -> Path:
    return root / "BigEarthNet-S1-v1.0" / patch / f"{patch}_{suffix}"


def band_transform(index: int, gsd_m: float) -> list[float]:
    """The affine transform (6 coefficients) of a band of the ``index``-th patch."""
    return [gsd_m, 0.0, WEST + index * PATCH_M, 0.0, -gsd_m, NORTH]


def s2_values(index: int, band: str) -> np.ndarray:
    """The stored values of one S2 band of the ``index``-th patch."""
    side = round(PATCH_M / S2_BAND_GSD_M[band])
    rng = np.random.default_rng([SEED, index, list(S2_BAND_GSD_M).index(band)])
    return rng.integers(1, 10000, (1, side, side)).astype("uint16")


def s1_values(index: int, polarization: str, count: int = 1) -> np.ndarray:
    """The backscatter (dB) of one S1 band of the ``index``-th patch."""
    rng = np.random.default_rng([SEED, index, 100 + S1_POLARIZATIONS.index(polarization)])
    return rng.normal(-15.0, 4.0, (count, 120, 120)).astype("float32")


def _write_metadata(path: Path, patch: Patch, index: int, extra: dict[str, str]) -> None:
    metadata = {
        "labels": list(patch.labels),
        "coordinates": {
            "ulx": WEST + index * PATCH_M,
            "uly": NORTH,
            "lrx": WEST + (index + 1) * PATCH_M,
            "lry": NORTH - PATCH_M,
        },
        "projection": CRS,
        **extra,
    }
    path.write_text(json.dumps(metadata, indent=2))


def make_bigearthnet(root: Path) -> Path:
    """Write :data:`PATCHES` in the BigEarthNet v1.0 layout under ``root``, and the split files.

    Returns:
        ``root``.
    """
    for index, patch in enumerate(PATCHES):
        for band, gsd_m in S2_BAND_GSD_M.items():
            write_geotiff(
                s2_path(root, patch.s2, f"{band}.tif"),
                s2_values(index, band),
                CRS,
                Affine(*band_transform(index, gsd_m)),
            )
        _write_metadata(
            s2_path(root, patch.s2, "labels_metadata.json"),
            patch,
            index,
            {
                "tile_source": "S2A_MSIL1C_20170613T101031_N0205_R022_T33UUP_20170613T101024.SAFE",
                "acquisition_date": S2_ACQUIRED.strftime("%Y-%m-%d %H:%M:%S"),
            },
        )
        if patch.s1 is None:
            continue
        for polarization in S1_POLARIZATIONS:
            write_geotiff(
                s1_path(root, patch.s1, f"{polarization}.tif"),
                s1_values(index, polarization),
                CRS,
                Affine(*band_transform(index, 10.0)),
            )
        _write_metadata(
            s1_path(root, patch.s1, "labels_metadata.json"),
            patch,
            index,
            {
                "corresponding_s2_patch": patch.s2,
                "scene_source": (
                    "S1A_IW_GRDH_1SDV_20170613T165043_20170613T165108_017010_01C5A5_4B10"
                ),
                "acquisition_time": S1_ACQUIRED.strftime("%Y-%m-%dT%H:%M:%S"),
            },
        )
    for split in SPLITS:
        rows = [f"{p.s2},{p.s1}\n" for p in PATCHES if p.split == split]
        (root / f"bigearthnet-{split}.csv").write_text("".join(rows))
    return root


def damage(root: Path) -> None:
    """Damage a copy made by :func:`make_bigearthnet` in the ways the module constants name."""
    (root / "bigearthnet-test.csv").write_text(f"{MISSING_S2},{ORPHAN_S1}\n")
    orphan = s1_path(root, ORPHAN_S1, "labels_metadata.json")
    orphan.parent.mkdir(parents=True)
    orphan.write_text(
        json.dumps(
            {
                "labels": ["Pastures"],
                "corresponding_s2_patch": MISSING_S2,
                "acquisition_time": S1_ACQUIRED.strftime("%Y-%m-%dT%H:%M:%S"),
            }
        )
    )
    s2, s1 = root / "BigEarthNet-v1.0", root / "BigEarthNet-S1-v1.0"
    write_geotiff(s2 / STRAY, s2_values(0, "B01"), CRS, Affine(*band_transform(0, 60.0)))
    write_geotiff(
        s1 / WRONG_BAND_COUNT, s1_values(0, "VH", count=2), CRS, Affine(*band_transform(0, 10.0))
    )
    truncated = s2 / TRUNCATED
    truncated.write_bytes(truncated.read_bytes()[: truncated.stat().st_size // 2])
    write_geotiff(s2 / WRONG_SIZE, s2_values(2, "B02"), CRS, Affine(*band_transform(2, 10.0)))
