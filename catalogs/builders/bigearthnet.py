"""BigEarthNet v1.0 catalog builder."""

from __future__ import annotations

import csv
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pystac
from pystac.utils import datetime_to_str

from catalogs.layouts.bigearthnet import (
    S1_FOLDER,
    S1_PATCH,
    S2_FOLDER,
    S2_PATCH,
    SPLIT_FILE,
    SPLITS,
    band_file,
    metadata_file,
)
from catalogs.sensors import Sensor, get_sensor
from catalogs.stac import BuildResult, SourceFileError, make_item, raster_asset

S2_SENSOR = "sentinel2_l2a"
S1_SENSOR = "sentinel1_grd"
FOOTPRINT_ASSET = "s2_B02"
PATCH_SIZE_M = 1200.0  # every patch covers 1.2 km x 1.2 km on the ground

# The 43 CORINE Land Cover 2018 level-3 classes that label BigEarthNet v1.0 patches,
# spelled as in the patches' metadata files (Sumbul et al., 2019).
CLC_CLASSES: tuple[str, ...] = (
    "Continuous urban fabric",
    "Discontinuous urban fabric",
    "Industrial or commercial units",
    "Road and rail networks and associated land",
    "Port areas",
    "Airports",
    "Mineral extraction sites",
    "Dump sites",
    "Construction sites",
    "Green urban areas",
    "Sport and leisure facilities",
    "Non-irrigated arable land",
    "Permanently irrigated land",
    "Rice fields",
    "Vineyards",
    "Fruit trees and berry plantations",
    "Olive groves",
    "Pastures",
    "Annual crops associated with permanent crops",
    "Complex cultivation patterns",
    "Land principally occupied by agriculture, with significant areas of natural vegetation",
    "Agro-forestry areas",
    "Broad-leaved forest",
    "Coniferous forest",
    "Mixed forest",
    "Natural grassland",
    "Moors and heathland",
    "Sclerophyllous vegetation",
    "Transitional woodland/shrub",
    "Beaches, dunes, sands",
    "Bare rock",
    "Sparsely vegetated areas",
    "Burnt areas",
    "Inland marshes",
    "Peatbogs",
    "Salt marshes",
    "Salines",
    "Intertidal flats",
    "Water courses",
    "Water bodies",
    "Coastal lagoons",
    "Estuaries",
    "Sea and ocean",
)


@dataclass(frozen=True)
class S1Patch:
    """A Sentinel-1 patch folder and when its scene was acquired."""

    folder: Path
    acquired: datetime


def build(root: Path) -> BuildResult:
    """Catalog a local copy of BigEarthNet v1.0 (BigEarthNet-MM): one Item per Sentinel-2 patch.

    Layout under ``root`` (the Zenodo archives and split files, as TorchGeo's ``BigEarthNet``
    reads them)::

        BigEarthNet-v1.0/<s2>/<s2>_<band>.tif             12 bands B01-B09, B8A, B11, B12
        BigEarthNet-v1.0/<s2>/<s2>_labels_metadata.json
        BigEarthNet-S1-v1.0/<s1>/<s1>_VV.tif, <s1>_VH.tif
        BigEarthNet-S1-v1.0/<s1>/<s1>_labels_metadata.json
        bigearthnet-train.csv, bigearthnet-val.csv, bigearthnet-test.csv

    ``<s2>`` is ``S2[AB]_MSIL2A_<yyyymmdd>T<hhmmss>_<col>_<row>`` (e.g.
    ``S2A_MSIL2A_20170613T101031_0_45``) and ``<s1>`` is
    ``S1[AB]_IW_GRDH_1SDV_<yyyymmdd>T<hhmmss>_<tile>_<col>_<row>`` (e.g.
    ``S1A_IW_GRDH_1SDV_20170613T165043_33UUP_90_50``). Each band is its own single-band
    GeoTIFF on its native grid over the patch's 1.2 km: Sentinel-2 L2A uint16, 120 x 120 pixels
    for the 10 m bands (B02-B04, B08), 60 x 60 for the 20 m bands (B05-B07, B8A, B11, B12),
    20 x 20 for the 60 m bands (B01, B09); Sentinel-1 float32 sigma0 in dB, 120 x 120.

    The S2 metadata file holds ``labels`` (CLC 2018 level-3 class names, :data:`CLC_CLASSES`),
    ``coordinates``, ``projection``, ``tile_source`` and ``acquisition_date``
    (``"2017-06-13 10:10:31"``, UTC); the S1 metadata file holds ``labels``, ``coordinates``,
    ``projection``, ``corresponding_s2_patch`` (the S2 patch it pairs with), ``scene_source`` and
    ``acquisition_time`` (ISO 8601, UTC). Only ``labels`` and ``acquisition_date`` (S2) and
    ``corresponding_s2_patch`` and ``acquisition_time`` (S1) are read. Each split file has one
    row ``<s2>,<s1>`` per patch and no header; patches in no split (the official splits leave
    out those under seasonal snow, cloud or cloud shadow) get split ``None``.

    The Item id is the S2 patch name; assets ``s2_B01`` ... ``s2_B12`` (one band each),
    and ``s1_VV``, ``s1_VH`` (with the S1 acquisition as the asset's ``datetime``) when an S1
    patch names it as its partner; properties ``bigearthnet:labels`` and ``bigearthnet:split``;
    ``datetime`` from ``acquisition_date``; footprint from ``s2_B02``.

    Reported and skipped: a folder or file whose name does not fit the layout; an S2 patch with
    a missing, unreadable, wrong-band-count or wrong-size band or a missing or invalid metadata
    file (the whole patch); an S1 patch with such a file, whose metadata names no existing S2
    patch or an S2 patch another S1 patch already pairs with (the S2 patch is kept without S1);
    a split-file row naming no existing S2 patch or one already in a split; a missing split file.

    Args:
        root: the folder holding ``BigEarthNet-v1.0``, ``BigEarthNet-S1-v1.0`` and the split files.

    Returns:
        The Items, sorted by S2 patch name, and the skipped files.
    """
    root = Path(root)
    result = BuildResult()
    s2_folders = list(_patch_folders(root / S2_FOLDER, S2_PATCH, result))
    s2_names = {folder.name for folder in s2_folders}
    splits = _read_splits(root, s2_names, result)
    s1_patches = _pair_s1_patches(root / S1_FOLDER, s2_names, result)
    for folder in s2_folders:
        try:
            s2_assets, when, labels = _s2_patch(folder, result)
        except SourceFileError as error:
            result.skip(SourceFileError(error.path, f"{error.reason}; S2 patch skipped"))
            continue
        s1_assets = _s1_assets(s1_patches[folder.name], result) if folder.name in s1_patches else {}
        properties = {"bigearthnet:labels": labels, "bigearthnet:split": splits.get(folder.name)}
        result.items.append(
            make_item(
                folder.name,
                {**s2_assets, **s1_assets},
                when,
                properties,
                footprint_asset=FOOTPRINT_ASSET,
            )
        )
    return result


def _patch_folders(parent: Path, pattern: re.Pattern[str], result: BuildResult) -> Iterator[Path]:
    """The patch folders under ``parent`` (none if it is absent), reporting other entries."""
    if not parent.is_dir():
        return
    for path in sorted(parent.iterdir()):
        if path.is_dir() and pattern.fullmatch(path.name):
            yield path
        else:
            result.skip(SourceFileError(path, f"not a patch folder named {pattern.pattern}"))


def _read_splits(root: Path, s2_names: set[str], result: BuildResult) -> dict[str, str]:
    """``{s2 patch: split}`` from the split files, reporting rows that name no known patch."""
    splits: dict[str, str] = {}
    for split in SPLITS:
        path = root / SPLIT_FILE.format(split=split)
        if not path.is_file():
            result.skip(SourceFileError(path, f"split file missing: no patch gets split {split!r}"))
            continue
        with open(path, newline="") as rows:
            for line, row in enumerate(csv.reader(rows), start=1):
                problem = _split_row_problem(row, s2_names, splits)
                if problem:
                    result.skip(SourceFileError(path, f"line {line}: {problem}"))
                else:
                    splits[row[0]] = split
    return splits


def _split_row_problem(row: list[str], s2_names: set[str], splits: dict[str, str]) -> str | None:
    """Why a split-file row cannot be used, or None if it names a new, existing S2 patch."""
    if len(row) != 2:
        return f"expected '<s2 patch>,<s1 patch>', got {','.join(row)!r}"
    if row[0] not in s2_names:
        return f"no S2 patch {row[0]!r} under {S2_FOLDER}"
    if row[0] in splits:
        return f"S2 patch {row[0]!r} is already in split {splits[row[0]]!r}"
    return None


def _pair_s1_patches(parent: Path, s2_names: set[str], result: BuildResult) -> dict[str, S1Patch]:
    """``{s2 patch: its S1 patch}`` from the S1 metadata files' ``corresponding_s2_patch``."""
    pairs: dict[str, S1Patch] = {}
    for folder in _patch_folders(parent, S1_PATCH, result):
        metadata_path = folder / metadata_file(folder.name)
        try:
            metadata = _read_metadata(metadata_path)
            s2_name = _text_field(metadata, "corresponding_s2_patch", metadata_path)
            acquired = _timestamp(metadata, "acquisition_time", metadata_path)
        except SourceFileError as error:
            result.skip(error)
            continue
        if s2_name not in s2_names:
            problem = f"no S2 patch {s2_name!r} under {S2_FOLDER}"
        elif s2_name in pairs:
            problem = f"S2 patch {s2_name!r} is already paired with {pairs[s2_name].folder.name}"
        else:
            pairs[s2_name] = S1Patch(folder, acquired)
            continue
        result.skip(SourceFileError(metadata_path, problem))
    return pairs


def _s2_patch(
    folder: Path, result: BuildResult
) -> tuple[dict[str, pystac.Asset], datetime, list[str]]:
    """The band assets, acquisition time and labels of an S2 patch folder."""
    sensor = get_sensor(S2_SENSOR)
    metadata_path = folder / metadata_file(folder.name)
    metadata = _read_metadata(metadata_path)
    labels = _labels(metadata, metadata_path)
    when = _timestamp(metadata, "acquisition_date", metadata_path)
    assets = {f"s2_{band}": _band_asset(folder, band, sensor) for band in sensor.band_names}
    _report_strays(folder, sensor, result)
    return assets, when, labels


def _s1_assets(patch: S1Patch, result: BuildResult) -> dict[str, pystac.Asset]:
    """The ``s1_VV``/``s1_VH`` assets of an S1 patch; none (reported) if a band is unusable."""
    sensor = get_sensor(S1_SENSOR)
    try:
        assets = {
            f"s1_{band}": _band_asset(patch.folder, band, sensor) for band in sensor.band_names
        }
    except SourceFileError as error:
        result.skip(SourceFileError(error.path, f"{error.reason}; S1 patch left out"))
        return {}
    for asset in assets.values():
        asset.extra_fields["datetime"] = datetime_to_str(patch.acquired)
    _report_strays(patch.folder, sensor, result)
    return assets


def _band_asset(folder: Path, band: str, sensor: Sensor) -> pystac.Asset:
    """The asset of one band file of a patch, checked to lie on the band's native grid."""
    path = folder / band_file(folder.name, band)
    if not path.is_file():
        raise SourceFileError(path, "band file missing")
    asset = raster_asset(path, sensor, band_names=(band,))
    gsd_m = sensor.band(band).gsd_m or sensor.gsd_m
    side = round(PATCH_SIZE_M / gsd_m)
    if asset.extra_fields["proj:shape"] != [side, side]:
        height, width = asset.extra_fields["proj:shape"]
        raise SourceFileError(
            path, f"{height}x{width} pixels, expected {side}x{side} for a {gsd_m:g} m band"
        )
    return asset


def _report_strays(folder: Path, sensor: Sensor, result: BuildResult) -> None:
    """Report the files of a patch folder that are neither its band files nor its metadata."""
    expected = {band_file(folder.name, band) for band in sensor.band_names}
    expected.add(metadata_file(folder.name))
    for path in sorted(folder.iterdir()):
        if path.name not in expected:
            result.skip(SourceFileError(path, "not a file of the BigEarthNet layout"))


def _read_metadata(path: Path) -> dict[str, Any]:
    """A patch's ``*_labels_metadata.json`` as a dict."""
    if not path.is_file():
        raise SourceFileError(path, "metadata file missing")
    try:
        metadata = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise SourceFileError(path, f"unreadable JSON ({error})") from error
    if not isinstance(metadata, dict):
        raise SourceFileError(path, "metadata is not a JSON object")
    return metadata


def _text_field(metadata: dict[str, Any], key: str, path: Path) -> str:
    value = metadata.get(key)
    if not isinstance(value, str) or not value:
        raise SourceFileError(path, f"{key!r} is missing or not a non-empty string")
    return value


def _timestamp(metadata: dict[str, Any], key: str, path: Path) -> datetime:
    """The metadata's ``key`` as an aware datetime (BigEarthNet times are UTC)."""
    value = _text_field(metadata, key, path)
    try:
        when = datetime.fromisoformat(value)
    except ValueError as error:
        raise SourceFileError(path, f"{key} {value!r} is not an ISO 8601 date-time") from error
    return when if when.tzinfo else when.replace(tzinfo=UTC)


def _labels(metadata: dict[str, Any], path: Path) -> list[str]:
    """The metadata's ``labels``, each one of the 43 CLC class names."""
    labels = metadata.get("labels")
    if not isinstance(labels, list):
        raise SourceFileError(path, "'labels' is missing or not a list")
    unknown = [label for label in labels if label not in CLC_CLASSES]
    if unknown:
        raise SourceFileError(path, f"labels {unknown} are not CLC 43-class names")
    return labels
