"""A catalog given as one stac-geoparquet file, read directly.

Given as ``pipeline.catalog: .../items.parquet``; one Parquet row group per task on the executor.

The file is a catalog like a static one: relative link and asset hrefs are resolved against
the file's folder, which is the catalog root the access policy holds its local asset hrefs to
(:mod:`pipeline.fetch` checks them), and the search applies with the same semantics
(:func:`catalogs.stac_search.matches`). Only the rows of the searched collections are converted to
item dicts; a local file is read one row group per task on the executor, a file at an http(s)
URL is downloaded once and read here.
"""

from __future__ import annotations

import urllib.request
from collections.abc import Callable, Iterator
from typing import Any, TypeVar
from urllib.parse import urlsplit

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from catalogs.access_policy import is_local, local_path
from catalogs.stac_search import Search, check_collections, folder_of, matches, with_origin
from pipeline.cluster import Executor
from pipeline.items import items_table, sorted_by_id, table_items

SUFFIXES = (".parquet", ".geoparquet")
_REQUIRED_COLUMNS = ("type", "stac_version", "id", "geometry", "collection")
DOWNLOAD_TIMEOUT_S = 300.0
_Result = TypeVar("_Result")


def is_geoparquet(href: str) -> bool:
    """Whether a catalog href names a stac-geoparquet file (by its suffix)."""
    return urlsplit(href).path.lower().endswith(SUFFIXES)


def geoparquet_items(href: str, search: Search, executor: Executor) -> Iterator[dict[str, Any]]:
    """The items of the stac-geoparquet file at ``href`` that match ``search``, unsorted.

    Raises:
        ValueError: naming ``href``: it is no Parquet file, or no stac-geoparquet file (a
            required column is missing or its rows are no STAC items), or it has no items of a
            searched collection.
    """
    for items in _per_row_group(href, search, executor, _row_group_items, _matching):
        yield from items


def geoparquet_tables(href: str, search: Search, executor: Executor) -> Iterator[pa.Table]:
    """:func:`geoparquet_items` as stac-geoparquet tables, one per row group.

    Tables as :func:`pipeline.items.items_table` makes them, each sorted by (collection, id), in no
    particular order.

    Raises:
        ValueError: as :func:`geoparquet_items`.
    """
    return _per_row_group(href, search, executor, _row_group_table, _matching_table)


def _per_row_group(
    href: str,
    search: Search,
    executor: Executor,
    local_task: Callable[[tuple[str, int], Search], _Result],
    read: Callable[[str, pa.Table, Search], _Result],
) -> Iterator[_Result]:
    """Run ``local_task`` or ``read`` on each row group of the file at ``href``.

    ``local_task`` of each row group of a local file, on ``executor``; or ``read`` of each row group
    of a file at an http(s) ``href``, downloaded once and read here rather than shipped to every
    worker.
    """
    source: str | pa.NativeFile = (
        str(local_path(href)) if is_local(href) else pa.BufferReader(_download(href))
    )
    parquet = _open(href, source)
    missing = [c for c in _REQUIRED_COLUMNS if c not in parquet.schema_arrow.names]
    if missing:
        raise ValueError(f"{href}: not a stac-geoparquet file (no column(s) {missing})")
    collections = parquet.read(columns=["collection"]).column("collection")
    check_collections(
        href, search.collections, (c for c in pc.unique(collections).to_pylist() if c is not None)
    )
    tasks = [(href, group) for group in range(parquet.metadata.num_row_groups)]
    if isinstance(source, str):
        return executor.map_unordered(local_task, tasks, search)
    return (read(href, parquet.read_row_group(group), search) for _, group in tasks)


def _download(url: str) -> bytes:
    try:
        with urllib.request.urlopen(url, timeout=DOWNLOAD_TIMEOUT_S) as response:
            return response.read()
    except OSError as error:
        raise ValueError(f"{url}: cannot be read: {error}") from error


def _open(href: str, source: str | pa.NativeFile) -> pq.ParquetFile:
    try:
        return pq.ParquetFile(source)
    except (OSError, pa.ArrowException) as error:
        raise ValueError(f"{href}: not a Parquet file ({error})") from error


def _row_group_items(task: tuple[str, int], search: Search) -> list[dict[str, Any]]:
    """The matching items of one row group of a local file (runs on a worker)."""
    href, group = task
    return _matching(href, pq.ParquetFile(local_path(href)).read_row_group(group), search)


def _row_group_table(task: tuple[str, int], search: Search) -> pa.Table:
    """:func:`_row_group_items` as a table sorted by (collection, id) (runs on a worker)."""
    href, group = task
    return _matching_table(href, pq.ParquetFile(local_path(href)).read_row_group(group), search)


def _matching_table(href: str, table: pa.Table, search: Search) -> pa.Table:
    """:func:`_matching` as a table sorted by (collection, id)."""
    return sorted_by_id(items_table(_matching(href, table, search), href))


def _matching(href: str, table: pa.Table, search: Search) -> list[dict[str, Any]]:
    """The items of ``table`` (rows of the file at ``href``) that match ``search``."""
    table = table.filter(
        pc.is_in(table.column("collection"), pa.array(search.collections, pa.string()))
    )
    try:
        items = table_items(table)
    except (KeyError, TypeError, ValueError, pa.ArrowException) as error:
        raise ValueError(
            f"{href}: not a stac-geoparquet file (its rows are no STAC items: "
            f"{type(error).__name__}: {error})"
        ) from error
    area, interval = search.area, search.interval
    root = folder_of(href)
    return [with_origin(item, href, root) for item in items if matches(item, area, interval)]
