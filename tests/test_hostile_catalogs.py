"""Hostile catalogs, built here in code: ids that are no file names, hrefs and links that leave
the catalog, catalogs over HTTP that name local files, requests to loopback and private hosts."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from catalogs.store_format import ITEM_ID, SOURCE, open_store
from pipeline.chips import LocationChips
from pipeline.cluster import executor
from pipeline.discover import discover
from pipeline.failures import Failure
from pipeline.fetch import fetch
from pipeline.items import write_items
from pipeline.params import FetchParams, PipelineParams
from pipeline.stages import failures_path, run_coregister, run_shard
from tests.http_server import file_server
from tests.small_catalog import file_asset, stac_item, write_catalog

HOSTILE_IDS = ("../../../../outside/evil", "nul\x00byte", "x" * 300, "x" * 300 + "y", "..")
LOOPBACK_REASON = (
    "host '{host}' resolves to {address}, a loopback, private, link-local or "
    "reserved address (allow with pipeline.fetch.allow_private_hosts)"
)


ALLOW_FOLDER = " (allow its folder with pipeline.fetch.allowed_local_folders)"


def _params(tmp_path: Path, catalog: str | None = None, **fetch: Any) -> PipelineParams:
    return PipelineParams(
        catalog=catalog,
        collections=("c",),
        work_dir=tmp_path / "work",
        fetch=FetchParams(cache_dir=tmp_path / "cache", retries=0, **fetch),
    )


def _data(path: Path, content: bytes = b"data") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content)
    return path


def _reasons(failures: list[Failure]) -> dict[str, str]:
    return {f.item_id: f.reason for f in failures}


# --- item ids never become paths as they are ---------------------------------------------------


def test_hostile_item_ids_are_chipped_under_safe_names_inside_the_chips_folder(
    sample_world: Path, tmp_path: Path
) -> None:
    picture = discover(
        PipelineParams(catalog=str(sample_world / "catalog.json"), collections=("geopile",))
    )[0]
    items = [
        {**picture, "id": item_id, "collection": collection}
        for item_id in HOSTILE_IDS
        for collection in ("geopile", "../up")
    ]
    params = PipelineParams(
        work_dir=tmp_path / "a" / "b" / "c" / "work",  # an escape stays
        store=tmp_path / "store.zarr",
    )  # in tmp_path
    write_items(params.fetched_table, items)
    with executor(0) as ex:
        run_coregister(params, ex, progress=False)
        run_shard(params, ex, progress=False)
    assert json.loads(failures_path(params, "coregister").read_text()) == []
    chip_files = sorted(tmp_path.rglob("*.npz"))
    assert all(p.is_relative_to(params.chips_dir) for p in chip_files)
    assert sorted({p.parent.name for p in chip_files}) == ["_up", "geopile"]
    assert all(len(p.name) <= 120 and p.name.isascii() for p in chip_files)
    identities = sorted(
        (LocationChips.load_header(p).source, LocationChips.load_header(p).item_id)
        for p in chip_files
    )
    assert identities == sorted((item["collection"], item["id"]) for item in items)
    (sensor,) = LocationChips.load_header(chip_files[0]).sensors
    stored = open_store(params.store)[sensor]
    assert sorted(zip(stored[SOURCE][:], stored[ITEM_ID][:], strict=True)) == identities


# --- local files: only a local catalog's, inside its root ---------------------------------------


def test_absolute_and_symlinked_hrefs_out_of_a_local_catalog_are_refused(tmp_path: Path) -> None:
    secret = _data(tmp_path / "secret" / "key.bin", b"secret")
    inside = _data(tmp_path / "cat" / "data" / "inside.bin")
    (tmp_path / "cat" / "data" / "link.bin").symlink_to(secret)
    (tmp_path / "cat" / "data" / "folder").symlink_to(secret.parent, target_is_directory=True)
    (tmp_path / "cat" / "data" / "good_link.bin").symlink_to(inside)
    catalog = write_catalog(
        tmp_path / "cat",
        "c",
        [
            stac_item("file_url", {"image": file_asset(secret, href=secret.as_uri())}),
            stac_item("link", {"image": file_asset(secret, href="../../data/link.bin")}),
            stac_item("folder", {"image": file_asset(secret, href="../../data/folder/key.bin")}),
            stac_item("good_link", {"image": file_asset(inside, href="../../data/good_link.bin")}),
            stac_item("inside", {"image": file_asset(inside, href=inside.as_uri())}),
        ],
    )
    params = _params(tmp_path, str(catalog))
    fetched, failures = fetch(discover(params), params)
    assert [i["id"] for i in fetched] == ["good_link", "inside"]
    root = tmp_path / "cat"
    assert _reasons(failures) == {
        "file_url": f"href {secret.as_uri()!r} resolves outside the catalog root {root}"
        + ALLOW_FOLDER,
        "folder": f"href '../../data/folder/key.bin' resolves outside the catalog root {root}"
        + ALLOW_FOLDER,
        "link": f"href '../../data/link.bin' resolves outside the catalog root {root}"
        + ALLOW_FOLDER,
    }
    assert {f.path for f in failures} == {
        secret.as_uri(),
        str(root / "data" / "link.bin"),
        str(root / "data" / "folder" / "key.bin"),
    }
    allowed = _params(tmp_path, str(catalog), allowed_local_folders=(str(secret.parent),))
    fetched, failures = fetch(discover(allowed), allowed)
    assert failures == [] and len(fetched) == 5


def test_a_local_catalog_cannot_link_discover_out_of_its_root(tmp_path: Path) -> None:
    elsewhere = write_catalog(tmp_path / "elsewhere", "c", [stac_item("private", {})])
    catalog = write_catalog(tmp_path / "cat", "c", [stac_item("mine", {})])
    (tmp_path / "cat" / "c").rename(tmp_path / "cat" / "gone")
    (tmp_path / "cat" / "c").symlink_to(elsewhere.parent / "c", target_is_directory=True)
    with pytest.raises(
        ValueError,
        match=(
            rf"{catalog}: href '.*/cat/c/collection.json' resolves outside the catalog root "
            rf"{tmp_path / 'cat'} \(allow its folder with pipeline\.fetch\.allowed_local_folders\)$"
        ),
    ):
        discover(_params(tmp_path, str(catalog)))


def test_a_catalog_over_http_may_not_name_local_files(tmp_path: Path) -> None:
    local = _data(tmp_path / "secret.bin", b"secret")
    served = _data(tmp_path / "remote" / "cat" / "a.bin")
    write_catalog(
        tmp_path / "remote" / "cat",
        "c",
        [
            stac_item("file_url", {"image": file_asset(local, href=local.as_uri())}),
            stac_item("path", {"image": file_asset(local)}),
            stac_item("remote", {"image": file_asset(served, href="../../a.bin")}),
        ],
    )
    with file_server(tmp_path / "remote") as server:
        params = _params(tmp_path, server.url("cat/catalog.json"), allow_private_hosts=True)
        fetched, failures = fetch(discover(params), params)
        opted_in = _params(
            tmp_path, params.catalog, allow_private_hosts=True, allow_local_files_from_remote=True
        )
        fetched_anyway, refused_anyway = fetch(discover(opted_in), opted_in)
    assert [i["id"] for i in fetched] == ["remote"]
    reason = (
        f"the catalog {server.url('cat')} is read over the network and may not name the "
        "local file {!r} (allow with pipeline.fetch.allow_local_files_from_remote)"
    )
    assert _reasons(failures) == {
        "file_url": reason.format(local.as_uri()),
        "path": reason.format(str(local)),
    }
    assert refused_anyway == [] and len(fetched_anyway) == 3


def test_a_catalog_over_http_cannot_link_discover_to_local_files(tmp_path: Path) -> None:
    local_catalog = write_catalog(tmp_path / "local", "c", [stac_item("private", {})])
    remote_catalog = write_catalog(tmp_path / "remote", "c", [stac_item("public", {})])
    record = json.loads(remote_catalog.read_text())
    record["links"][1]["href"] = (local_catalog.parent / "c" / "collection.json").as_uri()
    remote_catalog.write_text(json.dumps(record))
    with file_server(tmp_path / "remote") as server, pytest.raises(ValueError) as error:
        discover(_params(tmp_path, server.url("catalog.json"), allow_private_hosts=True))
    assert str(error.value) == (
        f"{server.url('catalog.json')}: the catalog {server.url()[:-1]} is read over the network "
        f"and may not name the local file "
        f"{(local_catalog.parent / 'c' / 'collection.json').as_uri()!r} "
        "(allow with pipeline.fetch.allow_local_files_from_remote)"
    )


# --- loopback, private and link-local hosts ------------------------------------------------------


def test_loopback_private_and_link_local_hosts_are_refused_without_opt_in(tmp_path: Path) -> None:
    served = _data(tmp_path / "remote" / "a.bin")
    with file_server(tmp_path / "remote") as server:
        port = server.server_address[1]
        hrefs = {
            "loopback": server.url("a.bin"),
            "name": f"http://localhost:{port}/a.bin",
            "ipv6": f"http://[::1]:{port}/a.bin",
            "decimal": f"http://2130706433:{port}/a.bin",
            "metadata": "http://169.254.169.254/latest/meta-data/a.bin",
            "private": "https://10.1.2.3/a.bin",
            "mapped": "http://[::ffff:192.168.0.1]/a",
        }
        items = [
            {**stac_item(key, {"image": file_asset(served, href=href)}), "collection": "c"}
            for key, href in hrefs.items()
        ]
        fetched, failures = fetch(items, _params(tmp_path))
        assert server.requests == []  # refused before any request
        opted_in, _ = fetch(items[:1], _params(tmp_path, allow_private_hosts=True))
    assert fetched == []
    reasons = _reasons(failures)
    assert reasons["loopback"] == LOOPBACK_REASON.format(host="127.0.0.1", address="127.0.0.1")
    assert reasons["decimal"] == LOOPBACK_REASON.format(host="2130706433", address="127.0.0.1")
    assert reasons["ipv6"] == LOOPBACK_REASON.format(host="::1", address="::1")
    assert reasons["metadata"] == LOOPBACK_REASON.format(
        host="169.254.169.254", address="169.254.169.254"
    )
    assert reasons["private"] == LOOPBACK_REASON.format(host="10.1.2.3", address="10.1.2.3")
    assert reasons["mapped"] == LOOPBACK_REASON.format(
        host="::ffff:192.168.0.1", address="192.168.0.1"
    )
    assert reasons["name"].startswith("host 'localhost' resolves to ")
    assert {f.path for f in failures} == set(hrefs.values())
    assert Path(opted_in[0]["assets"]["image"]["href"]).read_bytes() == served.read_bytes()


def test_a_remote_catalog_cannot_link_discover_to_another_loopback_host(tmp_path: Path) -> None:
    catalog = write_catalog(tmp_path / "remote", "c", [stac_item("a", {})])
    with file_server(tmp_path / "remote") as server:
        record = json.loads(catalog.read_text())
        other = f"http://localhost:{server.server_address[1]}/c/collection.json"
        record["links"][1]["href"] = other
        catalog.write_text(json.dumps(record))
        with pytest.raises(ValueError, match=rf"link {other}: host 'localhost' resolves to "):
            discover(_params(tmp_path, server.url("catalog.json")))
        assert [r.path for r in server.requests] == ["/catalog.json"]
        allowed = discover(_params(tmp_path, server.url("catalog.json"), allow_private_hosts=True))
    assert [i["id"] for i in allowed] == ["a"]
