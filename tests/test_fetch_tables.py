"""Fetch's Arrow path: the items table's rows go to the workers as tables, the fetched items
come back as tables; the result is the one fetching the item dicts gives."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from catalogs.stac_search import CATALOG_HREF
from pipeline import fetch as fetch_module
from pipeline.cluster import Executor, executor
from pipeline.discover import discover
from pipeline.fetch import SOURCE_HREF, fetch, fetch_rows
from pipeline.items import (
    read_items,
    read_table,
    table_items,
    table_rows_as_items,
    write_items,
    write_table,
)
from pipeline.params import FetchParams, PipelineParams
from tests.http_server import file_server

COLLECTIONS = ("sen12ms", "mdas", "millionaid", "geopile")


@pytest.fixture(scope="module")
def cluster() -> Iterator[Executor]:
    with executor(2) as ex:
        yield ex


def _params(sample_world: Path, tmp_path: Path) -> PipelineParams:
    return PipelineParams(
        catalog=str(sample_world / "catalog.json"),
        collections=COLLECTIONS,
        work_dir=tmp_path / "work",
        fetch=FetchParams(cache_dir=tmp_path / "cache", allow_private_hosts=True),
    )


def _wrong_size(item: dict[str, Any]) -> dict[str, Any]:
    key, asset = next(iter(item["assets"].items()))
    return {**item, "assets": {**item["assets"], key: {**asset, "file:size": 1}}}


@pytest.mark.parametrize("workers", [0, 2])
def test_fetched_rows_have_the_bytes_the_fetched_item_dicts_give(
    workers: int,
    sample_world: Path,
    tmp_path: Path,
    cluster: Executor,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    params = _params(sample_world, tmp_path)
    items = discover(params)
    items[6] = _wrong_size(items[6])
    items[12] = _wrong_size(items[12])
    path = write_items(params.items_table, items)
    monkeypatch.setattr(fetch_module, "CHUNK_ITEMS", 5)  # uneven chunks, failures inside two
    fetched, failures = fetch_rows(read_table(path), params, cluster if workers else Executor(None))
    expected, expected_failures = fetch(read_items(path), params)
    assert failures == expected_failures
    assert [(f.item_id, f.reason) for f in failures] == [
        (
            items[n]["id"],
            f"size mismatch: expected 1 bytes, got "
            f"{Path(next(iter(items[n]['assets'].values()))['href']).stat().st_size}",
        )
        for n in (6, 12)
    ]
    assert fetched.num_rows == len(items) - 2
    assert (
        write_table(tmp_path / "rows.parquet", fetched).read_bytes()
        == write_items(tmp_path / "dicts.parquet", expected).read_bytes()
    )


def test_downloaded_items_take_their_rows_place(
    sample_world: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    params = _params(sample_world, tmp_path)
    items = discover(params)
    served = {}
    with file_server(tmp_path / "remote") as server:
        for n in (3, 8):  # one item of the first chunk, one of the second, served over HTTP
            assets = {}
            for key, asset in items[n]["assets"].items():
                name = f"{n}-{Path(asset['href']).name}"
                (tmp_path / "remote").mkdir(exist_ok=True)
                shutil.copy(asset["href"], tmp_path / "remote" / name)
                assets[key] = {
                    **{k: v for k, v in asset.items() if k != CATALOG_HREF},
                    "href": server.url(name),
                }
            items[n] = {**items[n], "assets": assets}
            served[items[n]["id"]] = assets
        items[5] = _wrong_size(items[5])
        path = write_items(params.items_table, items)
        monkeypatch.setattr(fetch_module, "CHUNK_ITEMS", 4)
        fetched, failures = fetch_rows(read_table(path), params)
        expected, expected_failures = fetch(read_items(path), params)
    assert failures == expected_failures
    assert [f.item_id for f in failures] == [items[5]["id"]]
    rows = table_rows_as_items(fetched)
    assert rows == read_items(write_items(tmp_path / "dicts.parquet", expected))
    assert [row["id"] for row in rows] == [item["id"] for n, item in enumerate(items) if n != 5]
    for row in rows:
        if row["id"] in served:
            assert {key: asset[SOURCE_HREF] for key, asset in row["assets"].items()} == {
                key: asset["href"] for key, asset in served[row["id"]].items()
            }
            assert all(
                Path(asset["href"]).is_relative_to(params.fetch.cache_dir)
                for asset in row["assets"].values()
            )


def test_rows_that_all_fail_are_all_failures(
    sample_world: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    params = _params(sample_world, tmp_path)
    items = [_wrong_size(item) for item in discover(params)[:5]]
    monkeypatch.setattr(fetch_module, "CHUNK_ITEMS", 2)
    fetched, failures = fetch_rows(read_table(write_items(params.items_table, items)), params)
    assert fetched.num_rows == 0
    assert [f.item_id for f in failures] == [item["id"] for item in items]


def test_a_table_of_no_rows_fetches_nothing(sample_world: Path, tmp_path: Path) -> None:
    params = _params(sample_world, tmp_path)
    fetched, failures = fetch_rows(read_table(write_items(params.items_table, [])), params)
    assert (fetched.num_rows, failures) == (0, [])
    assert read_items(write_table(params.fetched_table, fetched)) == []


def test_every_failed_row_is_a_failure_of_its_item(sample_world: Path, tmp_path: Path) -> None:
    params = _params(sample_world, tmp_path)
    items = discover(params)[:3]
    missing = {
        **items[1],
        "assets": {
            key: {**asset, "href": str(Path(asset["href"]).with_name(f"gone-{key}"))}
            for key, asset in items[1]["assets"].items()
        },
    }
    path = write_items(params.items_table, [items[0], missing, items[2]])
    fetched, failures = fetch_rows(read_table(path), params)
    assert [row["id"] for row in table_items(fetched)] == [items[0]["id"], items[2]["id"]]
    assert failures == fetch(read_items(path), params)[1]
    assert failures and {(f.item_id, f.reason) for f in failures} == {
        (missing["id"], "missing file")
    }
    assert all(Path(f.path).name.startswith("gone-") for f in failures)
