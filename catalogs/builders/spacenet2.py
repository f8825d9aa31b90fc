"""SpaceNet 2 (building detection v2) catalog builder."""

from __future__ import annotations

import json
import math
import re
from datetime import UTC, datetime
from pathlib import Path

import pystac
from pyproj import CRS
from pystac.utils import datetime_to_str

from catalogs.sensors import get_sensor
from catalogs.stac import BuildResult, SourceFileError, file_checksum, make_item, raster_asset

# Asset key -> (product folder, registry sensor); the product folder is also the file prefix.
RASTER_PRODUCTS: dict[str, tuple[str, str]] = {
    "pan": ("PAN", "worldview3_pan"),
    "ms": ("MUL", "worldview3_ms"),
}
LABEL_ASSET = "buildings"
LABEL_FOLDER = Path("geojson") / "buildings"
# Rasterised onto the pan grid, the building polygons are the registry's building mask.
LABEL_SENSOR = "building_mask"
# Products of the training tarballs that are derived from PAN and MUL, and the challenge's
# summary CSVs: part of the layout, not cataloged.
UNCATALOGED_FOLDERS = ("MUL-PanSharpen", "RGB-PanSharpen", "summaryData")
FOOTPRINT_ASSET = "pan"

# Las Vegas: one WorldView-3 collect, 2015-10-22 18:36:56 UTC (catalog id 055649178030, the
# SpaceNet source rasters 15OCT22183656-P2AS-*). For the other AOIs no acquisition time is
# published; their range runs from the launch of WorldView-3 (2014-08-13) to the opening of the
# SpaceNet round-2 challenge with the data released (Topcoder, 2017-03-22).
AOI_ACQUISITIONS: dict[int, datetime] = {2: datetime(2015, 10, 22, 18, 36, 56, tzinfo=UTC)}
UNDATED_RANGE = (datetime(2014, 8, 13, tzinfo=UTC), datetime(2017, 3, 22, tzinfo=UTC))

_AOI_FOLDER = re.compile(r"(?P<aoi>AOI_(?P<number>\d+)_[A-Za-z]+)_Train")


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
        match = _AOI_FOLDER.fullmatch(aoi_dir.name)
        if match is None:
            result.skip(SourceFileError(aoi_dir, "folder name is not AOI_<n>_<City>_Train"))
            continue
        chips = _find_chips(aoi_dir, match["aoi"], result)
        for number, files in sorted(chips.items()):
            item = _chip_item(f"{match['aoi']}_img{number}", int(match["number"]), files, result)
            if item is not None:
                result.items.append(item)
    return result


def _find_chips(aoi_dir: Path, aoi: str, result: BuildResult) -> dict[int, dict[str, Path]]:
    """Every chip's files by asset key, reporting folders and files outside the layout."""
    folders = {key: (aoi_dir / folder, f"{folder}_{aoi}_img", ".tif")
               for key, (folder, _) in RASTER_PRODUCTS.items()}
    folders[LABEL_ASSET] = (aoi_dir / LABEL_FOLDER, f"buildings_{aoi}_img", ".geojson")
    known = {path for path, _, _ in folders.values()}
    known.update(aoi_dir / name for name in (*UNCATALOGED_FOLDERS, LABEL_FOLDER.parent.name))
    for path in sorted(aoi_dir.iterdir()):
        if path not in known:
            result.skip(SourceFileError(path, "not a folder of the SpaceNet 2 layout"))
    chips: dict[int, dict[str, Path]] = {}
    for key, (folder, prefix, suffix) in folders.items():
        for path in sorted(folder.iterdir()) if folder.is_dir() else ():
            match = re.fullmatch(rf"{prefix}(\d+){re.escape(suffix)}", path.name)
            if not path.is_file() or match is None:
                result.skip(SourceFileError(path, f"name is not {prefix}<k>{suffix}"))
                continue
            chips.setdefault(int(match[1]), {})[key] = path
    return chips


def _chip_item(item_id: str, aoi_number: int, files: dict[str, Path],
               result: BuildResult) -> pystac.Item | None:
    """The Item of one chip, or None (its files reported) if pan or ms is missing/unusable."""
    missing = [key for key in RASTER_PRODUCTS if key not in files]
    if missing:
        for path in files.values():
            result.skip(SourceFileError(path, f"chip {item_id} has no {' and '.join(missing)}"))
        return None
    assets: dict[str, pystac.Asset] = {}
    for key, (_, sensor) in RASTER_PRODUCTS.items():
        try:
            assets[key] = _raster_asset_m(files[key], sensor)
        except SourceFileError as error:
            result.skip(error)
    unusable = [key for key in RASTER_PRODUCTS if key not in assets]
    if unusable:
        for key in [*assets, *([LABEL_ASSET] if LABEL_ASSET in files else [])]:
            result.skip(SourceFileError(
                files[key], f"chip {item_id}: its {' and '.join(unusable)} is unusable"))
        return None
    if LABEL_ASSET in files:
        try:
            assets[LABEL_ASSET] = _buildings_asset(files[LABEL_ASSET])
        except SourceFileError as error:
            result.skip(error)
    when = AOI_ACQUISITIONS.get(aoi_number)
    return make_item(item_id, assets, when, _time_properties(when),
                     footprint_asset=FOOTPRINT_ASSET)


def _raster_asset_m(path: Path, sensor: str) -> pystac.Asset:
    """:func:`raster_asset` with ``gsd`` in metres also for rasters in a geographic CRS."""
    asset = raster_asset(path, get_sensor(sensor))
    fields = asset.extra_fields
    crs = CRS.from_user_input(fields["proj:code"] or fields["proj:wkt2"])
    if crs.is_geographic:
        fields["gsd"] = round(_pixel_side_m(crs, fields["proj:transform"], fields["proj:shape"]), 4)
    return asset


def _pixel_side_m(crs: CRS, transform: list[float], shape: list[int]) -> float:
    """Side of a square of the same ground area as the centre pixel of a geographic grid."""
    a, _, c, _, e, f = transform
    lon = c + a * (shape[1] // 2 + 0.5)
    lat = f + e * (shape[0] // 2 + 0.5)
    geod = crs.get_geod()
    _, _, east_west = geod.inv(lon - a / 2, lat, lon + a / 2, lat)
    _, _, north_south = geod.inv(lon, lat - e / 2, lon, lat + e / 2)
    return math.sqrt(east_west * north_south)


def _buildings_asset(path: Path) -> pystac.Asset:
    """The buildings GeoJSON as a labels Asset, checked to be a FeatureCollection."""
    try:
        collection = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise SourceFileError(path, f"unreadable GeoJSON ({error})") from error
    if not isinstance(collection, dict) or collection.get("type") != "FeatureCollection":
        raise SourceFileError(path, "not a GeoJSON FeatureCollection")
    extra = {"msgfm:sensor": LABEL_SENSOR, "file:checksum": file_checksum(path),
             "file:size": path.stat().st_size}
    return pystac.Asset(href=str(path), media_type=pystac.MediaType.GEOJSON, roles=["labels"],
                        extra_fields=extra)


def _time_properties(when: datetime | None) -> dict[str, str]:
    if when is not None:
        return {}
    start, end = UNDATED_RANGE
    return {"start_datetime": datetime_to_str(start), "end_datetime": datetime_to_str(end)}
