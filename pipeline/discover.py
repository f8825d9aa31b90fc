"""Discover: the items of the chosen sources, with one search (:mod:`catalogs.stac_search`).

Sources are a STAC API, a static STAC catalog or a stac-geoparquet file.

* A static catalog's item files are read in chunks on the executor
  (:mod:`pipeline.static_catalog`); a stac-geoparquet file (``pipeline.catalog`` ending in
  ``.parquet``) is read directly (:mod:`pipeline.geoparquet_catalog`).
* A STAC API is searched one collection at a time, up to
  :data:`catalogs.stac_search.API_SEARCHES` collections at once (each paging on its own), and the
  results merged.

Every file discover reads beyond the source the user named (a child or item link, an API's
next page) passes the access policy (:mod:`catalogs.access_policy`): links of a local catalog
stay inside its root folder (resolved) or are remote; links of a remote catalog or API are
remote, and an http(s) link to another host than the source's never reaches a loopback, private
or link-local address unless allowed. A refused link stops discover with an error naming the
source, the link and the rule: the catalog itself is hostile or broken.

Items come sorted by collection, then item id. The stage (:func:`discover_to_table`) gets them
from the workers as Arrow tables, one per chunk, and only concatenates and sorts those; items
become dicts in the main process only where pairs are declared (pairing matches dicts) or an
API was searched.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pyarrow as pa

from catalogs.stac_search import (
    CATALOG_HREF,
    CATALOG_ROOT,
    Search,
    api_items,
    refusal_named,
    search_of,
)
from pipeline.cluster import Executor
from pipeline.geoparquet_catalog import geoparquet_items, geoparquet_tables, is_geoparquet
from pipeline.items import concat_tables, items_table, sorted_by_id, write_table
from pipeline.pairing import pair_items, write_pairs_table
from pipeline.params import PipelineParams
from pipeline.static_catalog import static_catalog_items, static_catalog_tables

__all__ = ["CATALOG_HREF", "CATALOG_ROOT", "discover", "discover_table", "discover_to_table"]


def discover(params: PipelineParams, executor: Executor | None = None) -> list[dict[str, Any]]:
    """The items of ``params.collections`` matching ``params.bbox`` and ``params.datetime``.

    Read from ``params.api_url`` when it is set, else from ``params.catalog`` (a path or URL of
    a static catalog's root ``catalog.json``, or of a stac-geoparquet file). A static catalog's
    item files are read on ``executor`` (default: this process).

    Returns:
        STAC item dicts with absolute asset hrefs, ``msgfm:catalog_root`` and, on assets whose
        href was relative, ``msgfm:catalog_href``; sorted by (collection, id).

    Raises:
        ValueError: no source is set, a search parameter is invalid, a collection is not
            in the source (the message names the source and the collections it has), the
            source is no catalog of its kind, or the access policy refuses a link of the source
            (naming the link and the rule).
    """
    source, search = _source_search(params)
    executor = executor or Executor(None)
    with refusal_named(source):
        if params.api_url:
            items: Iterable[dict[str, Any]] = api_items(params.api_url, search, params.fetch)
        elif is_geoparquet(source):
            items = geoparquet_items(source, search, executor)
        else:
            items = static_catalog_items(source, search, params.fetch, executor)
        return sorted(items, key=_key)


def discover_table(params: PipelineParams, executor: Executor | None = None) -> pa.Table:
    """:func:`discover` as a stac-geoparquet table (:func:`pipeline.items.items_table`).

    Sorted by (collection, id).

    A static catalog's or a local stac-geoparquet file's items become tables on ``executor``,
    one per chunk of items; this process only concatenates and sorts them. Only an API
    search's items (and a downloaded stac-geoparquet file's) are converted here.

    Raises:
        ValueError: as :func:`discover`; or naming the item files (the items table where chunks
            disagree) when the items' fields cannot share one Arrow schema.
    """
    source, search = _source_search(params)
    executor = executor or Executor(None)
    with refusal_named(source):
        if params.api_url:
            items = sorted(api_items(params.api_url, search, params.fetch), key=_key)
            tables: Iterable[pa.Table] = [items_table(items, params.api_url)]
        elif is_geoparquet(source):
            tables = geoparquet_tables(source, search, executor)
        else:
            tables = static_catalog_tables(source, search, params.fetch, executor)
        # In the order of their first rows, so the columns come in one order whatever order
        # the chunks finished in.
        ordered = sorted((table for table in tables if table.num_rows), key=_first_key)
    return sorted_by_id(concat_tables(ordered, params.items_table))


def _source_search(params: PipelineParams) -> tuple[str, Search]:
    source = params.api_url or params.catalog
    if not source:
        raise ValueError("pipeline: neither api_url nor catalog is set; nothing to discover")
    return source, search_of(source, params.collections, params.bbox, params.datetime, _option_name)


def _option_name(option: str) -> str:
    return f"pipeline.{option}"


def _key(item: dict[str, Any]) -> tuple[str, str]:
    return item["collection"], item["id"]


def _first_key(table: pa.Table) -> tuple[str, str]:
    return table.column("collection")[0].as_py(), table.column("id")[0].as_py()


def discover_to_table(params: PipelineParams, executor: Executor | None = None) -> Path:
    """Discover the items and pair the items of the declared pairs across collections.

    Writes the items to ``params.items_table`` and the matches to ``params.pairs_table``; returns
    the items table.

    Without pairs the items stay Arrow tables in this process (:func:`discover_table`);
    pairing matches item dicts here (:func:`discover`, :func:`pipeline.pairing.pair_items`).
    """
    if params.coregister.pairs:
        items, rows = pair_items(discover(params, executor), params.coregister.pairs)
        table = items_table(items, params.items_table)
    else:
        table, rows = discover_table(params, executor), []
    params.work_dir.mkdir(parents=True, exist_ok=True)
    write_pairs_table(params.pairs_table, rows)
    return write_table(params.items_table, table)
