"""STAC pieces shared by every catalog builder: assets from files, items, writing, validation.

Builders (``catalogs.builders``) and the sample world (``catalogs.sample``) both go through these
functions, so a catalog of the real data and one of the sample world have the same item layout:
one Item per location, one Asset per co-located sensor, keyed by the sensor's registry name.
"""

from __future__ import annotations

import hashlib
import math
import os
import tempfile
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import pystac
import rasterio
import rasterio.crs
import rasterio.errors
from affine import Affine
from pyproj import CRS, Transformer
from pystac.utils import datetime_to_str
from shapely.geometry import box, mapping

from catalogs.atomic_files import replace_file, replace_folder
from catalogs.sensors import Sensor

EXTENSIONS = {
    "proj": "https://stac-extensions.github.io/projection/v2.0.0/schema.json",
    "eo": "https://stac-extensions.github.io/eo/v2.0.0/schema.json",
    "sar": "https://stac-extensions.github.io/sar/v1.2.0/schema.json",
    "file": "https://stac-extensions.github.io/file/v2.1.0/schema.json",
    "raster": "https://stac-extensions.github.io/raster/v2.0.0/schema.json",
    "label": "https://stac-extensions.github.io/label/v1.0.1/schema.json",
    "scientific": "https://stac-extensions.github.io/scientific/v1.0.0/schema.json",
}
MAX_ID_CHARS = 200  # longest collection or item id written as a folder name
SENSOR_FIELD = "msgfm:sensor"  # the asset field naming the registry sensor the asset holds
MULTIHASH_SHA2_256 = "1220"  # multihash prefix: code 0x12 (sha2-256), digest length 0x20


class SourceFileError(ValueError):
    """A source file is damaged or not what its layout promises. Carries the path and reason."""

    def __init__(self, path: Path | str, reason: str) -> None:
        """Initialize a new SourceFileError instance.

        Args:
            path: the damaged or unexpected file.
            reason: what is wrong with it.
        """
        super().__init__(f"{path}: {reason}")
        self.path = str(path)
        self.reason = reason


@dataclass
class Problem:
    """A file a builder skipped, and why."""

    path: str
    reason: str


@dataclass
class BuildResult:
    """What a builder found: the items it made and the files it had to skip."""

    items: list[pystac.Item] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)

    def skip(self, error: SourceFileError) -> None:
        """Record the file of ``error`` as skipped, with its reason."""
        self.problems.append(Problem(error.path, error.reason))

    def add(self, make: Callable[[], pystac.Item]) -> None:
        """Append the Item ``make()`` builds, or record its file as skipped if it cannot."""
        try:
            self.items.append(make())
        except SourceFileError as error:
            self.skip(error)


def file_checksum(path: Path | str) -> str:
    """``file:checksum`` of a file: sha2-256 as a hex multihash."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return MULTIHASH_SHA2_256 + digest.hexdigest()


def file_fields(path: Path) -> dict[str, Any]:
    """The file extension's ``file:checksum`` and ``file:size`` of a file."""
    return {"file:checksum": file_checksum(path), "file:size": path.stat().st_size}


def datetime_range(start: datetime, end: datetime) -> dict[str, str]:
    """``start_datetime`` and ``end_datetime`` of an Item known only to lie between them."""
    return {"start_datetime": datetime_to_str(start), "end_datetime": datetime_to_str(end)}


def _sensor_fields(
    sensor: Sensor, gsd_m: float | None, band_names: Sequence[str] | None = None
) -> dict[str, Any]:
    bands = sensor.stac_bands()
    if band_names is not None:
        by_name = {b["name"]: b for b in bands}
        unknown = [n for n in band_names if n not in by_name]
        if unknown:
            raise KeyError(f"sensor {sensor.name!r} has no bands {unknown}")
        bands = [by_name[n] for n in band_names]
    fields: dict[str, Any] = {"bands": bands, SENSOR_FIELD: sensor.name}
    if gsd_m is not None:
        fields["gsd"] = gsd_m
    if sensor.kind == "sar" and sensor.sar:
        fields["sar:polarizations"] = [b["sar:polarizations"][0] for b in bands]
        fields["sar:frequency_band"] = sensor.sar["frequency_band"]
        fields["sar:center_frequency"] = sensor.sar["center_frequency_ghz"]
        fields["sar:instrument_mode"] = sensor.sar["instrument_mode"]
        fields["sar:product_type"] = sensor.sar["product_type"]
    return fields


def raster_asset(
    path: Path | str,
    sensor: Sensor | Sequence[Sensor],
    roles: Iterable[str] = ("data",),
    band_names: Sequence[str] | None = None,
) -> pystac.Asset:
    """A georeferenced raster file as an Asset: proj, bands, file fields read from the file.

    ``gsd`` is in metres also for a geographic CRS: there, the side of a square of the centre
    pixel's ground area.

    Args:
        path: the raster (GeoTIFF/COG).
        sensor: its registry sensor, or candidates of which the one whose band count matches
            the file is taken (e.g. Sentinel-2 L1C with 13 bands or L2A with 12).
        roles: the asset's roles.
        band_names: the sensor's bands this file holds, for products with one file per band
            (the file's band count must match them); all the sensor's bands by default.

    Raises:
        SourceFileError: the file cannot be read, has no CRS/transform, or its band count
            matches no candidate.
    """
    path = Path(path)
    try:
        with rasterio.open(path) as src:
            crs, transform, shape, count = src.crs, src.transform, src.shape, src.count
            # Reading the last block proves the file is not truncated.
            src.read(1, window=((shape[0] - 1, shape[0]), (shape[1] - 1, shape[1])))
    except (rasterio.errors.RasterioError, OSError) as error:
        raise SourceFileError(path, f"unreadable raster ({error})") from error
    if crs is None:
        raise SourceFileError(path, "raster has no CRS")
    if transform.is_identity:
        raise SourceFileError(path, "raster has no geotransform")
    candidates = [sensor] if isinstance(sensor, Sensor) else list(sensor)
    if band_names is not None:
        matching = [s for s in candidates if count == len(band_names)]
    else:
        matching = [s for s in candidates if count == s.num_bands]
    if not matching:
        expected = (
            len(band_names)
            if band_names is not None
            else " or ".join(f"{s.num_bands} ({s.name})" for s in candidates)
        )
        raise SourceFileError(path, f"{count} bands, expected {expected}")
    sensor = matching[0]
    epsg = crs.to_epsg()
    extra = {
        "proj:code": f"EPSG:{epsg}" if epsg else None,
        "proj:shape": list(shape),
        "proj:transform": list(transform)[:6],
        "proj:bbox": list(rasterio.transform.array_bounds(*shape, transform)),
        **_sensor_fields(sensor, _gsd_m(crs, transform, shape), band_names),
        **file_fields(path),
    }
    if epsg is None:
        extra["proj:wkt2"] = crs.to_wkt()
    media = pystac.MediaType.COG if path.suffix.lower() in (".tif", ".tiff") else None
    return pystac.Asset(href=str(path), media_type=media, roles=list(roles), extra_fields=extra)


def _gsd_m(crs: rasterio.crs.CRS, transform: Affine, shape: tuple[int, int]) -> float:
    """A grid's pixel size in metres.

    Its pixel width where ``crs`` is projected; where it is geographic, the side of a square of
    the centre pixel's ground area (its sides measured as geodesics on the CRS's ellipsoid),
    rounded to 0.1 mm.
    """
    if not crs.is_geographic:
        return abs(transform.a)
    lon = transform.c + transform.a * (shape[1] // 2 + 0.5)
    lat = transform.f + transform.e * (shape[0] // 2 + 0.5)
    geod = CRS.from_user_input(crs).get_geod()
    _, _, east_west = geod.inv(lon - transform.a / 2, lat, lon + transform.a / 2, lat)
    _, _, north_south = geod.inv(lon, lat - transform.e / 2, lon, lat + transform.e / 2)
    return round(math.sqrt(east_west * north_south), 4)


def picture_asset(
    path: Path | str, sensor: Sensor, roles: Iterable[str] = ("data",), gsd_m: float | None = None
) -> pystac.Asset:
    """A picture without georeference (JPEG/PNG) as an Asset: shape, bands and file fields only.

    Raises:
        SourceFileError: the file cannot be decoded, or its band count differs from the registry's.
    """
    from PIL import Image, UnidentifiedImageError

    path = Path(path)
    try:
        with Image.open(path) as image:
            image.load()
            width, height, count = image.width, image.height, len(image.getbands())
            fmt = image.format
    except (UnidentifiedImageError, OSError) as error:
        raise SourceFileError(path, f"undecodable image ({error})") from error
    if count != sensor.num_bands:
        raise SourceFileError(
            path, f"{count} bands, but sensor {sensor.name!r} has {sensor.num_bands}"
        )
    media = {
        "JPEG": pystac.MediaType.JPEG,
        "PNG": pystac.MediaType.PNG,
        "TIFF": pystac.MediaType.TIFF,
    }.get(fmt or "")
    extra = {
        "proj:code": None,
        "proj:shape": [height, width],
        **_sensor_fields(sensor, gsd_m),
        **file_fields(path),
    }
    return pystac.Asset(href=str(path), media_type=media, roles=list(roles), extra_fields=extra)


def footprint(asset: pystac.Asset) -> tuple[dict[str, Any], list[float]]:
    """GeoJSON polygon and bbox in WGS84 of a georeferenced asset's grid."""
    fields = asset.extra_fields
    crs = CRS.from_user_input(fields.get("proj:code") or fields["proj:wkt2"])
    left, bottom, right, top = fields["proj:bbox"]
    to_wgs84 = Transformer.from_crs(crs, "EPSG:4326", always_xy=True)
    lon_min, lat_min, lon_max, lat_max = to_wgs84.transform_bounds(
        left, bottom, right, top, densify_pts=21
    )
    bbox = [round(v, 7) for v in (lon_min, lat_min, lon_max, lat_max)]
    return mapping(box(*bbox)), bbox


def make_item(
    item_id: str,
    assets: Mapping[str, pystac.Asset],
    when: datetime | None,
    properties: Mapping[str, Any] | None = None,
    footprint_asset: str | None = None,
) -> pystac.Item:
    """One Item per location: ``assets`` keyed by sensor name; geometry from ``footprint_asset``.

    With no ``footprint_asset`` (pictures without georeference) geometry and bbox are null.
    Without a known ``when``, ``datetime`` is null and ``properties`` should carry a range.
    """
    geometry, bbox = footprint(assets[footprint_asset]) if footprint_asset else (None, None)
    props = dict(properties or {})
    if when is None and "start_datetime" not in props:
        raise ValueError(f"item {item_id!r}: no datetime and no start/end range")
    item = pystac.Item(id=item_id, geometry=geometry, bbox=bbox, datetime=when, properties=props)
    for key, asset in assets.items():
        item.add_asset(key, asset)
    used = {"file", "eo"}
    for asset in assets.values():
        if "proj:shape" in asset.extra_fields:
            used.add("proj")
        if "sar:polarizations" in asset.extra_fields:
            used.add("sar")
        if any("raster:scale" in b for b in asset.extra_fields.get("bands", [])):
            used.add("raster")
    if any(k.startswith("label:") for k in props):
        used.add("label")
    item.stac_extensions = sorted(EXTENSIONS[name] for name in used)
    return item


def assemble_assets(
    files: Mapping[str, Path],
    makers: Mapping[str, Callable[[Path], pystac.Asset]],
    required: Sequence[str],
    result: BuildResult,
    expected_path: Callable[[str], Path],
) -> dict[str, pystac.Asset] | None:
    """The assets of one Item from its files, or None if a required one is missing or unusable.

    With None, the Item's files are reported in ``result``.

    Args:
        files: the Item's files by asset key.
        makers: by asset key, in the Item's asset order, what makes a file into its Asset
            (raising :class:`SourceFileError`); files of other keys are not read.
        required: the asset keys the Item cannot do without.
        result: where the skipped files are reported.
        expected_path: where the layout puts the file of a key, to name a missing one.

    Returns:
        The assets in ``makers`` order. A missing required file: None, every present file
        reported as lacking it (``no <key> partner: <expected path>``). A file whose Asset
        cannot be made is reported and left out; if it is a required one: None, every file whose
        Asset was made reported as having it for an unusable partner
        (``unusable <key> partner: <path>``).
    """
    missing = [key for key in required if key not in files]
    if missing:
        expected = ", ".join(str(expected_path(key)) for key in missing)
        for path in files.values():
            result.skip(SourceFileError(path, f"no {' and '.join(missing)} partner: {expected}"))
        return None
    assets: dict[str, pystac.Asset] = {}
    for key, make in makers.items():
        if key in files:
            try:
                assets[key] = make(files[key])
            except SourceFileError as error:
                result.skip(error)
    unusable = [key for key in required if key not in assets]
    if unusable:
        paths = ", ".join(str(files[key]) for key in unusable)
        for key in assets:
            result.skip(
                SourceFileError(files[key], f"unusable {' and '.join(unusable)} partner: {paths}")
            )
        return None
    return assets


def picture_item(
    item_id: str,
    path: Path,
    make_asset: Callable[[], pystac.Asset],
    date_range: tuple[datetime, datetime],
    properties: Mapping[str, Any],
    used_ids: set[str],
) -> pystac.Item:
    """The Item of a picture without georeference: its one asset ``image``, null geometry.

    Its properties: no datetime but ``date_range``, then ``properties``. Its id is added to
    ``used_ids``.

    Raises:
        SourceFileError: ``item_id`` is already in ``used_ids``, or ``make_asset`` fails.
    """
    if item_id in used_ids:
        raise SourceFileError(path, f"a second image with the Item id {item_id!r}")
    asset = make_asset()
    used_ids.add(item_id)
    return make_item(item_id, {"image": asset}, None, {**datetime_range(*date_range), **properties})


def write_catalog(
    out_dir: Path | str, collections: Iterable[pystac.Collection], catalog_id: str, description: str
) -> Path:
    """Write a self-contained static catalog ``out_dir/catalog.json`` with one child per collection.

    Asset hrefs of files under ``out_dir`` become relative (the catalog can be moved with its
    data); files elsewhere keep absolute paths. The tree is written into a staging folder inside
    ``out_dir``, then each collection folder replaces its old one whole and the root
    ``catalog.json`` is replaced last: a reader never meets a half-written item or collection.
    Returns the root catalog's path.

    Raises:
        ValueError: a collection or item id that cannot be one folder name (a separator,
            ``..``, NUL, more than 200 characters), naming it.
    """
    out_dir = Path(out_dir).resolve()
    out_dir.mkdir(parents=True, exist_ok=True)
    catalog = pystac.Catalog(id=catalog_id, description=description)
    for collection in collections:
        _check_folder_name("collection", collection.id)
        catalog.add_child(collection)
    with tempfile.TemporaryDirectory(dir=out_dir, prefix=".catalog-staging.") as staging:
        # The trailing separator makes pystac treat a folder name with a dot as a folder.
        catalog.normalize_hrefs(f"{staging}{os.sep}", skip_unresolved=True)
        for item in catalog.get_items(recursive=True):
            _check_folder_name(f"item of {item.collection_id}", item.id)
            # Relative to where the item will be once moved out of the staging folder.
            item_dir = out_dir / Path(item.get_self_href()).parent.relative_to(staging)
            for asset in item.assets.values():
                target = Path(asset.get_absolute_href() or asset.href).resolve()
                if target.is_relative_to(out_dir):
                    asset.href = os.path.relpath(target, item_dir)
                else:
                    asset.href = str(target)
        catalog.save(catalog_type=pystac.CatalogType.SELF_CONTAINED)
        for child in sorted(Path(staging).iterdir()):
            if child.is_dir():
                replace_folder(child, out_dir / child.name)
        replace_file(Path(staging) / "catalog.json", out_dir / "catalog.json")
    return out_dir / "catalog.json"


def _check_folder_name(kind: str, name: str) -> None:
    """Refuse an id that pystac would not turn into exactly one folder below the catalog."""
    if (
        not name
        or name in (".", "..")
        or len(name) > MAX_ID_CHARS
        or any(c in name for c in ("/", "\\", "\0"))
    ):
        raise ValueError(
            f"{kind} id {name[:80]!r}: not usable as a folder name (no separators, "
            f"'..' or NUL, at most {MAX_ID_CHARS} characters)"
        )


def _core_schema_registry() -> Any:
    from pystac.validation.local_validator import get_local_schema_cache
    from referencing import Registry, Resource

    return Registry().with_resources(
        (uri, Resource.from_contents(schema)) for uri, schema in get_local_schema_cache().items()
    )


def validate_core(stac: Mapping[str, Any]) -> list[str]:
    """Validate one STAC object (dict) against the STAC 1.1 core JSON schema, offline.

    Uses the core schemas that ship inside pystac; extension fields are checked by our tests.
    Returns the error messages (empty when valid).
    """
    from jsonschema import Draft7Validator

    kind = stac.get("type")
    name = {"Feature": "item", "Collection": "collection", "Catalog": "catalog"}.get(kind or "")
    if name is None:
        return [f"not a STAC item, collection or catalog (type={kind!r})"]
    version = stac.get("stac_version", pystac.get_stac_version())
    uri = f"https://schemas.stacspec.org/v{version}/{name}-spec/json-schema/{name}.json"
    registry = _core_schema_registry()
    try:
        schema = registry.contents(uri)
    except Exception as error:  # referencing raises its own unresolvable error type
        return [f"no offline core schema for STAC {version} {name}: {error}"]
    validator = Draft7Validator(schema, registry=registry)
    return [
        f"{'/'.join(map(str, e.absolute_path)) or '<root>'}: {e.message}"
        for e in validator.iter_errors(dict(stac))
    ]
