"""The items table: STAC items as one stac-geoparquet file, the hand-over between pipeline stages.

Written and read with the stac-geoparquet package (its Arrow API), so the file is valid GeoParquet
1.1 that DuckDB, GeoPandas or rustac can query. Two details of the mapping are ours:

* Unlocated items (``geometry: null``, no ``bbox``; e.g. Million-AID and GeoPile pictures) are
  allowed by STAC and by GeoParquet (a nullable geometry column), but stac-geoparquet's converters
  only handle geometries. Such an item goes through the converter with a placeholder geometry
  and bbox that are replaced by real nulls in the Arrow table before it is written; on reading,
  null rows take the placeholder through the converter and come back as ``geometry: null``
  without ``bbox``. The placeholder never reaches the file or the caller.
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
from pystac.utils import datetime_to_str, make_absolute_href, str_to_datetime

from catalogs.atomic_files import atomic_path

CATALOG_ROOT = "msgfm:catalog_root"  # item property: the folder or URL of the item's catalog
_PLACEHOLDER_GEOMETRY: dict[str, Any] = {"type": "Point", "coordinates": [0.0, 0.0]}
_WKB_PROPERTIES = ("proj:geometry",)  # properties stac-geoparquet writes as WKB geometries
_PLACEHOLDER_BBOX = [0.0, 0.0, 0.0, 0.0]
_REQUIRED_NULL_PROPERTIES = ("datetime",)


def write_items(path: Path, items: list[dict[str, Any]]) -> Path:
    """Write STAC item dicts as a stac-geoparquet table, atomically (:func:`items_table`,
    :func:`write_table`).

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
    """The STAC item dicts of (some rows of) a table read from a file written by
    :func:`write_items`, as :func:`read_items` gives them: hrefs absolute again."""
    # Relative paths against the cwd. Every item of a collection links the same root,
    # collection and parent and has the same catalog root: each is converted once.
    absolute = functools.cache(make_absolute_href)
    return [_with_hrefs(item, absolute) for item in table_items(table)]


def items_table(items: list[dict[str, Any]], source: object) -> pa.Table:
    """STAC item dicts as the stac-geoparquet Arrow table :func:`write_items` writes: local
    hrefs portable, unlocated items with null geometry and bbox, rows in the order of ``items``.

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
    """The rows of an items table sorted by (collection, id), a stable sort (as Python sorts
    the strings: UTF-8 bytes sort as code points)."""
    if table.num_rows == 0:
        return table
    order = pc.sort_indices(table, [("collection", "ascending"), ("id", "ascending")])
    if pc.all(pc.equal(order, pa.array(np.arange(table.num_rows)))).as_py():
        return table  # already sorted (chunks of sorted catalogs): no copy of every row
    return table.take(order)


def write_table(path: Path, table: pa.Table) -> Path:
    """Write a stac-geoparquet Arrow table (:func:`items_table`) to ``path``, atomically: to a
    temporary file beside it (its folder is created), then renamed, so ``path`` is either the
    previous table or the complete new one. The file's row groups do not depend on how the
    table is chunked in memory: a table has the bytes of its rows. Returns ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        stac_arrow.to_parquet(table.combine_chunks(), tmp)
    return path


def read_table(path: Path) -> pa.Table:
    """The Arrow table of a file written by :func:`write_table` (rows as :func:`table_items`
    reads them).

    Raises:
        FileNotFoundError: ``path`` does not exist.
    """
    return pq.read_table(path)


def table_items(table: pa.Table) -> list[dict[str, Any]]:
    """The STAC item dicts of a stac-geoparquet Arrow table, hrefs as the table holds them
    (see the module docstring for nulls and timestamps)."""
    if table.num_rows == 0:
        return []
    unlocated = table.column("geometry").is_null()
    timestamps = [f.name for f in table.schema if pa.types.is_timestamp(f.type)]
    placeholder = shapely.to_wkb(shapely.geometry.shape(_PLACEHOLDER_GEOMETRY), flavor="iso")
    table = _fill_nulls(table, "geometry", unlocated, placeholder)
    table = _fill_nulls(table, "bbox", unlocated,
                        dict(zip(("xmin", "ymin", "xmax", "ymax"), _PLACEHOLDER_BBOX, strict=True)))
    # stac-geoparquet stores proj:geometry as WKB too and cannot read back an item without
    # one beside items with one (3DEP lidar DSM items have it, NAIP items do not).
    without_projected = {}
    for name in _WKB_PROPERTIES:
        if name in table.schema.names:
            without_projected[name] = table.column(name).is_null().to_pylist()
            table = _fill_nulls(table, name, table.column(name).is_null(), placeholder)
    # stac-geoparquet moves its timestamp columns last in the order of a Python set, which
    # changes with the process's hash seed; properties take the table's own column order back,
    # so a table written from these items has the same bytes in every process.
    position = {name: index for index, name in enumerate(table.schema.names)}
    canonical = functools.cache(_canonical_timestamp)  # items of a source share their ranges
    items = []
    for row, (item, is_unlocated) in enumerate(zip(stac_arrow.stac_table_to_items(table),
                                                   unlocated.to_pylist(), strict=True)):
        item = _without_nulls(item)
        if is_unlocated:
            item["geometry"] = None
            item.pop("bbox", None)
        for name, nulls in without_projected.items():
            if nulls[row]:
                item["properties"].pop(name, None)
        properties = item["properties"] = dict(sorted(
            item.get("properties", {}).items(), key=lambda kv: position.get(kv[0], len(position))))
        for key in _REQUIRED_NULL_PROPERTIES:
            properties.setdefault(key, None)
        for key in timestamps:
            if properties.get(key) is not None:
                properties[key] = canonical(properties[key])
        items.append(item)
    return items


def _canonical_timestamp(value: str) -> str:
    """A timestamp in pystac's canonical form (see the module docstring)."""
    return datetime_to_str(str_to_datetime(value))


def portable_href(href: str) -> str:
    """``href`` relative to the working directory when it is a local absolute path inside it
    (POSIX separators); any other href as it is. pystac's ``make_absolute_href`` undoes it."""
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
        if item.get("geometry") is None else item
        for item in items]
    try:
        table = stac_arrow.parse_stac_items_to_arrow(convertible).read_all()
    except (pa.ArrowInvalid, pa.ArrowTypeError) as error:
        raise ValueError(f"{source}: the items cannot be written as one table: {error}") from error
    for name in ("geometry", "bbox"):
        column = table.column(name)
        nulled = pc.if_else(unlocated, pa.scalar(None, column.type), column)
        table = table.set_column(table.schema.get_field_index(name), table.field(name), nulled)
    return table


def _fill_nulls(table: pa.Table, name: str, mask: pa.ChunkedArray, value: Any) -> pa.Table:
    """``table`` with column ``name`` set to ``value`` where ``mask`` is true."""
    column = table.column(name)
    filled = pc.if_else(mask, pa.scalar(value, column.type), column)
    return table.set_column(table.schema.get_field_index(name), table.field(name), filled)


def _without_nulls(value: Any) -> Any:
    """``value`` with every null dict entry removed, at any depth (lists keep their length)."""
    if isinstance(value, dict):
        return {k: _without_nulls(v) if isinstance(v, dict | list) else v
                for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_without_nulls(v) if isinstance(v, dict | list) else v for v in value]
    return value
