"""Fetch: local verification in place, refusals, downloads into the cache over real HTTP."""

from __future__ import annotations

import hashlib
import random
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from catalogs.remote_files import CHUNK_BYTES
from catalogs.stac import file_checksum
from pipeline.discover import discover
from pipeline.failures import Failure
from pipeline.fetch import SOURCE_HREF, fetch
from pipeline.params import FetchParams, PipelineParams
from tests.http_server import FileServer, Request, file_server
from tests.small_catalog import file_asset, stac_item, write_catalog

ALLOW_FOLDER = " (allow its folder with pipeline.fetch.allowed_local_folders)"


def _params(tmp_path: Path, **fetch: Any) -> PipelineParams:
    """Fetch parameters that may reach the loopback test server."""
    return PipelineParams(
        work_dir=tmp_path / "work",
        fetch=FetchParams(
            **{
                "cache_dir": tmp_path / "cache",
                "retries": 2,
                "concurrency": 4,
                "allow_private_hosts": True,
                **fetch,
            }
        ),
    )


def _item(item_id: str, **assets: dict[str, Any]) -> dict[str, Any]:
    return {**stac_item(item_id, assets), "collection": "c"}


def _write(path: Path, size: int) -> Path:
    """``size`` pseudo-random bytes, seeded by the file's name."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(random.Random(path.name).randbytes(size))
    return path


def _cache_files(cache: Path) -> list[Path]:
    return sorted(p for p in cache.rglob("*") if p.is_file()) if cache.exists() else []


@pytest.fixture
def served(tmp_path: Path) -> Iterator[FileServer]:
    with file_server(tmp_path / "remote") as server:
        yield server


# --- local files ------------------------------------------------------------------------------


def test_sample_world_is_verified_in_place(sample_world: Path, tmp_path: Path) -> None:
    items = discover(
        PipelineParams(
            catalog=str(sample_world / "catalog.json"), collections=("sen12ms", "mdas", "geopile")
        )
    )
    fetched, failures = fetch(items, _params(tmp_path))
    assert failures == []
    assert [i["id"] for i in fetched] == [i["id"] for i in items]
    for before, after in zip(items, fetched, strict=True):
        assert {k: a["href"] for k, a in after["assets"].items()} == {
            k: a["href"] for k, a in before["assets"].items()
        }  # the original files
        assert all(SOURCE_HREF not in a for a in after["assets"].values())
    assert _cache_files(tmp_path / "cache") == []  # nothing copied


def test_bad_local_files_are_reported_and_the_others_go_on(tmp_path: Path) -> None:
    good = _write(tmp_path / "good.bin", 1000)
    corrupt = _write(tmp_path / "corrupt.bin", 1000)
    recorded = file_asset(corrupt)
    corrupt.write_bytes(b"x" * 1000)  # same size, other bytes
    short = _write(tmp_path / "short.bin", 1000)
    short_asset = file_asset(short)
    short.write_bytes(b"x" * 10)
    missing = file_asset(_write(tmp_path / "missing.bin", 10))
    (tmp_path / "missing.bin").unlink()
    items = [
        _item("good", image=file_asset(good)),
        _item("corrupt", image=recorded, other=file_asset(good)),
        _item("short", image=short_asset),
        _item("missing", image=missing),
        _item("file_url", image=file_asset(good, href=good.as_uri())),
    ]
    fetched, failures = fetch(items, _params(tmp_path))
    assert [i["id"] for i in fetched] == ["good", "file_url"]
    assert fetched[1]["assets"]["image"]["href"] == str(good)
    assert failures == [
        Failure(
            "fetch",
            "corrupt",
            str(corrupt),
            f"checksum mismatch: expected {recorded['file:checksum']}, "
            f"got {file_checksum(corrupt)}",
        ),
        Failure("fetch", "short", str(short), "size mismatch: expected 1000 bytes, got 10"),
        Failure("fetch", "missing", str(tmp_path / "missing.bin"), "missing file"),
    ]
    assert items[0]["assets"]["image"]["href"] == str(good)  # the input is not changed


def test_asset_without_file_fields_is_accepted_as_it_is(tmp_path: Path) -> None:
    path = _write(tmp_path / "a.bin", 10)
    asset = {"href": str(path), "msgfm:sensor": "rgb"}  # no file:size, no file:checksum
    fetched, failures = fetch([_item("a", image=asset)], _params(tmp_path))
    assert failures == [] and fetched[0]["assets"]["image"]["href"] == str(path)


def test_refusals_name_the_reason(tmp_path: Path) -> None:
    path = _write(tmp_path / "a.bin", 10)
    items = [
        _item("ftp", image=file_asset(path, href="ftp://example.org/a.bin")),
        _item("relative", image=file_asset(path, href="a.bin")),
        _item("badsum", image=file_asset(path, **{"file:checksum": "1220abcd"})),
        _item("blake3", image=file_asset(path, **{"file:checksum": "1e20" + "0" * 64})),
        _item("nohost", image=file_asset(path, href="https:///a.bin")),
        _item("relquery", image=file_asset(path, href="a.bin?sig=secret")),
        _item("pathquery", image=file_asset(path, href=f"{path}?sig=secret")),
        _item("filequery", image=file_asset(path, href=f"{path.as_uri()}?sig=secret")),
        _item("s3query", image=file_asset(path, href="s3://bucket/a.bin?sig=secret")),
    ]
    fetched, failures = fetch(items, _params(tmp_path))
    assert fetched == []
    assert [(f.item_id, f.path, f.reason) for f in failures] == [
        (
            "ftp",
            "ftp://example.org/a.bin",
            "scheme 'ftp' not allowed (allowed: file, http, https, s3, gs)",
        ),
        ("relative", "a.bin", "relative href 'a.bin' has nothing to resolve it against"),
        ("badsum", str(path), "malformed file:checksum '1220abcd'"),
        ("blake3", str(path), "unsupported file:checksum function (multihash code 0x1e)"),
        ("nohost", "https:///a.bin", "https href names no host or bucket"),
        ("relquery", "a.bin", "relative href 'a.bin' has nothing to resolve it against"),
        ("pathquery", str(path), "a query string is only supported on http(s) hrefs, not 'file'"),
        (
            "filequery",
            path.as_uri(),
            "a query string is only supported on http(s) hrefs, not 'file'",
        ),
        (
            "s3query",
            "s3://bucket/a.bin",
            "a query string is only supported on http(s) hrefs, not 's3'",
        ),
    ]
    _, failures = fetch(
        items[:1] + [_item("local", image=file_asset(path))],
        _params(tmp_path, allowed_schemes=("https",)),
    )
    assert [f.reason for f in failures] == [
        "scheme 'ftp' not allowed (allowed: https)",
        "scheme 'file' not allowed (allowed: https)",
    ]


def test_href_escaping_the_catalog_root_is_refused(tmp_path: Path) -> None:
    outside = _write(tmp_path / "outside.bin", 100)
    inside = _write(tmp_path / "cat" / "data" / "inside.bin", 100)
    catalog = write_catalog(
        tmp_path / "cat",
        "c",
        [
            stac_item("escapes", {"image": file_asset(outside, href="../../../outside.bin")}),
            stac_item("stays", {"image": file_asset(inside, href="../../data/inside.bin")}),
            stac_item("absolute", {"image": file_asset(outside)}),
        ],
    )
    params = PipelineParams(
        catalog=str(catalog),
        collections=("c",),
        work_dir=tmp_path / "w",
        fetch=FetchParams(cache_dir=tmp_path / "cache"),
    )
    fetched, failures = fetch(discover(params), params)
    assert [i["id"] for i in fetched] == ["stays"]
    assert failures == [
        Failure(
            "fetch",
            "absolute",
            str(outside),
            f"href {str(outside)!r} resolves outside the catalog root {tmp_path / 'cat'}"
            + ALLOW_FOLDER,
        ),
        Failure(
            "fetch",
            "escapes",
            str(outside),
            f"href '../../../outside.bin' resolves outside the catalog root {tmp_path / 'cat'}"
            + ALLOW_FOLDER,
        ),
    ]


def test_static_catalog_over_http_is_downloaded(tmp_path: Path, served: FileServer) -> None:
    remote = tmp_path / "remote"
    inside = _write(remote / "cat" / "data" / "inside.tif", 2000)
    outside = _write(remote / "outside.tif", 2000)
    write_catalog(
        remote / "cat",
        "c",
        [
            stac_item("stays", {"image": file_asset(inside, href="../../data/inside.tif")}),
            stac_item("escapes", {"image": file_asset(outside, href="../../../outside.tif")}),
        ],
    )
    params = PipelineParams(
        catalog=served.url("cat/catalog.json"),
        collections=("c",),
        work_dir=tmp_path / "w",
        fetch=FetchParams(cache_dir=tmp_path / "c", allow_private_hosts=True),
    )
    items = discover(params)
    assert [i["assets"]["image"]["href"] for i in items] == [
        served.url("outside.tif"),
        served.url("cat/data/inside.tif"),
    ]
    fetched, failures = fetch(items, params)
    assert failures == [
        Failure(
            "fetch",
            "escapes",
            served.url("outside.tif"),
            f"href '../../../outside.tif' resolves outside the catalog root {served.url('cat')}",
        )
    ]
    (item,) = fetched
    assert Path(item["assets"]["image"]["href"]).read_bytes() == inside.read_bytes()
    assert [r.path for r in served.requests if not r.path.endswith(".json")] == [
        "/cat/data/inside.tif"
    ]  # the refused file was never asked for


# --- downloads over HTTP ----------------------------------------------------------------------


def test_download_goes_into_the_content_addressed_cache(tmp_path: Path, served: FileServer) -> None:
    local = _write(tmp_path / "remote" / "dir" / "scene one.tif", 5000)
    asset = file_asset(local, href=served.url("dir/scene%20one.tif"))
    fetched, failures = fetch([_item("a", image=asset)], _params(tmp_path))
    assert failures == []
    checksum = asset["file:checksum"]
    entry = tmp_path / "cache" / checksum[4:6] / f"{checksum}.tif"
    assert fetched[0]["assets"]["image"]["href"] == str(entry)
    assert fetched[0]["assets"]["image"][SOURCE_HREF] == asset["href"]
    assert entry.read_bytes() == local.read_bytes()
    assert _cache_files(tmp_path / "cache") == [entry]
    assert served.requests == [Request("/dir/scene%20one.tif", None)]


def test_second_fetch_is_a_cache_hit(tmp_path: Path, served: FileServer) -> None:
    local = _write(tmp_path / "remote" / "a.tif", 5000)
    items = [
        _item("a", image=file_asset(local, href=served.url("a.tif"))),
        _item("b", image=file_asset(local, href=served.url("a.tif"))),
    ]  # same file twice
    first, _ = fetch(items, _params(tmp_path))
    assert len(served.requests) == 1
    second, failures = fetch(items, _params(tmp_path))
    assert failures == [] and second == first
    assert len(served.requests) == 1  # nothing new was asked for


def test_one_download_per_checksum_across_mirrors(tmp_path: Path, served: FileServer) -> None:
    local = _write(tmp_path / "remote" / "a" / "x.tif", 5000)
    _write(tmp_path / "remote" / "b" / "x.tif", 0).write_bytes(local.read_bytes())
    items = [
        _item("a", image=file_asset(local, href=served.url("a/x.tif"))),
        _item("b", image=file_asset(local, href=served.url("b/x.tif"))),
    ]
    fetched, failures = fetch(items, _params(tmp_path, concurrency=2))
    assert failures == []
    assert fetched[0]["assets"]["image"]["href"] == fetched[1]["assets"]["image"]["href"]
    assert len(served.requests) == 1 and len(_cache_files(tmp_path / "cache")) == 1


def test_downloads_run_in_parallel(tmp_path: Path, served: FileServer) -> None:
    files = [_write(tmp_path / "remote" / f"{n}.tif", 1000) for n in range(3)]
    served.faults.gate = threading.Barrier(3, timeout=10)  # answers only 3 requests at once
    items = [_item(f.stem, image=file_asset(f, href=served.url(f.name))) for f in files]
    fetched, failures = fetch(items, _params(tmp_path, concurrency=3, retries=0))
    assert failures == [] and len(fetched) == 3
    assert sorted(r.path for r in served.requests) == ["/0.tif", "/1.tif", "/2.tif"]


def test_empty_remote_file(tmp_path: Path, served: FileServer) -> None:
    empty = _write(tmp_path / "remote" / "empty.txt", 0)
    fetched, failures = fetch(
        [_item("a", image=file_asset(empty, href=served.url("empty.txt")))], _params(tmp_path)
    )
    assert failures == [] and Path(fetched[0]["assets"]["image"]["href"]).read_bytes() == b""
    assert served.requests == [Request("/empty.txt", None)]


def test_download_without_checksum_is_keyed_by_href(tmp_path: Path, served: FileServer) -> None:
    _write(tmp_path / "remote" / "a.png", 300)
    asset = {"href": served.url("a.png"), "msgfm:sensor": "rgb"}
    fetched, failures = fetch([_item("a", image=asset)], _params(tmp_path))
    assert failures == []
    entry = Path(fetched[0]["assets"]["image"]["href"])
    assert entry.parent == tmp_path / "cache" / "by-href" and entry.suffix == ".png"
    assert entry.read_bytes() == (tmp_path / "remote" / "a.png").read_bytes()


def test_retry_after_server_errors(tmp_path: Path, served: FileServer) -> None:
    local = _write(tmp_path / "remote" / "a.tif", 2000)
    served.faults.errors["/a.tif"] = 2
    fetched, failures = fetch(
        [_item("a", image=file_asset(local, href=served.url("a.tif")))],
        _params(tmp_path, retries=2),
    )
    assert failures == [] and len(fetched) == 1
    assert served.requests == [Request("/a.tif", None)] * 3


def test_retries_exhausted_is_reported(tmp_path: Path, served: FileServer) -> None:
    local = _write(tmp_path / "remote" / "a.tif", 2000)
    served.faults.errors["/a.tif"] = 5
    href = served.url("a.tif")
    fetched, failures = fetch(
        [_item("a", image=file_asset(local, href=href))], _params(tmp_path, retries=1)
    )
    assert fetched == []
    (failure,) = failures
    assert (failure.item_id, failure.path) == ("a", href)
    assert failure.reason.startswith("download failed after 2 attempts: ")
    assert len(served.requests) == 2
    assert _cache_files(tmp_path / "cache") == []


def test_interrupted_download_resumes_with_a_range_request(
    tmp_path: Path, served: FileServer
) -> None:
    size = 4 * CHUNK_BYTES
    local = _write(tmp_path / "remote" / "big.tif", size)
    served.faults.drops["/big.tif"] = 3 * CHUNK_BYTES
    asset = file_asset(local, href=served.url("big.tif"))
    fetched, failures = fetch([_item("a", image=asset)], _params(tmp_path))
    assert failures == []
    assert Path(fetched[0]["assets"]["image"]["href"]).read_bytes() == local.read_bytes()
    first, second = served.requests
    assert first == Request("/big.tif", None)
    assert second.range is not None
    offset = int(second.range.removeprefix("bytes=").removesuffix("-"))
    assert CHUNK_BYTES <= offset <= 3 * CHUNK_BYTES  # what had come was kept


def test_partial_file_from_an_earlier_run_is_resumed(tmp_path: Path, served: FileServer) -> None:
    local = _write(tmp_path / "remote" / "a.tif", 10_000)
    asset = file_asset(local, href=served.url("a.tif"))
    checksum = asset["file:checksum"]
    partial = tmp_path / "cache" / checksum[4:6] / f"{checksum}.tif.part"
    partial.parent.mkdir(parents=True)
    partial.write_bytes(local.read_bytes()[:6000])
    fetched, failures = fetch([_item("a", image=asset)], _params(tmp_path))
    assert failures == [] and not partial.exists()
    assert served.requests == [Request("/a.tif", "bytes=6000-")]
    assert Path(fetched[0]["assets"]["image"]["href"]).read_bytes() == local.read_bytes()


def test_stale_partial_file_is_downloaded_again(tmp_path: Path, served: FileServer) -> None:
    local = _write(tmp_path / "remote" / "a.tif", 10_000)
    asset = file_asset(local, href=served.url("a.tif"))
    checksum = asset["file:checksum"]
    partial = tmp_path / "cache" / checksum[4:6] / f"{checksum}.tif.part"
    partial.parent.mkdir(parents=True)
    partial.write_bytes(b"z" * 6000)  # not the start of this file
    fetched, failures = fetch([_item("a", image=asset)], _params(tmp_path))
    assert failures == []
    assert served.requests == [Request("/a.tif", "bytes=6000-"), Request("/a.tif", None)]
    assert Path(fetched[0]["assets"]["image"]["href"]).read_bytes() == local.read_bytes()


def test_remote_mismatch_and_missing_are_reported(tmp_path: Path, served: FileServer) -> None:
    local = _write(tmp_path / "remote" / "a.tif", 3000)
    asset = file_asset(local, href=served.url("a.tif"))
    served_checksum = asset["file:checksum"]
    expected = "1220" + "0" * 64
    good = _write(tmp_path / "remote" / "good.tif", 100)
    items = [
        _item("changed", image={**asset, "file:checksum": expected}),
        _item("gone", image=file_asset(local, href=served.url("gone.tif"))),
        _item("good", image=file_asset(good, href=served.url("good.tif"))),
    ]
    fetched, failures = fetch(items, _params(tmp_path))
    assert [i["id"] for i in fetched] == ["good"]
    assert failures == [
        Failure(
            "fetch",
            "changed",
            asset["href"],
            f"checksum mismatch: expected {expected}, got {served_checksum}",
        ),
        Failure("fetch", "gone", served.url("gone.tif"), "missing file"),
    ]
    good_checksum = items[2]["assets"]["image"]["file:checksum"]
    assert _cache_files(tmp_path / "cache") == [
        tmp_path / "cache" / good_checksum[4:6] / f"{good_checksum}.tif"
    ]  # nothing half-done


@pytest.mark.parametrize(
    ("prefix", "wrong"),
    [
        ("d50110", "d50110" + "0" * 32),  # a multihash: code 0xd5 is a 2-byte varint
        # Planetary Computer's form: 32 hex digits, no multihash prefix (sentinel-1-rtc's vv).
        ("", "7ddacf901e722721ade996eb448ec87f"),
    ],
)
def test_md5_checksums_are_verified(tmp_path: Path, prefix: str, wrong: str) -> None:
    path = _write(tmp_path / "a.tif", 100)
    md5 = prefix + hashlib.md5(path.read_bytes()).hexdigest()
    asset = {"href": str(path), "msgfm:sensor": "rgb"}
    fetched, failures = fetch(
        [
            _item("a", image={**asset, "file:checksum": md5}),
            _item("b", image={**asset, "file:checksum": wrong}),
        ],
        _params(tmp_path),
    )
    assert [i["id"] for i in fetched] == ["a"]
    assert [f.reason for f in failures] == [f"checksum mismatch: expected {wrong}, got {md5}"]
