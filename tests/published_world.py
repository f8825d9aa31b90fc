"""Published STAC items (tests/data/stac_items) made local: their data assets rendered as
rasters on the item's own CRS and grid origin, hrefs rewritten to those files, written as a
static catalog. Only hrefs (and, where a test asks for a smaller grid or another window of it,
an asset's ``proj:shape`` and ``proj:transform``) change; every other field stays as the
publisher wrote it."""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pystac
import rasterio
from affine import Affine

from catalogs.item_assets import declared_crs, sensor_assets
from catalogs.stac import file_fields

ITEMS = Path(__file__).parent / "data" / "stac_items"
# Lossless JPEG 2000, as Sentinel-2 granules are.
JP2_OPTIONS = {"driver": "JP2OpenJPEG", "QUALITY": "100", "REVERSIBLE": "YES"}
GTIFF_OPTIONS = {"driver": "GTiff", "compress": "deflate", "tiled": True}
STRUCTURE_LINKS = ("self", "root", "parent", "collection")

# Pixel values of file band ``band`` (0-based, over all assets of the item) at (rows, cols).
Pattern = Callable[[int, np.ndarray, np.ndarray], np.ndarray]


def published_item(name: str) -> dict[str, Any]:
    """A fixture item as its publisher wrote it."""
    return json.loads((ITEMS / f"{name}.json").read_text())


def dn_pattern(band: int, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """Smooth, band-dependent DNs in 1100..4100: no nodata (0), no value the Sentinel-2
    offset (-1000 DN) clips."""
    return 1100 + (band * 211 + 3 * rows + 7 * cols) % 3000


def asset_grid(item: dict[str, Any], asset: dict[str, Any]) -> tuple[Affine, tuple[int, int]]:
    """The transform and (rows, cols) an asset (else its item) declares."""
    properties = item["properties"]
    transform = asset.get("proj:transform") or properties["proj:transform"]
    shape = asset.get("proj:shape") or properties["proj:shape"]
    return Affine(*transform[:6]), (int(shape[0]), int(shape[1]))


def render_assets(
    item: dict[str, Any],
    folder: Path,
    dtype: str,
    shapes: dict[str, tuple[int, int]] | None = None,
    pattern: Pattern = dn_pattern,
    origin: tuple[float, float] | None = None,
) -> dict[str, Any]:
    """Write the item's data assets (those the reading layer uses) into ``folder`` and return
    the item with hrefs rewritten to them (relative: ``<key>.<ext>``) and other assets dropped.

    Args:
        item: a published item (left unchanged).
        folder: where the files go, beside the item.
        dtype: the files' data type (the publisher's).
        shapes: per asset key, a smaller (rows, cols) than declared, same origin and pixel size.
        pattern: the pixel values.
        origin: map (x, y) of the rendered window's top-left corner, a pixel corner of every
            asset's declared grid (default: the grid's own corner); ``shapes`` then count from
            there.
    """
    local = copy.deepcopy(item)
    used = {a.key: a for assets in sensor_assets(item).values() for a in assets}
    local["assets"] = {key: local["assets"][key] for key in item["assets"] if key in used}
    crs = declared_crs(item)
    folder.mkdir(parents=True, exist_ok=True)
    band = 0
    for key, asset in local["assets"].items():
        transform, shape = asset_grid(item, asset)
        shape = (shapes or {}).get(key, shape)
        if origin is not None:
            transform = _window_transform(transform, origin, key)
            if "proj:transform" in asset:
                asset["proj:transform"] = list(transform)[: len(asset["proj:transform"])]
        if "proj:shape" in asset:
            asset["proj:shape"] = list(shape)
        count = max(
            len(asset.get("eo:bands") or asset.get("bands") or ()),
            len(asset.get("raster:bands") or ()),
            1,
        )
        rows, cols = np.mgrid[: shape[0], : shape[1]]
        data = np.stack([pattern(band + i, rows, cols) for i in range(count)]).astype(dtype)
        band += count
        jp2 = asset.get("type") == "image/jp2"
        path = folder / f"{key}.{'jp2' if jp2 else 'tif'}"
        options = JP2_OPTIONS if jp2 else GTIFF_OPTIONS
        with rasterio.open(
            path,
            "w",
            height=shape[0],
            width=shape[1],
            count=count,
            dtype=dtype,
            crs=crs,
            transform=transform,
            **options,
        ) as dst:
            dst.write(data)
        asset["href"] = path.name
        if "file:size" in asset or "file:checksum" in asset:  # the publisher's, of its file
            asset.update(file_fields(path))
    return local


def _window_transform(transform: Affine, origin: tuple[float, float], key: str) -> Affine:
    """``transform`` moved to the pixel corner at map ``origin``."""
    col, row = ~transform @ origin
    if abs(col - round(col)) > 1e-6 or abs(row - round(row)) > 1e-6:
        raise ValueError(f"asset {key}: {origin} is not a pixel corner of {transform}")
    return transform @ Affine.translation(round(col), round(row))


def write_catalog(folder: Path, items: list[dict[str, Any]]) -> Path:
    """A static catalog at ``folder/catalog.json`` with one collection per item collection
    (its temporal extent from the items' ``datetime``, else ``start_datetime``); each item's
    asset files must already be in ``folder/<collection>/<item id>/``."""
    catalog = pystac.Catalog("published", "Published items over locally rendered rasters")
    by_collection: dict[str, list[pystac.Item]] = {}
    for item in items:
        # The API's own links (self, root, parent, collection) would resolve relative hrefs
        # against the API: the catalog gets its own.
        links = [link for link in item.get("links", []) if link["rel"] not in STRUCTURE_LINKS]
        by_collection.setdefault(item["collection"], []).append(
            pystac.Item.from_dict({**item, "links": links}, preserve_dict=True, migrate=False)
        )
    for collection_id, members in by_collection.items():
        times = [m.datetime or m.common_metadata.start_datetime for m in members]
        extent = pystac.Extent(
            pystac.SpatialExtent([m.bbox for m in members]),
            pystac.TemporalExtent([[min(times), max(times)]]),
        )
        collection = pystac.Collection(collection_id, collection_id, extent)
        for member in members:
            member.set_self_href(str(folder / collection_id / member.id / f"{member.id}.json"))
            collection.add_item(member)
        catalog.add_child(collection)
    catalog.normalize_hrefs(str(folder))
    catalog.save(pystac.CatalogType.SELF_CONTAINED)
    return folder / "catalog.json"
