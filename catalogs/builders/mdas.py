"""MDAS catalog builder."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pystac
import rasterio
import rasterio.errors
from rasterio.enums import ColorInterp

from catalogs.layouts.mdas import DATA_FOLDER, modality_of, sub_area_file, sub_area_of
from catalogs.sensors import Sensor, get_sensor
from catalogs.stac import (
    BuildResult,
    SourceFileError,
    datetime_range,
    make_item,
    raster_asset,
)

# All MDAS data were collected on 7 May 2018 (Hu et al., 2023, ESSD 15, 113-131, abstract);
# no time of day is documented, so an Item spans that day.
ACQUISITION_DAY: tuple[datetime, datetime] = (
    datetime(2018, 5, 7, tzinfo=UTC),
    datetime(2018, 5, 7, 23, 59, 59, tzinfo=UTC),
)
# Modality (file name prefix) -> asset key. The TorchGeo copy names sub-area 1's DSM 3K_DSM;
# the original upload spells it 3K_dsm.
MODALITY_ASSETS: dict[str, str] = {
    "3K_RGB": "rgb",
    "3K_DSM": "dsm",
    "3K_dsm": "dsm",
    "Sentinel_2": "s2",
    "Sentinel_1": "s1",
    "osm_buildings": "osm_buildings",
}
ASSET_SENSORS: dict[str, str] = {
    "rgb": "rgb",
    "dsm": "dsm",
    "s2": "sentinel2_l2a",
    "s1": "sentinel1_grd",
    "osm_buildings": "building_mask",
}
# The 3K orthophoto (rgb) may carry a 4th band; it is read as alpha where the file declares it so.
ALPHA_ASSET = "rgb"
RGB_WITH_ALPHA_SENSOR = "rgb_alpha"
REQUIRED_ASSETS = ("rgb", "dsm")
FOOTPRINT_ASSET = "rgb"
# MDAS modalities GeoPile-2 does not use: skipped without a report.
UNUSED_MODALITIES = frozenset(
    {
        "HySpex",
        "EeteS_EnMAP_2dot2m",
        "EeteS_EnMAP_10m",
        "EeteS_EnMAP_30m",
        "EeteS_Sentinel_2_10m",
        "osm_landuse",
        "osm_water",
    }
)
# Official MDAS folders that are not sub-areas: the whole city (overlapping the sub-areas) and
# the super-resolution training split. Not catalogued, not reported.
UNUSED_FOLDERS = frozenset({"entire_city", "sr_deep_model_data"})


def build(root: Path) -> BuildResult:
    """Catalog a local copy of MDAS: one Item per sub-area, assets by co-located sensor.

    Layout under ``root`` (the extracted ``Augsburg_data_4_publication.zip``)::

        Augsburg_data_4_publication/sub_area_<N>/<modality>_sub_area<N>.tif

    e.g. ``Augsburg_data_4_publication/sub_area_1/3K_RGB_sub_area1.tif``. Catalogued modalities
    and their assets: ``3K_RGB`` -> ``rgb`` (aerial RGB, 3 bands uint8, or 4 with a 4th band the
    file declares alpha), ``3K_DSM`` (or ``3K_dsm``) -> ``dsm`` (float32, on its own grid),
    ``Sentinel_2`` -> ``s2`` (12 L2A bands), ``Sentinel_1`` -> ``s1`` (VV/VH) and
    ``osm_buildings`` -> ``osm_buildings`` (building mask). ``rgb`` and ``dsm`` are required;
    the Item id is ``mdas_sub_area_<N>`` and its footprint is the rgb grid. HySpex, EeteS_*,
    osm_landuse and osm_water files, the ``entire_city`` and ``sr_deep_model_data`` folders and
    files beside the sub-area folders (README, band headers) are not used and not reported.

    Reported and skipped: a folder or file whose name does not fit the layout, an unknown
    modality, a second file for one asset, an unreadable raster or one with the wrong band
    count, and a sub-area (its folder is reported) without a usable rgb and dsm.

    Args:
        root: the folder holding ``Augsburg_data_4_publication``.

    Returns:
        The Items, sorted by sub-area number, and the skipped files.
    """
    result = BuildResult()
    data_dir = Path(root) / DATA_FOLDER
    if not data_dir.is_dir():
        return result
    for number, folder in _sub_areas(data_dir, result):
        item = _sub_area_item(number, folder, result)
        if item is not None:
            result.items.append(item)
    return result


def _sub_areas(data_dir: Path, result: BuildResult) -> list[tuple[int, Path]]:
    """The ``sub_area_<N>`` folders by number, reporting unexpected folders."""
    found = []
    for folder in sorted(p for p in data_dir.iterdir() if p.is_dir()):
        number = sub_area_of(folder.name)
        if number is not None:
            found.append((number, folder))
        elif folder.name not in UNUSED_FOLDERS:
            result.skip(SourceFileError(folder, "not a sub_area_<N> folder of MDAS"))
    return sorted(found)


def _sub_area_item(number: int, folder: Path, result: BuildResult) -> pystac.Item | None:
    """The Item of one sub-area, or None (its folder reported) without a usable rgb and dsm."""
    assets: dict[str, pystac.Asset] = {}
    for key, path in _sub_area_files(number, folder, result).items():
        try:
            assets[key] = raster_asset(path, _candidate_sensors(key, path))
        except SourceFileError as error:
            result.skip(error)
    missing = [key for key in REQUIRED_ASSETS if key not in assets]
    if missing:
        result.skip(SourceFileError(folder, f"no usable {' and '.join(missing)}: sub-area skipped"))
        return None
    properties = {**datetime_range(*ACQUISITION_DAY), "mdas:sub_area": number}
    return make_item(
        f"mdas_sub_area_{number}", assets, None, properties, footprint_asset=FOOTPRINT_ASSET
    )


def _sub_area_files(number: int, folder: Path, result: BuildResult) -> dict[str, Path]:
    """The sub-area's files by asset key, in ``ASSET_SENSORS`` order; the rest reported."""
    files: dict[str, Path] = {}
    for path in sorted(folder.iterdir()):
        modality = modality_of(path.name, number)
        if not path.is_file() or modality is None:
            result.skip(SourceFileError(path, f"name is not {sub_area_file('<modality>', number)}"))
        elif modality in UNUSED_MODALITIES:
            continue
        elif modality not in MODALITY_ASSETS:
            result.skip(SourceFileError(path, f"unknown MDAS modality {modality!r}"))
        elif MODALITY_ASSETS[modality] in files:
            first = files[MODALITY_ASSETS[modality]]
            result.skip(SourceFileError(path, f"second {modality} file; using {first.name}"))
        else:
            files[MODALITY_ASSETS[modality]] = path
    return {key: files[key] for key in ASSET_SENSORS if key in files}


def _candidate_sensors(key: str, path: Path) -> list[Sensor]:
    """The registry sensors the file of asset ``key`` may hold, chosen among by band count.

    Raises:
        SourceFileError: an rgb file has a 4th band that it does not declare alpha.
    """
    sensor = get_sensor(ASSET_SENSORS[key])
    fourth = _fourth_band(path) if key == ALPHA_ASSET else None
    if fourth is None:
        return [sensor]
    if fourth is not ColorInterp.alpha:
        raise SourceFileError(path, f"4th band is {fourth.name}, not alpha: its content is unknown")
    return [sensor, get_sensor(RGB_WITH_ALPHA_SENSOR)]


def _fourth_band(path: Path) -> ColorInterp | None:
    """The colour interpretation of a raster's 4th band; None if it has none or is unreadable.

    An unreadable file is left to ``raster_asset``, which reports why.
    """
    try:
        with rasterio.open(path) as src:
            interpretations = src.colorinterp
    except (rasterio.errors.RasterioError, OSError):
        return None
    return interpretations[3] if len(interpretations) > 3 else None
