"""Remote files as verified local files: resumable, retried, checked downloads.

The download core that every remote read of this project goes through: the pipeline's fetch stage
(:mod:`pipeline.fetch`, assets of STAC items into its cache) and ``python -m catalogs.download``
(the source and benchmark datasets' archives).

A :class:`RemoteFile` is an href (``http(s)://``, ``s3://``, ``gs://``, read with obstore) with the
size and checksum it must have. :func:`download` streams it into ``<entry>.part``, resumes an
interrupted ``.part`` with an HTTP Range request, retries failed requests with exponential
backoff, verifies size and checksum (a ``file:checksum`` multihash, or a bare MD5 hex digest) and
only then renames the part to its entry, so an entry that exists is complete and verified.
Just before each request the access policy (:func:`catalogs.access_policy.check_host`) refuses
an http(s) host that resolves to a loopback, private or link-local address, unless allowed.

An http(s) href may carry a query string: it is taken for a signature (a SAS token, a presigned
URL) that grants access, never for a part of the file's identity (:func:`unsigned`,
:func:`redacted` keep it out of names and messages). With the ``planetary_computer`` signer,
hrefs in Azure Blob Storage get a Planetary Computer SAS token just before each request.
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
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol
from urllib.parse import unquote, urlsplit, urlunsplit

import obstore
from obstore.exceptions import BaseError, PermissionDeniedError, UnauthenticatedError
from obstore.store import HTTPStore, ObjectStore, from_url

from catalogs.access_policy import AccessOptions, AccessRefused, check_host

if TYPE_CHECKING:
    from obstore import GetResult

CHUNK_BYTES = 256 * 1024  # bytes written (and kept after an interruption) per chunk
BACKOFF_BASE_S = 0.25  # wait before the first retry; doubles with every further retry
BACKOFF_MAX_S = 30.0
# Multihash function codes (https://github.com/multiformats/multicodec) -> hashlib names.
_MULTIHASH_FUNCTIONS = {0x11: "sha1", 0x12: "sha256", 0x13: "sha512", 0xD5: "md5"}
REMOTE_SCHEMES = ("http", "https", "s3", "gs")
QUERY_SCHEMES = ("http", "https")  # schemes whose hrefs may carry a query string (a signature)
_BARE_MD5 = re.compile(r"[0-9a-fA-F]{32}")
_URL_QUERY = re.compile(r"([a-z][a-z0-9+.-]*://[^\s?#]*)\?[^\s#]*", re.IGNORECASE)
_NO_RETRIES = {"max_retries": 0}  # obstore's own retries are off: download retries and resumes
BLOB_HOST_SUFFIX = ".blob.core.windows.net"  # Azure Blob Storage: <account>.blob.core.windows.net
TOKEN_MARGIN_S = 60.0  # a SAS token is renewed once it expires within this many seconds
TOKEN_TIMEOUT_S = 30.0


class RemoteOptions(AccessOptions, Protocol):
    """How remote files are requested: the access policy's options, and the stores'.

    ``store_options``: per remote scheme, keyword arguments of obstore's store for it.
    ``sign``: None, or ``"planetary_computer"`` (a SAS token of ``sign_endpoint`` per request).
    """

    store_options: Mapping[str, Mapping[str, Any]]
    sign: str | None
    sign_endpoint: str


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
class RemoteFile:
    """One file to make available: where it is and what it must be.

    ``href`` is where it is, without its query string, which ``query`` holds.
    """

    href: str
    query: str
    scheme: str
    size: int | None
    checksum: str | None


def scheme_of(href: str) -> str:
    """The scheme of ``href``; ``file`` for a plain path."""
    return urlsplit(href).scheme.lower() or "file"


def unsigned(href: str) -> str:
    """``href`` without its query string (which may hold a signature)."""
    parts = urlsplit(href)
    return urlunsplit(parts._replace(query="")) if parts.query else href


def redacted(text: str) -> str:
    """``text`` with the query string of every URL in it left out (it may hold a signature)."""
    return _URL_QUERY.sub(r"\1", text)


def _first_line(error: Exception) -> str:
    lines = str(error).strip().splitlines()
    return lines[0] if lines else type(error).__name__


def multihash_function(checksum: str) -> tuple[str, int]:
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


def _multihash(path: Path, expected: str) -> str:
    """The hex multihash of the file at ``path``, with the function of ``expected``."""
    function, length = multihash_function(expected)
    digest = hashlib.new(function)
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return expected[: len(expected) - 2 * length].lower() + digest.hexdigest()


def verification_problem(path: Path, source: RemoteFile) -> str | None:
    """Why ``path`` is not the file ``source`` describes (size, then checksum); None if it is."""
    size = path.stat().st_size
    if source.size is not None and size != source.size:
        return f"size mismatch: expected {source.size} bytes, got {size}"
    if source.checksum is not None:
        actual = _multihash(path, source.checksum)
        if actual.lower() != source.checksum.lower():
            return f"checksum mismatch: expected {source.checksum}, got {actual}"
    return None


class RemoteAccess:
    """GET requests of remote files: one obstore store per scheme, host and query string.

    Obstore sends the query of a store's URL with every request. The stores are opened with
    ``store_options``; with a signer, each request of a file in Azure Blob Storage carries a current
    SAS token. Each http(s) request first passes the access policy's host check.
    """

    def __init__(self, options: RemoteOptions) -> None:
        """Check ``options`` (raising :class:`ValueError` that names the bad one); open nothing.

        Args:
            options: the access policy and the stores' options, e.g. ``pipeline.fetch``'s.
        """
        self._policy = options
        self._option_name = options.option_name("store_options")
        self._options = _checked_store_options(
            options.store_options, self._option_name, options.option_name("retries")
        )
        self._signer = (
            _PlanetaryComputerTokens(options.sign_endpoint)
            if options.sign == "planetary_computer"
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
                self._stores[key] = _open_store(
                    *key, self._options.get(key[0], {}), f"{self._option_name}.{key[0]}"
                )
            return self._stores[key]

    def get(self, source: RemoteFile, offset: int) -> GetResult:
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


def _checked_store_options(
    options: Mapping[str, Mapping[str, Any]], name: str, retries_name: str
) -> Mapping[str, Mapping[str, Any]]:
    """The stores' options, checked; ``name`` is how the user sets them (for messages).

    Each key must be a remote scheme, each value a mapping without ``retry_config`` (downloads
    retry on their own; ``retries_name`` sets how often).

    Raises:
        ValueError: naming the scheme and the reason.
    """
    unknown = sorted(set(options) - set(REMOTE_SCHEMES))
    if unknown:
        raise ValueError(
            f"{name}: unknown scheme(s) {unknown}; remote schemes: {list(REMOTE_SCHEMES)}"
        )
    for scheme, values in options.items():
        if not isinstance(values, Mapping):
            raise ValueError(
                f"{name}.{scheme}: expected a mapping of obstore options, got {values!r}"
            )
        if "retry_config" in values:
            raise ValueError(
                f"{name}.{scheme}: retry_config is not an option here (retries are {retries_name})"
            )
    return options


def _open_store(
    scheme: str, netloc: str, query: str, options: Mapping[str, Any], name: str
) -> ObjectStore:
    """An obstore store of ``scheme://netloc`` whose requests carry ``query``.

    Opened with ``options``, the user's options of ``scheme`` (set as ``name``, for messages).

    Raises:
        ValueError: ``options`` are not options of obstore's store for ``scheme``.
    """
    url = f"{scheme}://{netloc}/" + (f"?{query}" if query else "")
    options = dict(options)
    client_options = {"allow_http": True} if scheme == "http" else {}
    client_options.update(options.pop("client_options", None) or {})
    # An http(s) href is read with plain GETs: HTTPStore, never the Azure or S3 store that
    # from_url picks for their hosts (and that wants a container or credentials).
    open_url = HTTPStore.from_url if scheme in QUERY_SCHEMES else from_url
    try:
        return open_url(url, client_options=client_options, retry_config=_NO_RETRIES, **options)
    except (BaseError, TypeError, ValueError) as error:
        raise ValueError(f"{name}: {redacted(_first_line(error))}") from error


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
    # This client takes the endpoint from the caller's options (tests serve it on loopback),
    # and its failures go through the downloads' own retries and the callers' failure records.

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


Progress = Callable[[int], None]  # told each change of a download's bytes on disk


def download(
    source: RemoteFile,
    entry: Path,
    access: RemoteAccess,
    retries: int,
    progress: Progress | None = None,
) -> Path:
    """``source`` as the file ``entry``, downloading (or resuming) it unless it is there.

    Args:
        source: the remote file and the size and checksum it must have.
        entry: where it goes; ``<entry>.part`` holds it until it is verified.
        access: the requests' stores and policy.
        retries: further attempts after a failed one.
        progress: told the bytes kept from an earlier run, then each change (negative where a
            part is started again).

    Raises:
        AssetError: the file is missing, access is denied, every attempt failed, or the
            downloaded file does not match the asset's size or checksum.
    """
    if entry.is_file() and (source.size is None or entry.stat().st_size == source.size):
        return entry
    partial = entry.with_name(f"{entry.name}.part")
    partial.parent.mkdir(parents=True, exist_ok=True)
    progress = progress or (lambda _: None)
    if partial.exists():
        progress(partial.stat().st_size)
    resumed = _transfer_with_retries(source, access, partial, retries, progress)
    problem = verification_problem(partial, source)
    if problem and resumed:  # the kept part may be stale: one fresh transfer
        progress(-partial.stat().st_size)
        partial.unlink()
        _transfer_with_retries(source, access, partial, retries, progress)
        problem = verification_problem(partial, source)
    if problem:
        partial.unlink()
        raise AssetError(problem)
    # Not atomic_files' helper: the ``.part`` file keeps a fixed name so that a later run can
    # resume it, and it is verified (size, checksum) before this rename makes it the entry.
    os.replace(partial, entry)
    return entry


def _transfer_with_retries(
    source: RemoteFile, access: RemoteAccess, partial: Path, retries: int, progress: Progress
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
            _transfer(source, access, partial, progress)
            return resumed
        except _TransientError as error:
            if attempt == retries:
                raise AssetError(
                    f"download failed after {retries + 1} attempts: {error}"
                ) from error
        time.sleep(min(BACKOFF_MAX_S, BACKOFF_BASE_S * 2**attempt))
        attempt += 1


def _transfer(source: RemoteFile, access: RemoteAccess, partial: Path, progress: Progress) -> None:
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
        if result.range[0] != offset:
            progress(result.range[0] - offset)
        try:
            for chunk in result.stream(min_chunk_size=CHUNK_BYTES):
                f.write(chunk)
                progress(len(chunk))
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
