"""A static STAC catalog's items, read in parallel on the executor.

The catalog is walked and its item files read by :mod:`catalogs.static_catalog`; here the chunks
of item files are spread over the executor, and become items or stac-geoparquet tables there.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pyarrow as pa

from catalogs.stac_search import Search
from catalogs.static_catalog import ItemChunk, item_chunks, read_chunk
from pipeline.cluster import Executor
from pipeline.items import items_table, sorted_by_id
from pipeline.params import FetchParams

CHUNK_ITEMS = 500  # item files read per task


def static_catalog_items(
    catalog_href: str, search: Search, policy: FetchParams, executor: Executor
) -> Iterator[dict[str, Any]]:
    """The items of ``search.collections`` in the static catalog that match ``search``.

    Unsorted; item files read in chunks of :data:`CHUNK_ITEMS` on ``executor``.
    """
    chunks = item_chunks(catalog_href, search, policy, CHUNK_ITEMS)
    for items in executor.map_unordered(read_chunk, chunks, search, policy):
        yield from items


def static_catalog_tables(
    catalog_href: str, search: Search, policy: FetchParams, executor: Executor
) -> Iterator[pa.Table]:
    """:func:`static_catalog_items` as stac-geoparquet tables, one per chunk.

    Tables as :func:`pipeline.items.items_table` makes them, each sorted by (collection, id), in no
    particular order: the items never become dicts in this process.
    """
    chunks = item_chunks(catalog_href, search, policy, CHUNK_ITEMS)
    return executor.map_unordered(_read_chunk_table, chunks, search, policy)


def _read_chunk_table(chunk: ItemChunk, search: Search, policy: FetchParams) -> pa.Table:
    """The items of ``chunk`` that match ``search`` as a table sorted by (collection, id).

    Runs on a worker.
    """
    files = f"{chunk.source}, item files {chunk.item_href(0)} to {chunk.item_href(-1)}"
    return sorted_by_id(items_table(read_chunk(chunk, search, policy), files))
