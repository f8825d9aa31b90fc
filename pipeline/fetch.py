"""Fetch: the sensor assets of the discovered items as verified local files.

Only the assets that hold registry sensors (:mod:`catalogs.item_assets`) are fetched; the
others (thumbnails, previews, metadata) are left out of the fetched items, and an item that
cannot be read as registry sensors (no sensor matches, a SAR scene that is not geocoded) is a
failure before anything is downloaded.

Local assets (plain paths, ``file://``) are verified where they are and never copied. Remote
ones (``http(s)://``, ``s3://``, ``gs://``, read with obstore) go into a content-addressed cache:
``<cache_dir>/<checksum[4:6]>/<checksum><suffix>`` when the asset has a ``file:checksum``, else
``<cache_dir>/by-href/<sha256 of the href><suffix>``. A download streams into
``<entry>.part``, is verified (``file:size``, ``file:checksum``) and only then renamed to its
entry, so an entry that exists is complete and verified; a later fetch finds it (checking its
size) and downloads nothing. After an interruption the ``.part`` file is resumed with an HTTP
Range request. Failed requests are retried with exponential backoff.

Before anything is read, an href whose scheme is not allowed, and a relative href of the
catalog (``msgfm:catalog_href``, recorded by discover) that resolves outside the catalog root,
are refused. Every problem becomes one ``Failure`` naming the item, the href and the reason;
an item with any failed asset is left out of the result, and the others go on.
"""

from __future__ import annotations

import copy
import hashlib
import os
import posixpath
import re
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote, urlsplit
from urllib.request import url2pathname

import obstore
from obstore.exceptions import BaseError, PermissionDeniedError, UnauthenticatedError
from obstore.store import ObjectStore, from_url

from catalogs.item_assets import ItemReadError, sensor_assets
from pipeline.discover import CATALOG_HREF
from pipeline.failures import Failure
from pipeline.items import CATALOG_ROOT, read_items, write_items
from pipeline.params import PipelineParams

if TYPE_CHECKING:
    from obstore import GetResult

STAGE = "fetch"
SOURCE_HREF = "msgfm:source_href"  # asset field of a cached asset: the href it was fetched from
CHUNK_BYTES = 256 * 1024  # bytes written (and kept after an interruption) per chunk
BACKOFF_BASE_S = 0.25  # wait before the first retry; doubles with every further retry
BACKOFF_MAX_S = 30.0
# Multihash function codes (https://github.com/multiformats/multicodec) -> hashlib names.
_MULTIHASH_FUNCTIONS = {0x11: "sha1", 0x12: "sha256", 0x13: "sha512", 0xD5: "md5"}
_SUPPORTED_SCHEMES = ("file", "http", "https", "s3", "gs")
_SUFFIX = re.compile(r"\.[A-Za-z0-9]{1,8}")


class AssetError(Exception):
    """One asset cannot be made available locally; ``reason`` says why."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class _TransientError(Exception):
    """A download attempt failed in a way another attempt may not."""


@dataclass(frozen=True)
class _Source:
    """One file to make available: where it is and what it must be."""

    href: str
    scheme: str
    size: int | None
    checksum: str | None


def fetch(items: list[dict[str, Any]],
          params: PipelineParams) -> tuple[list[dict[str, Any]], list[Failure]]:
    """Make every asset of ``items`` available as a verified local file.

    Args:
        items: STAC item dicts with absolute asset hrefs (as :func:`pipeline.discover.discover`
            returns them).
        params: ``params.fetch`` gives the cache folder, allowed schemes, retries and the number
            of files verified or downloaded at once.

    Returns:
        The items whose assets are all available, in their input order, each asset href
        replaced by the absolute local path (a cached asset also gets ``msgfm:source_href``);
        and one ``Failure(stage="fetch", item_id, path=href, reason)`` per failed asset.
    """
    failures: list[Failure] = []
    readable = []
    for item in items:
        try:
            readable.append((item, _sensor_asset_keys(item)))
        except ItemReadError as error:
            failures.append(Failure(STAGE, error.item_id, error.href, error.reason))
    plans = [{key: _planned(item["assets"][key], item, params) for key in keys}
             for item, keys in readable]
    available = _make_available(
        {plan for item_plans in plans for plan in item_plans.values()
         if isinstance(plan, _Source)}, params)
    fetched: list[dict[str, Any]] = []
    for (item, _), item_plans in zip(readable, plans, strict=True):
        outcomes = {key: plan if isinstance(plan, AssetError) else available[plan]
                    for key, plan in item_plans.items()}
        problems = [Failure(STAGE, item["id"], item["assets"][key]["href"], outcome.reason)
                    for key, outcome in outcomes.items() if isinstance(outcome, AssetError)]
        failures.extend(problems)
        if not problems:
            fetched.append(_localised(item, outcomes))
    return fetched, failures


def fetch_table(params: PipelineParams) -> Path:
    """Fetch the items of ``params.items_table`` and write the available ones to
    ``params.fetched_table``; returns that path."""
    fetched, _ = fetch(read_items(params.items_table), params)
    return write_items(params.fetched_table, fetched)


def _sensor_asset_keys(item: dict[str, Any]) -> list[str]:
    """The keys of the assets that hold registry sensors (masks included), in item order:
    the only ones worth fetching (thumbnails, previews and metadata are not)."""
    held = {asset.key for assets in sensor_assets(item).values() for asset in assets}
    return [key for key in item.get("assets", {}) if key in held]


def _planned(asset: dict[str, Any], item: dict[str, Any],
             params: PipelineParams) -> _Source | AssetError:
    try:
        return _plan(asset, item, params)
    except AssetError as error:
        return error


def _localised(item: dict[str, Any], paths: dict[str, Any]) -> dict[str, Any]:
    """A copy of ``item`` with the assets in ``paths`` only, each href replaced by its local
    path."""
    local = copy.deepcopy(item)
    local["assets"] = {key: asset for key, asset in local.get("assets", {}).items()
                       if key in paths}
    for key, asset in local["assets"].items():
        if _scheme(asset["href"]) != "file":
            asset[SOURCE_HREF] = asset["href"]
        asset["href"] = str(paths[key])
    return local


def _plan(asset: dict[str, Any], item: dict[str, Any], params: PipelineParams) -> _Source:
    """The source of ``asset`` after the checks that need no I/O.

    Raises:
        AssetError: the scheme is not allowed, the href escapes the catalog root, the href is
            relative with nothing to resolve it against, or the asset's file fields are invalid.
    """
    href = asset["href"]
    scheme = _scheme(href)
    allowed = params.fetch.allowed_schemes
    if scheme not in allowed:
        raise AssetError(f"scheme {scheme!r} not allowed (allowed: {', '.join(allowed)})")
    root = item.get("properties", {}).get(CATALOG_ROOT)
    if CATALOG_HREF in asset and (root is None or not _within(href, root)):
        raise AssetError(f"href {asset[CATALOG_HREF]!r} resolves outside the catalog root {root}")
    if scheme == "file" and not _local_path(href).is_absolute():
        raise AssetError(f"relative href {href!r} has nothing to resolve it against")
    if scheme not in _SUPPORTED_SCHEMES:
        raise AssetError(f"scheme {scheme!r} is not supported "
                         f"(supported: {', '.join(_SUPPORTED_SCHEMES)})")
    if urlsplit(href).query:
        raise AssetError("hrefs with a query string are not supported")
    checksum = asset.get("file:checksum")
    if checksum is not None:
        _multihash_function(checksum)
    return _Source(href, scheme, asset.get("file:size"), checksum)


def _scheme(href: str) -> str:
    """The scheme of ``href``; ``file`` for a plain path."""
    return urlsplit(href).scheme.lower() or "file"


def _within(href: str, root: str) -> bool:
    """Whether ``href`` lies under ``root`` (same scheme and host, path below root's)."""
    target, base = urlsplit(href), urlsplit(root)
    if (target.scheme, target.netloc) != (base.scheme, base.netloc):
        return False
    target_path = PurePosixPath(posixpath.normpath(target.path))
    return target_path.is_relative_to(posixpath.normpath(base.path))


def _local_path(href: str) -> Path:
    """The local path of a plain path or ``file://`` href."""
    if href.lower().startswith("file:"):
        return Path(url2pathname(urlsplit(href).path))
    return Path(href)


def _multihash_function(checksum: str) -> tuple[str, int]:
    """The hashlib name and digest length (bytes) of a ``file:checksum`` hex multihash.

    Raises:
        AssetError: the value is not a multihash, or names a function we do not compute.
    """
    try:
        data = bytes.fromhex(checksum)
        code, start = _varint(data, 0)
        length, start = _varint(data, start)
    except (ValueError, IndexError) as error:
        raise AssetError(f"malformed file:checksum {checksum!r}") from error
    if len(data) - start != length:
        raise AssetError(f"malformed file:checksum {checksum!r}")
    if code not in _MULTIHASH_FUNCTIONS:
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


def _make_available(sources: set[_Source],
                    params: PipelineParams) -> dict[_Source, Path | AssetError]:
    """Each source as a verified local path, or the error that prevented it, in parallel."""
    remote = [s for s in sources if s.scheme != "file"]
    stores = {_store_key(s.href): _open_store(s.href) for s in remote}
    entries = {s: _cache_entry(params.fetch.cache_dir, s) for s in remote}
    # Hrefs with one checksum share an entry: one download at a time may write its .part file.
    locks = {entry: threading.Lock() for entry in entries.values()}

    def run(source: _Source) -> Path | AssetError:
        try:
            if source.scheme == "file":
                return _verify_in_place(source)
            with locks[entries[source]]:
                return _download(source, entries[source], stores[_store_key(source.href)],
                                 params.fetch.retries)
        except AssetError as error:
            return error

    ordered = sorted(sources, key=lambda s: s.href)
    with ThreadPoolExecutor(max_workers=max(1, params.fetch.concurrency)) as pool:
        return dict(zip(ordered, pool.map(run, ordered), strict=True))


def _verify_in_place(source: _Source) -> Path:
    path = _local_path(source.href)
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
    return expected[:len(expected) - 2 * length].lower() + digest.hexdigest()


def _store_key(href: str) -> tuple[str, str]:
    parts = urlsplit(href)
    return parts.scheme.lower(), parts.netloc


def _open_store(href: str) -> ObjectStore:
    """An obstore store for the scheme and host (or bucket) of ``href``; obstore's own retries
    are off, as :func:`_download` retries and resumes."""
    scheme, netloc = _store_key(href)
    options = {"allow_http": True} if scheme == "http" else None
    return from_url(f"{scheme}://{netloc}", client_options=options,
                    retry_config={"max_retries": 0})


def _cache_entry(cache_dir: Path, source: _Source) -> Path:
    """Where ``source`` lives in the cache (an absolute path): named by its checksum, else by
    its href."""
    cache_dir = cache_dir.absolute()
    suffix = PurePosixPath(urlsplit(source.href).path).suffix
    suffix = suffix if _SUFFIX.fullmatch(suffix) else ""
    if source.checksum is not None:
        name = source.checksum.lower()
        return cache_dir / name[4:6] / f"{name}{suffix}"
    return cache_dir / "by-href" / f"{hashlib.sha256(source.href.encode()).hexdigest()}{suffix}"


def _download(source: _Source, entry: Path, store: ObjectStore, retries: int) -> Path:
    """``source`` as the cache ``entry``, downloading (or resuming) it unless it is there.

    Raises:
        AssetError: the file is missing, access is denied, every attempt failed, or the
            downloaded file does not match the asset's size or checksum.
    """
    if entry.is_file() and (source.size is None or entry.stat().st_size == source.size):
        return entry
    partial = entry.with_name(f"{entry.name}.part")
    partial.parent.mkdir(parents=True, exist_ok=True)
    resumed = _transfer_with_retries(source, store, partial, retries)
    problem = _verification_problem(partial, source)
    if problem and resumed:  # the kept part may be stale: one fresh transfer
        partial.unlink()
        _transfer_with_retries(source, store, partial, retries)
        problem = _verification_problem(partial, source)
    if problem:
        partial.unlink()
        raise AssetError(problem)
    os.replace(partial, entry)
    return entry


def _transfer_with_retries(source: _Source, store: ObjectStore, partial: Path,
                           retries: int) -> bool:
    """Complete ``partial`` from ``source`` within ``1 + retries`` attempts, waiting
    ``BACKOFF_BASE_S * 2**n`` (at most ``BACKOFF_MAX_S``) before retry ``n + 1``.

    Returns:
        Whether the transfer began with bytes kept from an earlier, interrupted one.
    """
    resumed = partial.exists() and partial.stat().st_size > 0
    attempt = 0
    while True:
        try:
            _transfer(source, store, partial)
            return resumed
        except _TransientError as error:
            if attempt == retries:
                raise AssetError(
                    f"download failed after {retries + 1} attempts: {error}") from error
        time.sleep(min(BACKOFF_MAX_S, BACKOFF_BASE_S * 2**attempt))
        attempt += 1


def _transfer(source: _Source, store: ObjectStore, partial: Path) -> None:
    """One request: append the rest of ``source`` to ``partial`` (a Range request from its
    current size), writing each chunk as it arrives so an interruption keeps what came."""
    offset = partial.stat().st_size if partial.exists() else 0
    if offset and offset == source.size:  # complete, interrupted before its verification
        return
    if source.size is not None and offset > source.size:  # not a part of this file
        offset = 0
    result = _request(store, unquote(urlsplit(source.href).path).lstrip("/"), offset)
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
