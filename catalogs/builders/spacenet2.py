"""SpaceNet 2 (building detection v2) catalog builder."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime
from functools import partial
from pathlib import Path

import pystac

from catalogs.layouts.spacenet2 import (
    AOI_FOLDER,
    LABEL_FOLDER,
    LABEL_PRODUCT,
    RASTER_PRODUCTS,
    UNREAD_FOLDERS,
    chip_file,
    chip_path,
    image_of,
    product_folder,
)
from catalogs.sensors import get_sensor
from catalogs.stac import (
    SENSOR_FIELD,
    BuildResult,
    SourceFileError,
    assemble_assets,
    datetime_range,
    file_fields,
    make_item,
    raster_asset,
)

LABEL_ASSET = "buildings"
# Rasterised onto the pan grid, the building polygons are the registry's building mask.
LABEL_SENSOR = "building_mask"
FOOTPRINT_ASSET = "pan"

# Las Vegas: one WorldView-3 collect, 2015-10-22 18:36:56 UTC (catalog id 055649178030, the
# SpaceNet source rasters 15OCT22183656-P2AS-*). For the other AOIs no acquisition time is
# published; their range runs from the launch of WorldView-3 (2014-08-13) to the opening of the
# SpaceNet round-2 challenge with the data released (Topcoder, 2017-03-22).
AOI_ACQUISITIONS: dict[int, datetime] = {2: datetime(2015, 10, 22, 18, 36, 56, tzinfo=UTC)}
UNDATED_RANGE = (datetime(2014, 8, 13, tzinfo=UTC), datetime(2017, 3, 22, tzinfo=UTC))

# Asset key -> the layout's product (folder and file prefix).
_PRODUCTS = {
    **{key: folder for key, (folder, _) in RASTER_PRODUCTS.items()},
    LABEL_ASSET: LABEL_PRODUCT,
}


def build(root: Path) -> BuildResult:
    """Catalog a local copy of SpaceNet 2's training data: one Item per image chip.

    Layout under ``root`` (the extracted ``SN2_buildings_train_AOI_<n>_<City>.tar.gz``
    tarballs; TorchGeo's ``SpaceNet2`` reads them from ``<its root>/SN2_buildings/train``)::

        AOI_<n>_<City>_Train/PAN/PAN_AOI_<n>_<City>_img<k>.tif
        AOI_<n>_<City>_Train/MUL/MUL_AOI_<n>_<City>_img<k>.tif
        AOI_<n>_<City>_Train/geojson/buildings/buildings_AOI_<n>_<City>_img<k>.geojson
        AOI_<n>_<City>_Train/{MUL-PanSharpen,RGB-PanSharpen,summaryData}/   (not cataloged)

    with ``AOI_2_Vegas``, ``AOI_3_Paris``, ``AOI_4_Shanghai``, ``AOI_5_Khartoum`` in the real
    data and ``<k>`` an integer. PAN is WorldView-3 panchromatic (1 band uint16, ~0.31 m,
    650 x 650), MUL its 8-band multispectral (uint16, ~1.24 m, about 163 x 163) over the same
    200 m chip; both are GeoTIFFs in EPSG:4326 and both are required. The buildings file is a
    GeoJSON FeatureCollection of building polygons in EPSG:4326 (empty where the chip has none);
    a chip without one is cataloged without ``buildings``.

    The Item id is ``AOI_<n>_<City>_img<k>``; assets ``pan`` (worldview3_pan), ``ms``
    (worldview3_ms) and ``buildings`` (roles ``labels``, ``msgfm:sensor`` building_mask: what
    the polygons become rasterised on the pan grid); footprint from pan. Rasters in a
    geographic CRS get their ``gsd`` in metres: the square root of the ground area of the
    raster's centre pixel, its sides measured as geodesics on the CRS's ellipsoid.
    ``datetime`` is the AOI's acquisition where published (:data:`AOI_ACQUISITIONS`), else
    ``start_datetime``/``end_datetime`` span :data:`UNDATED_RANGE`.

    Reported and skipped: a folder or file whose name does not fit the layout (a test tarball's
    ``AOI_<n>_<City>_Test_public`` folder included); an unreadable raster or one with the wrong
    band count; a buildings file that is not a GeoJSON FeatureCollection (the chip is kept
    without it); the files of a chip whose pan or ms is missing or unusable.

    Args:
        root: the folder holding the ``AOI_<n>_<City>_Train`` folders.

    Returns:
        The Items, sorted by AOI folder and image number, and the skipped files.
    """
    root = Path(root)
    result = BuildResult()
    for aoi_dir in sorted(p for p in root.iterdir() if p.is_dir()):
        match = AOI_FOLDER.fullmatch(aoi_dir.name)
        if match is None:
            result.skip(SourceFileError(aoi_dir, "folder name is not AOI_<n>_<City>_Train"))
            continue
        aoi = match["aoi"]
        for number, files in sorted(_find_chips(aoi_dir, aoi, result).items()):
            item = _chip_item(
                f"{aoi}_img{number}",
                int(match["number"]),
                files,
                partial(_chip_path, aoi_dir, aoi, number),
                result,
            )
            if item is not None:
                result.items.append(item)
    return result


def _chip_path(aoi_dir: Path, aoi: str, number: int, key: str) -> Path:
    """Where the layout puts the ``key`` file of chip ``number`` of ``aoi``."""
    return chip_path(aoi_dir, _PRODUCTS[key], aoi, number)


def _find_chips(aoi_dir: Path, aoi: str, result: BuildResult) -> dict[int, dict[str, Path]]:
    """Every chip's files by asset key, reporting folders and files outside the layout."""
    known = {aoi_dir / product_folder(product) for product in _PRODUCTS.values()}
    known.update(aoi_dir / name for name in (*UNREAD_FOLDERS, LABEL_FOLDER.parent.name))
    for path in sorted(aoi_dir.iterdir()):
        if path not in known:
            result.skip(SourceFileError(path, "not a folder of the SpaceNet 2 layout"))
    chips: dict[int, dict[str, Path]] = {}
    for key, product in _PRODUCTS.items():
        folder = aoi_dir / product_folder(product)
        for path in sorted(folder.iterdir()) if folder.is_dir() else ():
            number = image_of(path.name, product, aoi)
            if not path.is_file() or number is None:
                result.skip(SourceFileError(path, f"name is not {chip_file(product, aoi, '<k>')}"))
                continue
            chips.setdefault(number, {})[key] = path
    return chips


def _chip_item(
    item_id: str,
    aoi_number: int,
    files: dict[str, Path],
    expected_path: Callable[[str], Path],
    result: BuildResult,
) -> pystac.Item | None:
    """The Item of one chip, or None (its files reported) if pan or ms is missing/unusable."""
    makers: dict[str, Callable[[Path], pystac.Asset]] = {
        key: partial(raster_asset, sensor=get_sensor(sensor))
        for key, (_, sensor) in RASTER_PRODUCTS.items()
    }
    makers[LABEL_ASSET] = _buildings_asset
    assets = assemble_assets(files, makers, list(RASTER_PRODUCTS), result, expected_path)
    if assets is None:
        return None
    when = AOI_ACQUISITIONS.get(aoi_number)
    return make_item(item_id, assets, when, _time_properties(when), footprint_asset=FOOTPRINT_ASSET)


def _buildings_asset(path: Path) -> pystac.Asset:
    """The buildings GeoJSON as a labels Asset, checked to be a FeatureCollection."""
    try:
        collection = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise SourceFileError(path, f"unreadable GeoJSON ({error})") from error
    if not isinstance(collection, dict) or collection.get("type") != "FeatureCollection":
        raise SourceFileError(path, "not a GeoJSON FeatureCollection")
    extra = {SENSOR_FIELD: LABEL_SENSOR, **file_fields(path)}
    return pystac.Asset(
        href=str(path), media_type=pystac.MediaType.GEOJSON, roles=["labels"], extra_fields=extra
    )


def _time_properties(when: datetime | None) -> dict[str, str]:
    return {} if when is not None else datetime_range(*UNDATED_RANGE)
