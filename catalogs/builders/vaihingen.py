"""ISPRS Vaihingen 2D semantic labelling catalog builder."""

from __future__ import annotations

import warnings
from datetime import UTC, datetime
from pathlib import Path

import pystac
import rasterio
import rasterio.crs
import rasterio.errors

from catalogs.layouts.vaihingen import (
    DSM_FILE,
    DSM_FOLDER,
    LABEL_FOLDERS,
    TOP_FILE,
    TOP_FOLDER,
    TRAIN_AREAS,
    area_of,
)
from catalogs.sensors import get_sensor
from catalogs.stac import (
    BuildResult,
    SourceFileError,
    datetime_range,
    make_item,
    picture_asset,
    raster_asset,
)

# Asset key -> (registry sensor, roles).
ASSETS: dict[str, tuple[str, tuple[str, ...]]] = {
    "cir": ("cir", ("data",)),
    "dsm": ("dsm", ("data",)),
    "labels": ("isprs_labels", ("labels",)),
}
GSD_M = 0.09
# The DGPF camera test flights over Vaihingen/Enz, summer 2008 (Cramer, 2010), to the day
# unpublished: meteorological summer 2008.
ACQUISITION_RANGE = (
    datetime(2008, 6, 1, tzinfo=UTC),
    datetime(2008, 8, 31, 23, 59, 59, tzinfo=UTC),
)


def build(root: Path) -> BuildResult:
    """Catalog a local copy of the ISPRS Vaihingen 2D semantic labelling data: one Item per area.

    Layout under ``root`` (``ISPRS_semantic_labeling_Vaihingen.zip`` extracted, plus the ground
    truth, as TorchGeo's ``Vaihingen2D`` reads it)::

        top/top_mosaic_09cm_area<N>.tif                    true orthophoto, IR-R-G
        dsm/dsm_09cm_matching_area<N>.tif                  DSM
        top_mosaic_09cm_area<N>.tif                        ground truth (COMPLETE zip), or
        gts_for_participants/top_mosaic_09cm_area<N>.tif   ground truth (training areas)

    ``<N>`` is the area number (1-38 in the real data, 33 areas). The orthophoto is 3 bands
    uint8 (near-infrared, red, green) at 9 cm; the DSM 1 band float32 in metres on the same
    grid; the ground truth colour-coded RGB uint8: impervious surfaces (255, 255, 255),
    building (0, 0, 255), low vegetation (0, 255, 255), tree (0, 255, 0), car (255, 255, 0),
    clutter/background (255, 0, 0). The real files carry no georeference (ISPRS ships it apart,
    as world files); then the Item's geometry is null and the assets carry ``proj:code`` null,
    ``proj:shape`` and ``gsd`` 0.09 m. Georeferenced files (the sample world's, EPSG:32632)
    get their proj fields and footprint from the file. Other entries of ``root`` (archives,
    ``gts_eroded_for_participants``) are not read.

    The Item id is ``vaihingen_area<N>``; assets ``cir`` (required), ``dsm`` and ``labels``
    (roles ``labels``); properties ``vaihingen:area`` and ``vaihingen:split`` (``train`` for
    the 16 areas of :data:`TRAIN_AREAS`, else ``test``); ``start_datetime``/``end_datetime``
    span :data:`ACQUISITION_RANGE`; footprint from cir when it is georeferenced.

    Reported and skipped: an entry of ``top``, ``dsm`` or ``gts_for_participants`` whose name
    does not fit the layout; an unreadable image or one with the wrong band count (an area whose
    cir is unusable is skipped, a bad dsm or labels file only leaves that asset out); a DSM or
    ground-truth file with no orthophoto of its area.

    Args:
        root: the folder holding ``top``, ``dsm`` and the ground truth.

    Returns:
        The Items, sorted by area number, and the skipped files.
    """
    root = Path(root)
    result = BuildResult()
    tops = _area_files(root / TOP_FOLDER, TOP_FILE, result)
    partners = {
        "dsm": _area_files(root / DSM_FOLDER, DSM_FILE, result),
        "labels": _label_files(root, result),
    }
    for key, found in partners.items():
        for area in sorted(found.keys() - tops.keys()):
            result.skip(
                SourceFileError(
                    found[area],
                    f"{key} of area {area}, which has no "
                    f"orthophoto {TOP_FOLDER}/{TOP_FILE.format(area=area)}",
                )
            )
    for area, top in sorted(tops.items()):
        files = {
            "cir": top,
            **{key: found[area] for key, found in partners.items() if area in found},
        }
        item = _area_item(area, files, result)
        if item is not None:
            result.items.append(item)
    return result


def _area_files(folder: Path, name: str, result: BuildResult | None) -> dict[int, Path]:
    """``{area: file}`` for the files in ``folder`` named ``name``, a layout file template.

    Other entries are reported to ``result``, or ignored where it is None (the dataset root,
    which also holds the archives).
    """
    files: dict[int, Path] = {}
    for path in sorted(folder.iterdir()) if folder.is_dir() else ():
        area = area_of(path.name, name)
        if path.is_file() and area is not None:
            files[area] = path
        elif result is not None:
            result.skip(SourceFileError(path, f"name is not {name.format(area='<N>')}"))
    return files


def _label_files(root: Path, result: BuildResult) -> dict[int, Path]:
    """``{area: ground-truth file}``, the first of :data:`LABEL_FOLDERS` holding it winning."""
    labels: dict[int, Path] = {}
    for folder in reversed(LABEL_FOLDERS):
        labels.update(_area_files(root / folder, TOP_FILE, None if folder == "." else result))
    return labels


def _area_item(area: int, files: dict[str, Path], result: BuildResult) -> pystac.Item | None:
    """The Item of one area, or None (reported) if its orthophoto is unusable."""
    assets: dict[str, pystac.Asset] = {}
    for key, path in files.items():
        sensor, roles = ASSETS[key]
        try:
            assets[key] = _image_asset(path, sensor, roles)
        except SourceFileError as error:
            if key == "cir":
                result.skip(SourceFileError(error.path, f"{error.reason}; area {area} skipped"))
                return None
            result.skip(error)
    properties = {
        **datetime_range(*ACQUISITION_RANGE),
        "vaihingen:area": area,
        "vaihingen:split": "train" if area in TRAIN_AREAS else "test",
    }
    footprint = "cir" if "proj:bbox" in assets["cir"].extra_fields else None
    return make_item(f"vaihingen_area{area}", assets, None, properties, footprint_asset=footprint)


def _image_asset(path: Path, sensor_name: str, roles: tuple[str, ...]) -> pystac.Asset:
    """The file as an Asset: from its georeference if it has one, else with shape only."""
    sensor = get_sensor(sensor_name)
    crs, count = _crs_and_band_count(path)
    if crs is not None:
        return raster_asset(path, sensor, roles)
    if count != sensor.num_bands:
        raise SourceFileError(path, f"{count} bands, expected {sensor.num_bands} ({sensor.name})")
    return picture_asset(path, sensor, roles, gsd_m=GSD_M)  # decodes every pixel


def _crs_and_band_count(path: Path) -> tuple[rasterio.crs.CRS | None, int]:
    """A raster file's CRS (the real Vaihingen TIFFs have none) and band count."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", rasterio.errors.NotGeoreferencedWarning)
            with rasterio.open(path) as src:
                return src.crs, src.count
    except (rasterio.errors.RasterioError, OSError) as error:
        raise SourceFileError(path, f"unreadable raster ({error})") from error
