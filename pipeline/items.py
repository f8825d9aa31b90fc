"""The items table: STAC items as one stac-geoparquet file, the hand-over between pipeline stages.

Written with the stac-geoparquet package (its Arrow API), so the file is valid GeoParquet 1.1
that DuckDB, GeoPandas or rustac can query, and read back as the item dicts stac-geoparquet gives
(:func:`table_items`). Two details of the mapping are ours:

* Unlocated items (``geometry: null``, no ``bbox``; e.g. Million-AID and GeoPile pictures) are
  allowed by STAC and by GeoParquet (a nullable geometry column), but stac-geoparquet's converters
  only handle geometries. Such an item goes through the converter with a placeholder geometry
  and bbox that are replaced by real nulls in the Arrow table before it is written; on reading,
  null rows come back as ``geometry: null`` without ``bbox``. The placeholder never reaches
  the file or the caller.
* Arrow stores items with different fields as one schema, so a field one item lacks reads back as
  null. :func:`read_items` drops null fields, as stac-geoparquet's own convention treats null and
  absent alike, and restores the two nulls STAC requires: ``geometry`` and
  ``properties.datetime``. An explicit null elsewhere (e.g. an asset's ``proj:code: null``)
  therefore reads back as absent. Timestamps read back in pystac's canonical form
  (``2017-06-13T10:10:31Z``; fractional seconds only where they are non-zero).
* Local paths inside the working directory (the project root, where DVC runs the stages) are
  written relative to it and read back absolute: in link and asset hrefs and in
  ``msgfm:catalog_root``. A table, and every file derived from it, is then the same wherever
  the project lies, so a clone elsewhere reproduces the committed ``dvc.lock``. Paths outside
  it and URLs are kept as they are.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import shapely
import stac_geoparquet.arrow as stac_arrow
from pystac.utils import datetime_to_str, make_absolute_href

from catalogs.atomic_files import atomic_path
from catalogs.stac_search import CATALOG_ROOT, ITEM_FIELDS

_PLACEHOLDER_GEOMETRY: dict[str, Any] = {"type": "Point", "coordinates": [0.0, 0.0]}
_WKB_PROPERTIES = ("proj:geometry",)  # properties stac-geoparquet writes as WKB geometries
_PLACEHOLDER_BBOX = [0.0, 0.0, 0.0, 0.0]
_REQUIRED_NULL_PROPERTIES = ("datetime",)
# The columns stac-geoparquet keeps at the top level of an item; the others are properties.
_TOP_LEVEL = frozenset(ITEM_FIELDS) - {"properties"}
_BBOX_FIELDS = {
    4: ("xmin", "ymin", "xmax", "ymax"),
    6: ("xmin", "ymin", "zmin", "xmax", "ymax", "zmax"),
}


def write_items(path: Path, items: list[dict[str, Any]]) -> Path:
    """Write STAC item dicts as a stac-geoparquet table, atomically.

    See :func:`items_table` and :func:`write_table`.

    Raises:
        ValueError: naming ``path``, when the items' fields cannot share one Arrow schema
            (e.g. a field that is a number in one item and a string in another).
    """
    return write_table(path, items_table(items, path))


def read_items(path: Path) -> list[dict[str, Any]]:
    """The STAC item dicts of a table written by :func:`write_items`, in the same order.

    Raises:
        FileNotFoundError: ``path`` does not exist.
    """
    return table_rows_as_items(read_table(path))


def table_rows_as_items(table: pa.Table) -> list[dict[str, Any]]:
    """The STAC item dicts of (some rows of) a file written by :func:`write_items`.

    The table read from the file gives them as :func:`read_items` gives them: hrefs absolute again.
    """
    # Relative paths against the cwd. Every item of a collection links the same root,
    # collection and parent and has the same catalog root: each is converted once.
    absolute = functools.cache(make_absolute_href)
    return [_with_hrefs(item, absolute) for item in table_items(table)]


def items_table(items: list[dict[str, Any]], source: object) -> pa.Table:
    """STAC item dicts as the stac-geoparquet Arrow table :func:`write_items` writes.

    Local hrefs portable, unlocated items with null geometry and bbox, rows in the order of
    ``items``.

    Args:
        items: STAC items as dicts, each with ``collection``; ``geometry`` may be null.
        source: what the items are, for the error (the table's path, a catalog's item files).

    Raises:
        ValueError: naming ``source``, when the items' fields cannot share one Arrow schema.
    """
    return _items_table([_with_hrefs(item, portable_href) for item in items], source)


def concat_tables(tables: list[pa.Table], source: object) -> pa.Table:
    """The rows of ``tables``, in order, as one table; empty tables are left out.

    Their schemas are unified as stac-geoparquet unifies its chunks' (``pa.unify_schemas``,
    permissive): a field one table lacks is null in its rows, an integer field that is a float
    in another table becomes a float, and fields (nested ones too) come in the order they first
    appear, table after table.

    Raises:
        ValueError: naming ``source``, when two tables give one field incompatible types.
    """
    tables = [table for table in tables if table.num_rows]
    if not tables:
        return _items_table([], source)
    try:
        return pa.concat_tables(tables, promote_options="permissive")
    except (pa.ArrowInvalid, pa.ArrowTypeError) as error:
        raise ValueError(f"{source}: the items cannot be written as one table: {error}") from error


def sorted_by_id(table: pa.Table) -> pa.Table:
    """The rows of an items table sorted by (collection, id), a stable sort.

    As Python sorts the strings: UTF-8 bytes sort as code points.
    """
    if table.num_rows == 0:
        return table
    order = pc.sort_indices(table, [("collection", "ascending"), ("id", "ascending")])
    if pc.all(pc.equal(order, pa.array(np.arange(table.num_rows)))).as_py():
        return table  # already sorted (chunks of sorted catalogs): no copy of every row
    return table.take(order)


def write_table(path: Path, table: pa.Table) -> Path:
    """Write a stac-geoparquet Arrow table (:func:`items_table`) to ``path``, atomically.

    It goes to a temporary file beside it (its folder is created), then is renamed, so ``path`` is
    either the previous table or the complete new one. The file's row groups do not depend on how
    the table is chunked in memory: a table has the bytes of its rows. Returns ``path``.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        stac_arrow.to_parquet(table.combine_chunks(), tmp)
    return path


def read_table(path: Path) -> pa.Table:
    """The Arrow table of a file written by :func:`write_table`.

    Rows as :func:`table_items` reads them.

    Raises:
        FileNotFoundError: ``path`` does not exist.
    """
    return pq.read_table(path)


def table_items(table: pa.Table) -> list[dict[str, Any]]:
    """The STAC item dicts of a stac-geoparquet Arrow table, hrefs as the table holds them.

    See the module docstring for nulls and timestamps.

    The dicts are stac-geoparquet's (``stac_table_to_items``: its columns at the top level,
    the others in ``properties``, WKB geometries as GeoJSON, ``bbox`` as a list), converted
    here from the whole table at once (``to_pylist``): stac-geoparquet converts a row at a
    time (``as_py``), 140 us a row of a batch of pictures against 6 us. A test compares the
    two.
    """
    if table.num_rows == 0:
        return []
    names = table.schema.names
    timestamps = {f.name for f in table.schema if pa.types.is_timestamp(f.type)}
    return [_row_item(row, names, timestamps) for row in table.to_pylist()]


def _row_item(row: dict[str, Any], names: list[str], timestamps: set[str]) -> dict[str, Any]:
    """One row of a stac-geoparquet table (``to_pylist``) as a STAC item dict.

    Top-level fields in column order, then the properties in column order.
    """
    item: dict[str, Any] = {}
    properties: dict[str, Any] = {}
    for name in names:
        value = row[name]
        if name == "geometry":
            item[name] = None if value is None else _geojson(value)  # null: kept, as STAC says
        elif value is None:
            continue
        elif name == "bbox":
            item[name] = [value[axis] for axis in _BBOX_FIELDS[len(value)]]
        elif name == "assets":
            item[name] = {key: _asset(asset) for key, asset in value.items() if asset is not None}
        elif name in _TOP_LEVEL:
            item[name] = _without_nulls(value)
        elif name in timestamps:
            properties[name] = datetime_to_str(value)
        elif name in _WKB_PROPERTIES:
            properties[name] = _geojson(value)
        else:
            properties[name] = _without_nulls(value)
    for key in _REQUIRED_NULL_PROPERTIES:
        properties.setdefault(key, None)
    item["properties"] = properties
    return item


def _asset(asset: dict[str, Any]) -> dict[str, Any]:
    """An asset of a table row, nulls dropped and its WKB ``proj:geometry`` as GeoJSON."""
    asset = _without_nulls(asset)
    for name in _WKB_PROPERTIES:
        if name in asset:
            asset[name] = _geojson(asset[name])
    return asset


def _geojson(wkb: bytes) -> dict[str, Any]:
    """A WKB geometry as a GeoJSON dict (coordinates as nested lists)."""
    geometry = dict(shapely.from_wkb(wkb).__geo_interface__)
    geometry["coordinates"] = _as_lists(geometry["coordinates"])
    return geometry


def _as_lists(value: Any) -> Any:
    return [_as_lists(v) for v in value] if isinstance(value, list | tuple) else value


def portable_href(href: str) -> str:
    """``href`` relative to the working directory when it is a local absolute path inside it.

    Relative with POSIX separators; any other href as it is. pystac's ``make_absolute_href`` undoes
    it.
    """
    if "://" in href or not os.path.isabs(href):
        return href
    relative = os.path.relpath(href)
    return href if relative.startswith("..") else Path(relative).as_posix()


def _with_hrefs(item: dict[str, Any], convert: Callable[[str], str]) -> dict[str, Any]:
    """``item`` with ``convert`` applied to its link and asset hrefs and its catalog root."""

    def converted(entry: Any) -> Any:
        if isinstance(entry, dict) and isinstance(entry.get("href"), str):
            return {**entry, "href": convert(entry["href"])}
        return entry

    item = dict(item)
    if isinstance(item.get("links"), list):
        item["links"] = [converted(link) for link in item["links"]]
    if isinstance(item.get("assets"), dict):
        item["assets"] = {key: converted(asset) for key, asset in item["assets"].items()}
    properties = item.get("properties")
    if isinstance(properties, dict) and isinstance(properties.get(CATALOG_ROOT), str):
        item["properties"] = {**properties, CATALOG_ROOT: convert(properties[CATALOG_ROOT])}
    return item


def _items_table(items: list[dict[str, Any]], source: object) -> pa.Table:
    """``items`` as a stac-geoparquet Arrow table, unlocated items with null geometry and bbox."""
    if not items:
        return pa.table({"id": pa.array([], pa.string()), "geometry": pa.array([], pa.binary())})
    unlocated = pa.array([item.get("geometry") is None for item in items])
    convertible = [
        {**item, "geometry": _PLACEHOLDER_GEOMETRY, "bbox": _PLACEHOLDER_BBOX}
        if item.get("geometry") is None
        else item
        for item in items
    ]
    try:
        table = stac_arrow.parse_stac_items_to_arrow(convertible).read_all()
    except (pa.ArrowInvalid, pa.ArrowTypeError) as error:
        raise ValueError(f"{source}: the items cannot be written as one table: {error}") from error
    for name in ("geometry", "bbox"):
        column = table.column(name)
        nulled = pc.if_else(unlocated, pa.scalar(None, column.type), column)
        table = table.set_column(table.schema.get_field_index(name), table.field(name), nulled)
    return table


def _without_nulls(value: Any) -> Any:
    """``value`` with every null dict entry removed, at any depth (lists keep their length)."""
    if isinstance(value, dict):
        return {
            k: _without_nulls(v) if isinstance(v, dict | list) else v
            for k, v in value.items()
            if v is not None
        }
    if isinstance(value, list):
        return [_without_nulls(v) if isinstance(v, dict | list) else v for v in value]
    return value
