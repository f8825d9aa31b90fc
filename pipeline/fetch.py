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
ones (``http(s)://``, ``s3://``, ``gs://``, read with obstore; ``params.fetch.store_options`` are
given to obstore's store of their scheme, e.g. ``{s3: {request_payer: true}}``) go into a
content-addressed cache: ``<cache_dir>/<checksum[4:6]>/<checksum><suffix>`` when the asset has a
``file:checksum``, else ``<cache_dir>/by-href/<sha256 of the href without its query><suffix>``.
A download streams into ``<entry>.part``, is verified (``file:size``, ``file:checksum``) and
only then renamed to its entry, so an entry that exists is complete and verified; a later fetch
finds it (checking its size) and downloads nothing. After an interruption the ``.part`` file
is resumed with an HTTP Range request. Failed requests are retried with exponential backoff.

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
import json
import os
import re
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote, urlsplit, urlunsplit

import numpy as np
import obstore
import pyarrow as pa
import pyarrow.compute as pc
from obstore.exceptions import BaseError, PermissionDeniedError, UnauthenticatedError
from obstore.store import HTTPStore, ObjectStore, from_url

from catalogs.access_policy import AccessRefused, check_host, local_path
from catalogs.item_assets import ItemReadError, sensor_assets
from catalogs.stac_search import CATALOG_HREF, CATALOG_ROOT, check_asset_href
from pipeline.cluster import Executor
from pipeline.failures import Failure
from pipeline.items import concat_tables, items_table, table_rows_as_items
from pipeline.params import FetchParams, PipelineParams

if TYPE_CHECKING:
    from obstore import GetResult

STAGE = "fetch"
CHUNK_ITEMS = 500  # local items verified per task
SOURCE_HREF = "msgfm:source_href"  # asset field of a cached asset: the href it was fetched from
CHUNK_BYTES = 256 * 1024  # bytes written (and kept after an interruption) per chunk
BACKOFF_BASE_S = 0.25  # wait before the first retry; doubles with every further retry
BACKOFF_MAX_S = 30.0
# Multihash function codes (https://github.com/multiformats/multicodec) -> hashlib names.
_MULTIHASH_FUNCTIONS = {0x11: "sha1", 0x12: "sha256", 0x13: "sha512", 0xD5: "md5"}
_SUPPORTED_SCHEMES = ("file", "http", "https", "s3", "gs")
_REMOTE_SCHEMES = ("http", "https", "s3", "gs")
_QUERY_SCHEMES = ("http", "https")  # schemes whose hrefs may carry a query string (a signature)
_BARE_MD5 = re.compile(r"[0-9a-fA-F]{32}")
_SUFFIX = re.compile(r"\.[A-Za-z0-9]{1,8}")
_URL_QUERY = re.compile(r"([a-z][a-z0-9+.-]*://[^\s?#]*)\?[^\s#]*", re.IGNORECASE)
_NO_RETRIES = {"max_retries": 0}  # obstore's own retries are off: _download retries and resumes
BLOB_HOST_SUFFIX = ".blob.core.windows.net"  # Azure Blob Storage: <account>.blob.core.windows.net
TOKEN_MARGIN_S = 60.0  # a SAS token is renewed once it expires within this many seconds
TOKEN_TIMEOUT_S = 30.0


class AssetError(Exception):
    """One asset cannot be made available locally; ``reason`` says why."""

    def __init__(self, reason: str) -> None:
        """Initialize a new AssetError instance.

        Args:
            reason: why the asset cannot be made available locally.
        """
        super().__init__(reason)
        self.reason = reason


class _TransientError(Exception):
    """A download attempt failed in a way another attempt may not."""


@dataclass(frozen=True)
class _Source:
    """One file to make available: where it is and what it must be.

    ``href`` is where it is, without its query string, which ``query`` holds.
    """

    href: str
    query: str
    scheme: str
    size: int | None
    checksum: str | None


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
            _scheme(asset.get("href", "")) == "file" for asset in item.get("assets", {}).values()
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
                            error.href and _unsigned(error.href),
                            _redacted(error.reason),
                        )
                    ],
                )
            )
    plans = [
        {key: _planned(item["assets"][key], item, params) for key in keys}
        for _, item, keys in readable
    ]
    available = _make_available(
        {plan for item_plans in plans for plan in item_plans.values() if isinstance(plan, _Source)},
        params,
    )
    for (index, item, _), item_plans in zip(readable, plans, strict=True):
        outcomes = {
            key: plan if isinstance(plan, AssetError) else available[plan]
            for key, plan in item_plans.items()
        }
        problems = [
            Failure(
                STAGE, item["id"], _unsigned(item["assets"][key]["href"]), _redacted(outcome.reason)
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
) -> _Source | AssetError:
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
            if _scheme(asset["href"]) != "file":
                assets[key][SOURCE_HREF] = _unsigned(asset["href"])
    return {**item, "assets": assets}


def _plan(asset: dict[str, Any], item: dict[str, Any], params: PipelineParams) -> _Source:
    """The source of ``asset`` after the checks that need no I/O.

    Raises:
        AssetError: the scheme is not allowed, the access policy refuses the href for the
            item's catalog, the href is relative with nothing to resolve it against, a remote
            href names no host (or bucket), a query string is on an href other than http(s),
            or the asset's file fields are invalid.
    """
    href = asset["href"]
    parts = urlsplit(href)
    scheme = _scheme(href)
    allowed = params.fetch.allowed_schemes
    if scheme not in allowed:
        raise AssetError(f"scheme {scheme!r} not allowed (allowed: {', '.join(allowed)})")
    root = item.get("properties", {}).get(CATALOG_ROOT)
    try:
        check_asset_href(asset, root, params.fetch, _unsigned(asset.get(CATALOG_HREF, href)))
    except AccessRefused as error:
        raise AssetError(error.reason) from error
    if scheme == "file" and not local_path(href).is_absolute():
        raise AssetError(f"relative href {_unsigned(href)!r} has nothing to resolve it against")
    if scheme not in _SUPPORTED_SCHEMES:
        raise AssetError(
            f"scheme {scheme!r} is not supported (supported: {', '.join(_SUPPORTED_SCHEMES)})"
        )
    if scheme in _REMOTE_SCHEMES and not parts.netloc:
        raise AssetError(f"{scheme} href names no host or bucket")
    if parts.query and scheme not in _QUERY_SCHEMES:
        raise AssetError(f"a query string is only supported on http(s) hrefs, not {scheme!r}")
    checksum = asset.get("file:checksum")
    if checksum is not None:
        _multihash_function(checksum)
    return _Source(_unsigned(href), parts.query, scheme, asset.get("file:size"), checksum)


def _unsigned(href: str) -> str:
    """``href`` without its query string (which may hold a signature)."""
    parts = urlsplit(href)
    return urlunsplit(parts._replace(query="")) if parts.query else href


def _redacted(text: str) -> str:
    """``text`` with the query string of every URL in it left out (it may hold a signature)."""
    return _URL_QUERY.sub(r"\1", text)


def _scheme(href: str) -> str:
    """The scheme of ``href``; ``file`` for a plain path."""
    return urlsplit(href).scheme.lower() or "file"


def _multihash_function(checksum: str) -> tuple[str, int]:
    """The hashlib name and digest length (bytes) of a ``file:checksum`` hex multihash.

    Also of a bare 32-digit MD5 hex digest that is no multihash (Planetary Computer publishes
    ``file:checksum`` so, e.g. on its sentinel-1-rtc assets).

    Raises:
        AssetError: the value is not a multihash, or names a function we do not compute.
    """
    try:
        data = bytes.fromhex(checksum)
        code, start = _varint(data, 0)
        length, start = _varint(data, start)
    except (ValueError, IndexError):
        code, length, start, data = -1, -1, 0, b""
    if code not in _MULTIHASH_FUNCTIONS or len(data) - start != length:
        if _BARE_MD5.fullmatch(checksum):
            return "md5", 16
        if code < 0 or len(data) - start != length:
            raise AssetError(f"malformed file:checksum {checksum!r}")
        raise AssetError(f"unsupported file:checksum function (multihash code 0x{code:x})")
    return _MULTIHASH_FUNCTIONS[code], length


def _varint(data: bytes, start: int) -> tuple[int, int]:
    """The unsigned varint at ``data[start:]`` and the index after it."""
    value, shift, index = 0, 0, start
    while True:
        byte = data[index]
        value |= (byte & 0x7F) << shift
        index += 1
        if byte < 0x80:
            return value, index
        shift += 7


def _make_available(
    sources: set[_Source], params: PipelineParams
) -> dict[_Source, Path | AssetError]:
    """Each source as a verified local path, or the error that prevented it, in parallel."""
    remote = [s for s in sources if s.scheme != "file"]
    access = _RemoteAccess(params.fetch)
    for source in remote:  # before any download, so that bad store options stop the run here
        access.store(source.href, source.query)
    entries = {s: _cache_entry(params.fetch.cache_dir, s) for s in remote}
    # Hrefs with one checksum share an entry: one download at a time may write its .part file.
    locks = {entry: threading.Lock() for entry in entries.values()}

    def run(source: _Source) -> Path | AssetError:
        try:
            if source.scheme == "file":
                return _verify_in_place(source)
            with locks[entries[source]]:
                return _download(source, entries[source], access, params.fetch.retries)
        except AssetError as error:
            return error

    ordered = sorted(sources, key=lambda s: s.href)
    with ThreadPoolExecutor(max_workers=max(1, params.fetch.concurrency)) as pool:
        return dict(zip(ordered, pool.map(run, ordered), strict=True))


def _verify_in_place(source: _Source) -> Path:
    path = local_path(source.href)
    if not path.is_file():
        raise AssetError("missing file")
    problem = _verification_problem(path, source)
    if problem:
        raise AssetError(problem)
    return path


def _verification_problem(path: Path, source: _Source) -> str | None:
    """Why ``path`` is not the file ``source`` describes (size, then checksum); None if it is."""
    size = path.stat().st_size
    if source.size is not None and size != source.size:
        return f"size mismatch: expected {source.size} bytes, got {size}"
    if source.checksum is not None:
        actual = _multihash(path, source.checksum)
        if actual.lower() != source.checksum.lower():
            return f"checksum mismatch: expected {source.checksum}, got {actual}"
    return None


def _multihash(path: Path, expected: str) -> str:
    """The hex multihash of the file at ``path``, with the function of ``expected``."""
    function, length = _multihash_function(expected)
    digest = hashlib.new(function)
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return expected[: len(expected) - 2 * length].lower() + digest.hexdigest()


class _RemoteAccess:
    """GET requests of remote files: one obstore store per scheme, host and query string.

    Obstore sends the query of a store's URL with every request. The stores are opened with
    ``store_options``; with a signer, each request of a file in Azure Blob Storage carries a current
    SAS token. Each http(s) request first passes the access policy's host check.
    """

    def __init__(self, params: FetchParams) -> None:
        self._policy = params
        self._options = _checked_store_options(params.store_options)
        self._signer = (
            _PlanetaryComputerTokens(params.sign_endpoint)
            if params.sign == "planetary_computer"
            else None
        )
        self._stores: dict[tuple[str, str, str], ObjectStore] = {}
        self._lock = threading.Lock()

    def store(self, href: str, query: str) -> ObjectStore:
        """The store of ``href``'s scheme and host whose requests carry ``query``.

        Raises:
            ValueError: the scheme's store options are not options of its obstore store.
        """
        parts = urlsplit(href)
        key = (parts.scheme.lower(), parts.netloc, query)
        with self._lock:
            if key not in self._stores:
                self._stores[key] = _open_store(*key, self._options.get(key[0], {}))
            return self._stores[key]

    def get(self, source: _Source, offset: int) -> GetResult:
        """A GET of ``source`` from byte ``offset`` on, signed first where there is a signer.

        Raises:
            AssetError: the host is refused, no token, the object does not exist, or access to
                it is denied.
            _TransientError: any other failure (a retry may succeed).
        """
        try:
            check_host(source.href, self._policy)
        except AccessRefused as error:
            raise AssetError(error.reason) from error
        token = self._signer.token(source.href) if self._signer is not None else None
        store = self.store(source.href, source.query if token is None else token)
        return _request(store, unquote(urlsplit(source.href).path).lstrip("/"), offset)


def _checked_store_options(options: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """``params.fetch.store_options``, checked.

    Each key must be a remote scheme, each value a mapping without ``retry_config`` (fetch retries
    on its own).

    Raises:
        ValueError: naming the scheme and the reason.
    """
    unknown = sorted(set(options) - set(_REMOTE_SCHEMES))
    if unknown:
        raise ValueError(
            f"params.fetch.store_options: unknown scheme(s) {unknown}; "
            f"remote schemes: {list(_REMOTE_SCHEMES)}"
        )
    for scheme, values in options.items():
        if not isinstance(values, dict):
            raise ValueError(
                f"params.fetch.store_options.{scheme}: expected a mapping of "
                f"obstore options, got {values!r}"
            )
        if "retry_config" in values:
            raise ValueError(
                f"params.fetch.store_options.{scheme}: retry_config is not an "
                "option here (retries are params.fetch.retries)"
            )
    return options


def _open_store(scheme: str, netloc: str, query: str, options: dict[str, Any]) -> ObjectStore:
    """An obstore store of ``scheme://netloc`` whose requests carry ``query``.

    Opened with ``options`` (``params.fetch.store_options[scheme]``).

    Raises:
        ValueError: ``options`` are not options of obstore's store for ``scheme``.
    """
    url = f"{scheme}://{netloc}/" + (f"?{query}" if query else "")
    options = dict(options)
    client_options = {"allow_http": True} if scheme == "http" else {}
    client_options.update(options.pop("client_options", None) or {})
    # An http(s) href is read with plain GETs: HTTPStore, never the Azure or S3 store that
    # from_url picks for their hosts (and that wants a container or credentials).
    open_url = HTTPStore.from_url if scheme in _QUERY_SCHEMES else from_url
    try:
        return open_url(url, client_options=client_options, retry_config=_NO_RETRIES, **options)
    except (BaseError, TypeError, ValueError) as error:
        raise ValueError(
            f"params.fetch.store_options.{scheme}: {_redacted(_first_line(error))}"
        ) from error


class _PlanetaryComputerTokens:
    """SAS tokens of Planetary Computer's token endpoint for hrefs in Azure Blob Storage.

    ``GET <endpoint>/<account>/<container>`` (with the ``Ocp-Apim-Subscription-Key`` header where
    ``PC_SDK_SUBSCRIPTION_KEY`` is set) answers ``{"token": <SAS query string>, "msft:expiry":
    <RFC 3339 time>}``; the token is the query string of any
    ``https://<account>.blob.core.windows.net/<container>/...``. One token per (account,
    container) is kept until ``TOKEN_MARGIN_S`` before it expires.
    """

    # Planetary Computer's SDK (planetary_computer.sign) speaks this protocol too, but it is not
    # a dependency of this project (it brings pydantic, requests, python-dotenv), reads its
    # endpoint from one process-wide setting (PC_SDK_SAS_URL, read once) and retries on its own.
    # This client takes the endpoint from params.fetch (tests serve it on loopback), and its
    # failures go through fetch's own retries and failure records.

    def __init__(self, endpoint: str) -> None:
        self._endpoint = endpoint.rstrip("/")
        self._tokens: dict[tuple[str, str], tuple[str, float]] = {}
        self._lock = threading.Lock()

    def token(self, href: str) -> str | None:
        """The SAS query string for ``href``; None for an href outside Azure Blob Storage.

        Raises:
            AssetError: the endpoint refused, or answered without a token.
            _TransientError: the endpoint was unreachable, busy (429) or failing (5xx).
        """
        parts = urlsplit(href)
        host = parts.hostname or ""
        container = parts.path.lstrip("/").split("/", 1)[0]
        if not host.endswith(BLOB_HOST_SUFFIX) or not container:
            return None
        key = (host.removesuffix(BLOB_HOST_SUFFIX), container)
        with self._lock:
            cached = self._tokens.get(key)
            if cached is None or cached[1] - time.time() < TOKEN_MARGIN_S:
                cached = self._tokens[key] = self._request(*key)
            return cached[0]

    def _request(self, account: str, container: str) -> tuple[str, float]:
        """A new token for ``container`` of ``account``, and its expiry (POSIX seconds)."""
        url = f"{self._endpoint}/{account}/{container}"
        key = os.environ.get("PC_SDK_SUBSCRIPTION_KEY")
        request = urllib.request.Request(
            url, headers={"Ocp-Apim-Subscription-Key": key} if key else {}
        )
        try:
            with urllib.request.urlopen(request, timeout=TOKEN_TIMEOUT_S) as response:
                body = response.read()
        except urllib.error.HTTPError as error:
            reason = f"token endpoint {url} answered {error.code} {error.reason}"
            if error.code == 429 or error.code >= 500:
                raise _TransientError(reason) from error
            raise AssetError(reason) from error
        except OSError as error:  # unreachable, timed out
            raise _TransientError(f"token endpoint {url} unreachable: {error}") from error
        try:
            answer = json.loads(body)
            expiry = datetime.fromisoformat(answer["msft:expiry"])
            return str(answer["token"]), expiry.replace(tzinfo=expiry.tzinfo or UTC).timestamp()
        except (KeyError, TypeError, ValueError) as error:
            raise AssetError(
                f"token endpoint {url} answered no token and expiry "
                f"({type(error).__name__}: {error})"
            ) from error


def _cache_entry(cache_dir: Path, source: _Source) -> Path:
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


def _download(source: _Source, entry: Path, access: _RemoteAccess, retries: int) -> Path:
    """``source`` as the cache ``entry``, downloading (or resuming) it unless it is there.

    Raises:
        AssetError: the file is missing, access is denied, every attempt failed, or the
            downloaded file does not match the asset's size or checksum.
    """
    if entry.is_file() and (source.size is None or entry.stat().st_size == source.size):
        return entry
    partial = entry.with_name(f"{entry.name}.part")
    partial.parent.mkdir(parents=True, exist_ok=True)
    resumed = _transfer_with_retries(source, access, partial, retries)
    problem = _verification_problem(partial, source)
    if problem and resumed:  # the kept part may be stale: one fresh transfer
        partial.unlink()
        _transfer_with_retries(source, access, partial, retries)
        problem = _verification_problem(partial, source)
    if problem:
        partial.unlink()
        raise AssetError(problem)
    # Not atomic_files' helper: the ``.part`` file keeps a fixed name so that a later run can
    # resume it, and it is verified (size, checksum) before this rename makes it the entry.
    os.replace(partial, entry)
    return entry


def _transfer_with_retries(
    source: _Source, access: _RemoteAccess, partial: Path, retries: int
) -> bool:
    """Complete ``partial`` from ``source`` within ``1 + retries`` attempts.

    Waits ``BACKOFF_BASE_S * 2**n`` (at most ``BACKOFF_MAX_S``) before retry ``n + 1``.

    Returns:
        Whether the transfer began with bytes kept from an earlier, interrupted one.
    """
    resumed = partial.exists() and partial.stat().st_size > 0
    attempt = 0
    while True:
        try:
            _transfer(source, access, partial)
            return resumed
        except _TransientError as error:
            if attempt == retries:
                raise AssetError(
                    f"download failed after {retries + 1} attempts: {error}"
                ) from error
        time.sleep(min(BACKOFF_MAX_S, BACKOFF_BASE_S * 2**attempt))
        attempt += 1


def _transfer(source: _Source, access: _RemoteAccess, partial: Path) -> None:
    """One request: append the rest of ``source`` to ``partial``.

    A Range request from its current size; each chunk is written as it arrives so an interruption
    keeps what came.
    """
    offset = partial.stat().st_size if partial.exists() else 0
    if offset and offset == source.size:  # complete, interrupted before its verification
        return
    if source.size is not None and offset > source.size:  # not a part of this file
        offset = 0
    result = access.get(source, offset)
    with open(partial, "ab") as f:
        f.truncate(result.range[0])  # the offset, or 0 where the server ignored the Range
        try:
            for chunk in result.stream(min_chunk_size=CHUNK_BYTES):
                f.write(chunk)
        except BaseError as error:
            raise _TransientError(_first_line(error)) from error


def _request(store: ObjectStore, key: str, offset: int) -> GetResult:
    """A GET of ``key`` from byte ``offset`` on.

    Raises:
        AssetError: the object does not exist, or access to it is denied.
        _TransientError: any other failure (a retry may succeed).
    """
    try:
        return obstore.get(store, key, options={"range": {"offset": offset}} if offset else None)
    except FileNotFoundError as error:  # obstore's "not found"
        raise AssetError("missing file") from error
    except (PermissionDeniedError, UnauthenticatedError) as error:
        raise AssetError(f"access denied: {_first_line(error)}") from error
    except BaseError as error:
        raise _TransientError(_first_line(error)) from error


def _first_line(error: Exception) -> str:
    lines = str(error).strip().splitlines()
    return lines[0] if lines else type(error).__name__
