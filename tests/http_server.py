"""A real HTTP file server on loopback for download tests: byte ranges, scripted faults, and a
token mode that serves files only to requests signed with a token it issued."""

from __future__ import annotations

import hashlib
import json
import re
import secrets
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import formatdate
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, quote, unquote, urlsplit

_RANGE = re.compile(r"bytes=(\d+)-(\d*)")


@dataclass(frozen=True)
class Request:
    """One file request the server answered: the URL path, its Range header (None without),
    its query string, and its headers (lower-case names; not compared)."""

    path: str
    range: str | None
    query: str = ""
    headers: dict[str, str] = field(default_factory=dict, compare=False)


@dataclass
class Faults:
    """Scripted misbehaviour, by URL path.

    Attributes:
        errors: how many of the next requests for the path are answered 503.
        drops: after how many body bytes the next full (non-Range) response for the path is
            cut off by closing the connection (once).
        gate: when set, every request waits at this barrier before it is answered, so the
            server answers only once that many requests are in flight together.
        stalls: after how many body bytes the next full (non-Range) response for the path
            stops and waits for ``release`` (at most a minute), then closes the connection
            (once): a client can be killed mid-download.
        release: what a stalled response waits for.
    """

    errors: dict[str, int] = field(default_factory=dict)
    drops: dict[str, int] = field(default_factory=dict)
    gate: threading.Barrier | None = None
    stalls: dict[str, int] = field(default_factory=dict)
    release: threading.Event = field(default_factory=threading.Event)


@dataclass
class Tokens:
    """Token mode, as Azure Blob Storage behind Planetary Computer's SAS token endpoint.

    ``GET /token/<account>/<container>`` answers ``{"token": <query string>, "msft:expiry":
    <RFC 3339 time>}`` for an account in ``accounts`` (404 otherwise), and a file is served only
    when the request's query string carries the signature of a token issued for the request
    host's account (its first label) and the file's container (its first path segment), not
    yet expired; any other file request is answered 403.

    Attributes:
        accounts: the storage accounts tokens are issued for.
        lifetime_s: how long an issued token is valid.
        requests: the path and ``Ocp-Apim-Subscription-Key`` header of every token request.
        issued: the account, container and expiry (POSIX seconds) of each issued signature.
    """

    accounts: tuple[str, ...]
    lifetime_s: float = 3600.0
    requests: list[tuple[str, str | None]] = field(default_factory=list)
    issued: dict[str, tuple[str, str, float]] = field(default_factory=dict, init=False)

    def issue(self, account: str, container: str) -> tuple[str, float]:
        """A new token for ``container`` of ``account`` and its expiry (POSIX seconds)."""
        signature = secrets.token_urlsafe(24)
        start, expiry = time.time(), time.time() + self.lifetime_s
        self.issued[signature] = (account, container, expiry)
        fields = {
            "st": _rfc3339(start),
            "se": _rfc3339(expiry),
            "sp": "rl",
            "sr": "c",
            "sig": signature,
        }
        return "&".join(f"{k}={quote(v, safe='')}" for k, v in fields.items()), expiry

    def refusal(self, host: str, path: str, query: str) -> str | None:
        """Why a request of ``path`` on ``host`` with ``query`` is refused; None if it is not."""
        signature = parse_qs(query).get("sig", [""])[0]
        if signature not in self.issued:
            return "no valid signature"
        account, container, expiry = self.issued[signature]
        if (host.split(".")[0], unquote(path).lstrip("/").split("/")[0]) != (account, container):
            return "signature of another container"
        return "signature expired" if time.time() >= expiry else None


class FileServer(ThreadingHTTPServer):
    """Serves the files under ``root`` (in token mode when ``tokens`` is set); records every
    file request.

    The server also answers as an HTTP proxy (a request naming a whole URL is served from
    ``root`` too), so hrefs of any host reach it through a client's ``proxy_url``.
    """

    daemon_threads = True

    def __init__(self, root: Path) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.root = root
        self.faults = Faults()
        self.tokens: Tokens | None = None
        self.requests: list[Request] = []
        self.lock = threading.Lock()

    def url(self, relative: str = "") -> str:
        """The URL of the file ``relative`` to the root."""
        host, port = self.server_address[:2]
        return f"http://{host}:{port}/{relative}"


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: FileServer

    def do_GET(self) -> None:  # noqa: N802 (the name http.server dispatches to)
        url = urlsplit(self.path)  # a whole URL where the server is asked as a proxy
        tokens = self.server.tokens
        if tokens is not None and url.path.startswith("/token/"):
            self._send_token(tokens, url.path)
            return
        range_header = self.headers.get("Range")
        headers = {name.lower(): value for name, value in self.headers.items()}
        with self.server.lock:
            self.server.requests.append(Request(url.path, range_header, url.query, headers))
            failing = self.server.faults.errors.get(url.path, 0)
            if failing:
                self.server.faults.errors[url.path] = failing - 1
            drop_after = None if range_header else self.server.faults.drops.pop(url.path, None)
            stall_after = None if range_header else self.server.faults.stalls.pop(url.path, None)
            host = url.netloc or self.headers.get("Host", "")
            refusal = tokens.refusal(host, url.path, url.query) if tokens is not None else None
        if self.server.faults.gate is not None:
            self.server.faults.gate.wait()
        if failing:
            self._send(HTTPStatus.SERVICE_UNAVAILABLE, b"try again later")
            return
        if refusal:
            self._send(HTTPStatus.FORBIDDEN, f"AuthenticationFailed: {refusal}".encode())
            return
        file = self.server.root / unquote(url.path).lstrip("/")
        if not file.is_file():
            self._send(HTTPStatus.NOT_FOUND, b"not found")
            return
        data = file.read_bytes()
        if range_header:
            self._send_range(data, range_header)
        elif drop_after is not None:
            self._send_cut(data, drop_after)
        elif stall_after is not None:
            self._send_cut(data, stall_after, self.server.faults.release)
        else:
            self._send_file(HTTPStatus.OK, data, data)

    def do_HEAD(self) -> None:  # noqa: N802
        """As GET without the body (GDAL asks a file's size so before reading ranges)."""
        self.do_GET()

    def _send_token(self, tokens: Tokens, path: str) -> None:
        account, _, container = path.removeprefix("/token/").partition("/")
        with self.server.lock:
            tokens.requests.append((path, self.headers.get("Ocp-Apim-Subscription-Key")))
            issued = tokens.issue(account, container) if account in tokens.accounts else None
        if issued is None:
            self._send(HTTPStatus.NOT_FOUND, b"unknown storage account")
            return
        token, expiry = issued
        body = json.dumps({"msft:expiry": _rfc3339(expiry), "token": token}).encode()
        self._send(HTTPStatus.OK, body, {"Content-Type": "application/json"})

    def _send(self, status: HTTPStatus, body: bytes, headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _send_file(
        self, status: HTTPStatus, data: bytes, body: bytes, headers: dict[str, str] | None = None
    ) -> None:
        """``body`` (all or part of the file ``data``) with the ETag and Last-Modified headers
        that object store clients (S3's) require."""
        self._send(
            status,
            body,
            {
                "ETag": f'"{hashlib.md5(data).hexdigest()}"',
                "Last-Modified": formatdate(0, usegmt=True),
                **(headers or {}),
            },
        )

    def _send_range(self, data: bytes, range_header: str) -> None:
        match = _RANGE.fullmatch(range_header)
        start = int(match.group(1)) if match else len(data)
        end = int(match.group(2)) if match and match.group(2) else len(data) - 1
        if start >= len(data):
            self._send(
                HTTPStatus.REQUESTED_RANGE_NOT_SATISFIABLE,
                b"",
                {"Content-Range": f"bytes */{len(data)}"},
            )
            return
        end = min(end, len(data) - 1)
        self._send_file(
            HTTPStatus.PARTIAL_CONTENT,
            data,
            data[start : end + 1],
            {"Content-Range": f"bytes {start}-{end}/{len(data)}"},
        )

    def _send_cut(
        self, data: bytes, drop_after: int, release: threading.Event | None = None
    ) -> None:
        """Promise the whole file, send ``drop_after`` bytes, then close the connection (once
        ``release`` is set, where given)."""
        self.send_response(HTTPStatus.OK)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data[:drop_after])
        self.wfile.flush()
        if release is not None:
            release.wait(timeout=60)
        self.close_connection = True

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 (base signature)
        """Quiet: the test reads ``server.requests`` instead."""


def _rfc3339(posix_s: float) -> str:
    return datetime.fromtimestamp(posix_s, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@contextmanager
def file_server(root: Path) -> Iterator[FileServer]:
    """A :class:`FileServer` of ``root`` running in a thread for the ``with`` block."""
    server = FileServer(root)
    thread = threading.Thread(
        target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
    )
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


@contextmanager
def file_server_process(root: Path) -> Iterator[str]:
    """A :class:`FileServer` of ``root`` in a child process; yields its base URL.

    For clients that hold the GIL while they wait for the answer (GDAL's curl reads through
    ``rasterio.open``), which a server thread of the same process could never answer.
    """
    process = subprocess.Popen(
        [sys.executable, "-m", "tests.http_server", str(root)],
        stdout=subprocess.PIPE,
        text=True,
        cwd=Path(__file__).resolve().parents[1],
    )
    try:
        yield process.stdout.readline().strip()
    finally:
        process.terminate()
        process.wait(timeout=10)


if __name__ == "__main__":
    with file_server(Path(sys.argv[1])) as served:
        print(served.url(), flush=True)
        threading.Event().wait()
