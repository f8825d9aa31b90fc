"""Fetch: the sensor assets of the discovered items as verified local files.

Only the assets that hold registry sensors (:mod:`catalogs.item_assets`) are fetched; the
others (thumbnails, previews, metadata) are left out of the fetched items, and an item that
cannot be read as registry sensors (no sensor matches, a SAR scene that is not geocoded) is a
failure before anything is downloaded.

Local assets (plain paths, ``file://``) are verified where they are and never copied, in chunks
of items on the executor (a worker's threads verify files at once). The stage hands the items
table's rows to the workers as Arrow tables and gets the fetched items back as tables
(:func:`fetch_rows`): no item becomes a dict in the main process unless it has remote assets.
Remote
ones (``http(s)://``, ``s3://``, ``gs://``; ``params.fetch.store_options`` are given to obstore's
store of their scheme, e.g. ``{s3: {request_payer: true}}``) are downloaded by
:mod:`catalogs.remote_files` (resumed with HTTP Range requests, retried with backoff, verified by
``file:size`` and ``file:checksum`` before they appear) into a content-addressed cache:
``<cache_dir>/<checksum[4:6]>/<checksum><suffix>`` when the asset has a ``file:checksum``, else
``<cache_dir>/by-href/<sha256 of the href without its query><suffix>``. A later fetch finds an
entry (checking its size) and downloads nothing.

An http(s) href may carry a query string: it is taken for a signature (a SAS token, a presigned
URL) that grants access, never for a part of the file's identity. The cache entry,
``msgfm:source_href`` and every failure name the href without its query, so a re-signed href
finds the file already fetched and no signature is written out. With ``params.fetch.sign:
planetary_computer``, hrefs in Azure Blob Storage get a Planetary Computer SAS token (replacing
any query they had) just before each request.

Before anything is read, an href whose scheme is not allowed is refused, and so is an href
the access policy (:mod:`catalogs.access_policy`) refuses for the item's catalog
(``msgfm:catalog_root``, recorded by discover): a local file outside a local catalog's root
(resolved, links followed), a local file named by a catalog read over the network, a relative
href of a remote catalog (``msgfm:catalog_href``) that leaves its root; and, just before each
request, an http(s) host that resolves to a loopback, private or link-local address. Every
problem becomes one ``Failure`` naming the item, the href and the reason; an item with any
failed asset is left out of the result, and the others go on.
"""

from __future__ import annotations

import hashlib
import re
import threading
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import urlsplit

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from catalogs.access_policy import AccessRefused, local_path
from catalogs.item_assets import ItemReadError, sensor_assets
from catalogs.remote_files import (
    QUERY_SCHEMES,
    REMOTE_SCHEMES,
    AssetError,
    RemoteAccess,
    RemoteFile,
    download,
    multihash_function,
    redacted,
    scheme_of,
    unsigned,
    verification_problem,
)
from catalogs.stac_search import CATALOG_HREF, CATALOG_ROOT, check_asset_href
from pipeline.cluster import Executor
from pipeline.failures import Failure
from pipeline.items import concat_tables, items_table, table_rows_as_items
from pipeline.params import PipelineParams

STAGE = "fetch"
CHUNK_ITEMS = 500  # local items verified per task
SOURCE_HREF = "msgfm:source_href"  # asset field of a cached asset: the href it was fetched from
_SUPPORTED_SCHEMES = ("file", *REMOTE_SCHEMES)
_SUFFIX = re.compile(r"\.[A-Za-z0-9]{1,8}")


def fetch(
    items: list[dict[str, Any]], params: PipelineParams, executor: Executor | None = None
) -> tuple[list[dict[str, Any]], list[Failure]]:
    """Make every asset of ``items`` available as a verified local file.

    Items whose assets are all local are verified in chunks of :data:`CHUNK_ITEMS` on
    ``executor`` (default: this process); the others are downloaded here, by
    ``params.fetch.concurrency`` threads (one download per cache entry at a time).

    Args:
        items: STAC item dicts with absolute asset hrefs (as :func:`pipeline.discover.discover`
            returns them).
        params: ``params.fetch`` gives the cache folder, allowed schemes, retries and the number
            of files verified or downloaded at once.
        executor: where local items are verified.

    Returns:
        The items whose assets are all available, in their input order, each asset href
        replaced by the absolute local path (a cached asset also gets ``msgfm:source_href``);
        and one ``Failure(stage="fetch", item_id, path=href, reason)`` per failed asset, by
        item in input order.
    """
    local, remote = _split(enumerate(items))
    chunks = [local[start : start + CHUNK_ITEMS] for start in range(0, len(local), CHUNK_ITEMS)]
    outcomes = [_fetch_chunk(remote, params)] if remote else []
    outcomes += (executor or Executor(None)).map_unordered(_fetch_chunk, chunks, params)
    results = sorted(
        (result for outcome in outcomes for result in outcome), key=lambda result: result[0]
    )
    fetched = [item for _, item, _ in results if item is not None]
    return fetched, [failure for _, _, failures in results for failure in failures]


def fetch_rows(
    table: pa.Table, params: PipelineParams, executor: Executor | None = None
) -> tuple[pa.Table, list[Failure]]:
    """:func:`fetch` of the rows of an items table (:func:`pipeline.items.read_table`).

    The fetched items come back as a table (:func:`pipeline.items.items_table`) in the rows' order.

    This process sends chunks of :data:`CHUNK_ITEMS` rows to ``executor``, where they become
    item dicts, local ones are verified and the fetched ones become a table again; it only
    concatenates the tables. Items with remote assets come back as dicts and are downloaded
    here, as :func:`fetch` downloads them.
    """
    rows = table.num_rows
    chunks = [
        (start, table.take(np.arange(start, min(start + CHUNK_ITEMS, rows))))
        for start in range(0, rows, CHUNK_ITEMS)
    ]
    parts = list((executor or Executor(None)).map_unordered(_fetch_rows, chunks, params))
    remote = [indexed for part in parts for indexed in part.remote]
    if remote:
        parts.append(_fetched(_fetch_chunk(remote, params), [], params.fetched_table))
    failed = sorted((row for part in parts for row in part.failures), key=lambda row: row[0])
    parts = sorted(
        (part for part in parts if part.table.num_rows), key=lambda part: part.rows[0].as_py()
    )
    fetched = concat_tables([part.table for part in parts], params.fetched_table)
    if remote:  # downloaded items were appended: back to the rows' order
        fetched = fetched.take(
            pc.sort_indices(pa.chunked_array([part.rows for part in parts], pa.int64()))
        )
    return fetched, [failure for _, failures in failed for failure in failures]


@dataclass(frozen=True)
class _Fetched:
    """What fetching some rows gave.

    The fetched items as a table and the rows they came from, each failed row's failures, and the
    rows (as item dicts) left to download.
    """

    table: pa.Table
    rows: pa.Array
    failures: list[tuple[int, list[Failure]]]
    remote: list[tuple[int, dict[str, Any]]]


def _fetch_rows(chunk: tuple[int, pa.Table], params: PipelineParams) -> _Fetched:
    """Verify the local items of ``chunk`` (its first row's index, its rows) on a worker.

    The others are left to download.
    """
    start, rows = chunk
    local, remote = _split(enumerate(table_rows_as_items(rows), start))
    source = f"{params.items_table} (rows {start} to {start + rows.num_rows - 1})"
    return _fetched(_fetch_chunk(local, params), remote, source)


def _fetched(
    outcomes: list[tuple[int, dict[str, Any] | None, list[Failure]]],
    remote: list[tuple[int, dict[str, Any]]],
    source: object,
) -> _Fetched:
    outcomes = sorted(outcomes, key=lambda outcome: outcome[0])
    fetched = [(row, item) for row, item, _ in outcomes if item is not None]
    return _Fetched(
        items_table([item for _, item in fetched], source),
        pa.array([row for row, _ in fetched], pa.int64()),
        [(row, failures) for row, _, failures in outcomes if failures],
        remote,
    )


def _split(
    items: Iterable[tuple[int, dict[str, Any]]],
) -> tuple[list[tuple[int, dict[str, Any]]], list[tuple[int, dict[str, Any]]]]:
    """The indexed items whose assets are all local files, and the others."""
    local, remote = [], []
    for index, item in items:
        is_local = all(
            scheme_of(asset.get("href", "")) == "file" for asset in item.get("assets", {}).values()
        )
        (local if is_local else remote).append((index, item))
    return local, remote


def _fetch_chunk(
    items: list[tuple[int, dict[str, Any]]], params: PipelineParams
) -> list[tuple[int, dict[str, Any] | None, list[Failure]]]:
    """(index, fetched item or None, failures) of each of ``items`` (indexed items)."""
    results: list[tuple[int, dict[str, Any] | None, list[Failure]]] = []
    readable = []
    for index, item in items:
        try:
            readable.append((index, item, _sensor_asset_keys(item)))
        except ItemReadError as error:
            results.append(
                (
                    index,
                    None,
                    [
                        Failure(
                            STAGE,
                            error.item_id,
                            error.href and unsigned(error.href),
                            redacted(error.reason),
                        )
                    ],
                )
            )
    plans = [
        {key: _planned(item["assets"][key], item, params) for key in keys}
        for _, item, keys in readable
    ]
    available = _make_available(
        {
            plan
            for item_plans in plans
            for plan in item_plans.values()
            if isinstance(plan, RemoteFile)
        },
        params,
    )
    for (index, item, _), item_plans in zip(readable, plans, strict=True):
        outcomes = {
            key: plan if isinstance(plan, AssetError) else available[plan]
            for key, plan in item_plans.items()
        }
        problems = [
            Failure(
                STAGE, item["id"], unsigned(item["assets"][key]["href"]), redacted(outcome.reason)
            )
            for key, outcome in outcomes.items()
            if isinstance(outcome, AssetError)
        ]
        results.append((index, None if problems else _localised(item, outcomes), problems))
    return results


def _sensor_asset_keys(item: dict[str, Any]) -> list[str]:
    """The keys of the assets that hold registry sensors (masks included), in item order.

    They are the only ones worth fetching (thumbnails, previews and metadata are not).
    """
    held = {asset.key for assets in sensor_assets(item).values() for asset in assets}
    return [key for key in item.get("assets", {}) if key in held]


def _planned(
    asset: dict[str, Any], item: dict[str, Any], params: PipelineParams
) -> RemoteFile | AssetError:
    try:
        return _plan(asset, item, params)
    except AssetError as error:
        return error


def _localised(item: dict[str, Any], paths: dict[str, Any]) -> dict[str, Any]:
    """A copy of ``item`` with only the assets in ``paths``, their hrefs replaced by local paths."""
    assets = {}
    for key, asset in item.get("assets", {}).items():
        if key in paths:
            assets[key] = {**asset, "href": str(paths[key])}
            if scheme_of(asset["href"]) != "file":
                assets[key][SOURCE_HREF] = unsigned(asset["href"])
    return {**item, "assets": assets}


def _plan(asset: dict[str, Any], item: dict[str, Any], params: PipelineParams) -> RemoteFile:
    """The source of ``asset`` after the checks that need no I/O.

    Raises:
        AssetError: the scheme is not allowed, the access policy refuses the href for the
            item's catalog, the href is relative with nothing to resolve it against, a remote
            href names no host (or bucket), a query string is on an href other than http(s),
            or the asset's file fields are invalid.
    """
    href = asset["href"]
    parts = urlsplit(href)
    scheme = scheme_of(href)
    allowed = params.fetch.allowed_schemes
    if scheme not in allowed:
        raise AssetError(f"scheme {scheme!r} not allowed (allowed: {', '.join(allowed)})")
    root = item.get("properties", {}).get(CATALOG_ROOT)
    try:
        check_asset_href(asset, root, params.fetch, unsigned(asset.get(CATALOG_HREF, href)))
    except AccessRefused as error:
        raise AssetError(error.reason) from error
    if scheme == "file" and not local_path(href).is_absolute():
        raise AssetError(f"relative href {unsigned(href)!r} has nothing to resolve it against")
    if scheme not in _SUPPORTED_SCHEMES:
        raise AssetError(
            f"scheme {scheme!r} is not supported (supported: {', '.join(_SUPPORTED_SCHEMES)})"
        )
    if scheme in REMOTE_SCHEMES and not parts.netloc:
        raise AssetError(f"{scheme} href names no host or bucket")
    if parts.query and scheme not in QUERY_SCHEMES:
        raise AssetError(f"a query string is only supported on http(s) hrefs, not {scheme!r}")
    checksum = asset.get("file:checksum")
    if checksum is not None:
        multihash_function(checksum)
    return RemoteFile(unsigned(href), parts.query, scheme, asset.get("file:size"), checksum)


def _make_available(
    sources: set[RemoteFile], params: PipelineParams
) -> dict[RemoteFile, Path | AssetError]:
    """Each source as a verified local path, or the error that prevented it, in parallel."""
    remote = [s for s in sources if s.scheme != "file"]
    access = RemoteAccess(params.fetch)
    for source in remote:  # before any download, so that bad store options stop the run here
        access.store(source.href, source.query)
    entries = {s: _cache_entry(params.fetch.cache_dir, s) for s in remote}
    # Hrefs with one checksum share an entry: one download at a time may write its .part file.
    locks = {entry: threading.Lock() for entry in entries.values()}

    def run(source: RemoteFile) -> Path | AssetError:
        try:
            if source.scheme == "file":
                return _verify_in_place(source)
            with locks[entries[source]]:
                return download(source, entries[source], access, params.fetch.retries)
        except AssetError as error:
            return error

    ordered = sorted(sources, key=lambda s: s.href)
    with ThreadPoolExecutor(max_workers=max(1, params.fetch.concurrency)) as pool:
        return dict(zip(ordered, pool.map(run, ordered), strict=True))


def _verify_in_place(source: RemoteFile) -> Path:
    path = local_path(source.href)
    if not path.is_file():
        raise AssetError("missing file")
    problem = verification_problem(path, source)
    if problem:
        raise AssetError(problem)
    return path


def _cache_entry(cache_dir: Path, source: RemoteFile) -> Path:
    """Where ``source`` lives in the cache (an absolute path).

    Named by its checksum, else by its href.
    """
    cache_dir = cache_dir.absolute()
    suffix = PurePosixPath(urlsplit(source.href).path).suffix
    suffix = suffix if _SUFFIX.fullmatch(suffix) else ""
    if source.checksum is not None:
        name = source.checksum.lower()
        return cache_dir / name[4:6] / f"{name}{suffix}"
    return cache_dir / "by-href" / f"{hashlib.sha256(source.href.encode()).hexdigest()}{suffix}"
