"""Discover at scale: static catalogs read in chunks on a cluster, stac-geoparquet catalogs,
STAC API searches run one collection per thread; each gives what the plain serial readers give."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pystac
import pytest
import stac_geoparquet.arrow as stac_arrow
from pystac_client import Client

from catalogs.stac_search import with_origin
from pipeline import static_catalog
from pipeline.cluster import Executor, executor
from pipeline.discover import CATALOG_HREF, CATALOG_ROOT, discover, discover_to_table
from pipeline.params import PipelineParams
from tests.small_catalog import file_asset, stac_item, write_catalog
from tests.stac_server import stac_api

STAC_ITEMS = Path(__file__).parent / "data" / "stac_items"
SAMPLE_COLLECTIONS = (
    "sen12ms",
    "mdas",
    "millionaid",
    "geopile",
    "bigearthnet",
    "sen12ms-cr",
    "spacenet2",
    "vaihingen",
)


def _pystac_items(catalog: Path, collections: tuple[str, ...]) -> list[dict[str, Any]]:
    """The serial reader this module replaced: pystac's objects, one item after another."""
    root = pystac.Catalog.from_file(str(catalog))
    by_id = {c.id: c for c in root.get_all_collections()}
    items = []
    for collection_id in collections:
        for item in by_id[collection_id].get_items(recursive=True):
            record = item.to_dict(include_self_link=True, transform_hrefs=True)
            record["collection"] = collection_id
            items.append(with_origin(record, item.get_self_href(), str(catalog.parent)))
    return sorted(items, key=lambda item: (item["collection"], item["id"]))


@pytest.fixture(scope="module")
def cluster() -> Iterator[Executor]:
    with executor(2) as ex:
        yield ex


@pytest.mark.parametrize("workers", [0, 2])
def test_chunked_static_reader_equals_the_pystac_reader_on_the_sample_world(
    workers: int, sample_world: Path, cluster: Executor, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(static_catalog, "CHUNK_ITEMS", 7)  # many chunks, some uneven
    params = PipelineParams(
        catalog=str(sample_world / "catalog.json"), collections=SAMPLE_COLLECTIONS
    )
    items = discover(params, cluster if workers else Executor(None))
    assert items == _pystac_items(sample_world / "catalog.json", SAMPLE_COLLECTIONS)
    assert len(items) > 7 * 4


def test_chunked_static_reader_equals_pystac_on_unusual_item_files(tmp_path: Path) -> None:
    data = tmp_path / "cat" / "data.tif"
    data.parent.mkdir(parents=True)
    data.write_bytes(b"abc")
    catalog = write_catalog(
        tmp_path / "cat",
        "c",
        [
            stac_item("plain", {"image": file_asset(data, href="../../data.tif")}, [0, 0, 1, 1]),
            stac_item("unlocated", {"image": file_asset(data, href=str(data), title=None)}),
        ],
    )
    odd = tmp_path / "cat" / "c" / "unlocated" / "unlocated.json"
    record = json.loads(odd.read_text())
    record["links"] = [
        {"rel": "self", "href": "/elsewhere/x.json"},  # replaced by the file's
        {"rel": "via", "href": "../v.json", "title": None, "x": 1},
    ]  # no root
    record["properties"] = {"datetime": "2020-01-01T00:00:00.000Z", "n": 1}
    odd.write_text(json.dumps(record))
    old = tmp_path / "cat" / "c" / "plain" / "plain.json"  # STAC 1.0.0, eo 1.0.0: migrated
    record = json.loads(old.read_text())
    record.update(
        stac_version="1.0.0",
        stac_extensions=["https://stac-extensions.github.io/eo/v1.0.0/schema.json"],
    )
    record["properties"]["title"] = "t"
    old.write_text(json.dumps(record))
    items = discover(PipelineParams(catalog=str(catalog), collections=("c",)))
    assert items == _pystac_items(catalog, ("c",))
    assert [link["rel"] for link in items[1]["links"]] == ["via", "root", "self", "parent"]


def test_a_link_out_of_the_root_is_refused_on_the_workers(
    tmp_path: Path, cluster: Executor
) -> None:
    data = tmp_path / "cat" / "data.tif"
    data.parent.mkdir(parents=True)
    data.write_bytes(b"abc")
    catalog = write_catalog(
        tmp_path / "cat", "c", [stac_item(f"i{n}", {"image": file_asset(data)}) for n in range(3)]
    )
    outside = tmp_path / "outside.json"
    shutil.copy(tmp_path / "cat" / "c" / "i1" / "i1.json", outside)
    collection_path = tmp_path / "cat" / "c" / "collection.json"
    collection = json.loads(collection_path.read_text())
    collection["links"].append({"rel": "item", "href": "../../outside.json"})
    collection_path.write_text(json.dumps(collection))
    with pytest.raises(ValueError, match=r"outside\.json' resolves outside the catalog root"):
        discover(PipelineParams(catalog=str(catalog), collections=("c",)), cluster)


def _geoparquet(items: list[dict[str, Any]], path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    stac_arrow.to_parquet(stac_arrow.parse_stac_items_to_arrow(items).read_all(), path)
    return path


def test_a_geoparquet_catalog_of_published_items_is_read_directly(tmp_path: Path) -> None:
    items = [json.loads(p.read_text()) for p in sorted(STAC_ITEMS.glob("*.json"))]
    items[0]["assets"]["local"] = {"href": "data/local.tif", "roles": ["data"]}
    path = _geoparquet(items, tmp_path / "catalog" / "items.parquet")
    found = discover(PipelineParams(catalog=str(path), collections=("sentinel-2-l2a", "naip")))
    expected = sorted(
        (i["collection"], i["id"]) for i in items if i["collection"] in ("sentinel-2-l2a", "naip")
    )
    assert [(i["collection"], i["id"]) for i in found] == expected
    assert all(i["properties"][CATALOG_ROOT] == str(path.parent) for i in found)
    (first,) = [i for i in found if i["id"] == items[0]["id"]]
    assert first["assets"]["local"]["href"] == str(path.parent / "data" / "local.tif")
    assert first["assets"]["local"][CATALOG_HREF] == "data/local.tif"
    assert {k: a["href"] for k, a in first["assets"].items() if k != "local"} == {
        k: a["href"] for k, a in items[0]["assets"].items() if k != "local"
    }
    naip = next(i for i in items if i["collection"] == "naip")
    within = discover(
        PipelineParams(
            catalog=str(path),
            collections=("naip", "sentinel-2-l2a"),
            bbox=naip["bbox"],
            datetime=naip["properties"]["datetime"],
        )
    )
    assert [i["id"] for i in within] == [naip["id"]]


def test_a_geoparquet_catalog_of_the_sample_world_gives_the_static_catalogs_items(
    sample_world: Path, tmp_path: Path
) -> None:
    params = PipelineParams(
        catalog=str(sample_world / "catalog.json"),
        collections=SAMPLE_COLLECTIONS,
        bbox=(-180.0, -90.0, 180.0, 90.0),
    )
    static = discover(params)
    world = tmp_path / "world"
    shutil.copytree(sample_world, world)
    path = discover_to_table(
        PipelineParams(
            catalog=str(world / "catalog.json"),
            collections=SAMPLE_COLLECTIONS,
            work_dir=world / "work",
        )
    )
    from_parquet = discover(
        PipelineParams(catalog=str(path), collections=SAMPLE_COLLECTIONS, bbox=params.bbox)
    )
    assert [(i["collection"], i["id"]) for i in from_parquet] == [
        (i["collection"], i["id"]) for i in static
    ]
    assert [
        {k: a["href"].replace(str(world), str(sample_world)) for k, a in i["assets"].items()}
        for i in from_parquet
    ] == [{k: a["href"] for k, a in i["assets"].items()} for i in static]


def test_a_file_that_is_no_stac_geoparquet_is_refused_by_name(tmp_path: Path) -> None:
    text = tmp_path / "text.parquet"
    text.write_text("id,collection\n")
    with pytest.raises(ValueError, match=rf"{text}: not a Parquet file"):
        discover(PipelineParams(catalog=str(text), collections=("c",)))
    plain = tmp_path / "plain.parquet"
    pq.write_table(pa.table({"id": ["a"], "value": [1]}), plain)
    with pytest.raises(ValueError, match=rf"{plain}: not a stac-geoparquet file \(no column"):
        discover(PipelineParams(catalog=str(plain), collections=("c",)))
    items = [json.loads((STAC_ITEMS / "pc_naip.json").read_text())]
    path = _geoparquet(items, tmp_path / "items.parquet")
    with pytest.raises(ValueError, match=rf"{path}: no collection\(s\) \['c'\]; it has \['naip'\]"):
        discover(PipelineParams(catalog=str(path), collections=("c",)))


@pytest.mark.parametrize(
    "search", [{}, {"datetime": "2017-06"}, {"bbox": (11.0, 48.0, 13.0, 49.0)}]
)
def test_concurrent_api_search_equals_one_sequential_search(
    search: dict[str, Any], sample_world: Path, tmp_path: Path
) -> None:
    collections = ("sen12ms", "mdas", "bigearthnet", "geopile")
    with stac_api(sample_world / "catalog.json", tmp_path / "api") as url:
        found = discover(
            PipelineParams(
                api_url=url, collections=collections, fetch=PipelineParams().fetch, **search
            )
        )
        sequential = (
            Client.open(url)
            .search(collections=list(collections), limit=5, **search)
            .items_as_dicts()
        )
        expected = sorted((i["collection"], i["id"]) for i in sequential)
    assert [(i["collection"], i["id"]) for i in found] == expected
    assert expected
