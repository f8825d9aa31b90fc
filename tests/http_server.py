"""A real HTTP file server on loopback for download tests: byte ranges and scripted faults."""

from __future__ import annotations

import re
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urlsplit

_RANGE = re.compile(r"bytes=(\d+)-(\d*)")


@dataclass(frozen=True)
class Request:
    """One request the server answered: the URL path and its Range header (None without)."""

    path: str
    range: str | None


@dataclass
class Faults:
    """Scripted misbehaviour, by URL path.

    Attributes:
        errors: how many of the next requests for the path are answered 503.
        drops: after how many body bytes the next full (non-Range) response for the path is
            cut off by closing the connection (once).
        gate: when set, every request waits at this barrier before it is answered, so the
            server answers only once that many requests are in flight together.
    """

    errors: dict[str, int] = field(default_factory=dict)
    drops: dict[str, int] = field(default_factory=dict)
    gate: threading.Barrier | None = None


class FileServer(ThreadingHTTPServer):
    """Serves the files under ``root``; records every request."""

    daemon_threads = True

    def __init__(self, root: Path) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.root = root
        self.faults = Faults()
        self.requests: list[Request] = []
        self.lock = threading.Lock()

    def url(self, relative: str) -> str:
        """The URL of the file ``relative`` to the root."""
        host, port = self.server_address[:2]
        return f"http://{host}:{port}/{relative}"


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: FileServer

    def do_GET(self) -> None:  # noqa: N802 (the name http.server dispatches to)
        path = urlsplit(self.path).path
        range_header = self.headers.get("Range")
        with self.server.lock:
            self.server.requests.append(Request(path, range_header))
            failing = self.server.faults.errors.get(path, 0)
            if failing:
                self.server.faults.errors[path] = failing - 1
            drop_after = None if range_header else self.server.faults.drops.pop(path, None)
        if self.server.faults.gate is not None:
            self.server.faults.gate.wait()
        if failing:
            self._send(HTTPStatus.SERVICE_UNAVAILABLE, b"try again later")
            return
        file = self.server.root / unquote(path).lstrip("/")
        if not file.is_file():
            self._send(HTTPStatus.NOT_FOUND, b"not found")
            return
        data = file.read_bytes()
        if range_header:
            self._send_range(data, range_header)
        elif drop_after is not None:
            self._send_cut(data, drop_after)
        else:
            self._send(HTTPStatus.OK, data)

    def _send(self, status: HTTPStatus, body: bytes, headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _send_range(self, data: bytes, range_header: str) -> None:
        match = _RANGE.fullmatch(range_header)
        start = int(match.group(1)) if match else len(data)
        end = int(match.group(2)) if match and match.group(2) else len(data) - 1
        if start >= len(data):
            self._send(HTTPStatus.REQUESTED_RANGE_NOT_SATISFIABLE, b"",
                       {"Content-Range": f"bytes */{len(data)}"})
            return
        end = min(end, len(data) - 1)
        self._send(HTTPStatus.PARTIAL_CONTENT, data[start:end + 1],
                   {"Content-Range": f"bytes {start}-{end}/{len(data)}"})

    def _send_cut(self, data: bytes, drop_after: int) -> None:
        """Promise the whole file, send ``drop_after`` bytes, then close the connection."""
        self.send_response(HTTPStatus.OK)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data[:drop_after])
        self.wfile.flush()
        self.close_connection = True

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 (base signature)
        """Quiet: the test reads ``server.requests`` instead."""


@contextmanager
def file_server(root: Path) -> Iterator[FileServer]:
    """A :class:`FileServer` of ``root`` running in a thread for the ``with`` block."""
    server = FileServer(root)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05},
                              daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)
