"""A real STAC API for tests: ``rustac serve`` on loopback over a static catalog's items."""

from __future__ import annotations

import json
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pystac

STARTUP_TIMEOUT_S = 20.0


@contextmanager
def stac_api(catalog_path: Path, work_dir: Path) -> Iterator[str]:
    """Serve every collection of a static catalog, with its items, as a STAC API.

    Each collection is written to ``work_dir`` as a collection file and an item collection whose
    asset hrefs are absolute (as an API serves them), and ``rustac serve`` loads those files.
    (``rustac serve --load-collection-items`` would read the catalog directly, but rustac 0.2
    resolves item links against the working directory instead of the collection's folder.)

    Yields:
        The API's root URL (``http://127.0.0.1:<port>``).
    """
    inputs = _api_inputs(catalog_path, work_dir)
    address = f"127.0.0.1:{_free_port()}"
    process = subprocess.Popen(
        ["rustac", "serve", "--addr", address, *map(str, inputs)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    url = f"http://{address}"
    try:
        _wait_until_serving(url, process)
        yield url
    finally:
        process.terminate()
        process.wait(timeout=10)
        if process.stderr is not None:
            process.stderr.close()


def _api_inputs(catalog_path: Path, work_dir: Path) -> list[Path]:
    """Collection files first, then item collections (rustac needs a collection before its
    items)."""
    work_dir.mkdir(parents=True, exist_ok=True)
    collections, item_files = [], []
    for collection in pystac.Catalog.from_file(str(catalog_path)).get_all_collections():
        features = []
        for item in collection.get_items(recursive=True):
            feature = item.to_dict(include_self_link=False, transform_hrefs=False)
            for key, asset in item.assets.items():
                feature["assets"][key]["href"] = asset.get_absolute_href()
            feature["links"] = []
            features.append(feature)
        record = collection.to_dict(include_self_link=False, transform_hrefs=False)
        record["links"] = []
        collections.append(_write(work_dir / f"{collection.id}.collection.json", record))
        item_files.append(
            _write(
                work_dir / f"{collection.id}.items.json",
                {"type": "FeatureCollection", "features": features},
            )
        )
    return collections + item_files


def _write(path: Path, content: dict) -> Path:
    path.write_text(json.dumps(content))
    return path


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _wait_until_serving(url: str, process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            stderr = process.stderr.read().decode() if process.stderr else ""
            raise RuntimeError(f"rustac serve exited with {process.returncode}: {stderr}")
        try:
            with urllib.request.urlopen(url, timeout=1):
                return
        except (urllib.error.URLError, ConnectionError):
            time.sleep(0.1)
    raise RuntimeError(f"rustac serve did not answer at {url} within {STARTUP_TIMEOUT_S} s")
