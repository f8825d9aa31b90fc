"""Discover's Arrow path: workers turn their chunks of items into tables, the main process
concatenates and sorts them; the file is the one the item dicts would give."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest
import stac_geoparquet.arrow as stac_arrow
from pystac.utils import datetime_to_str, str_to_datetime

from pipeline import static_catalog
from pipeline.cluster import Executor, executor
from pipeline.discover import discover, discover_table, discover_to_table
from pipeline.items import (
    concat_tables,
    items_table,
    read_items,
    sorted_by_id,
    table_items,
    table_rows_as_items,
    write_items,
)
from pipeline.params import PipelineParams
from tests.small_catalog import file_asset, stac_item, write_catalog

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


@pytest.fixture(scope="module")
def cluster() -> Iterator[Executor]:
    with executor(2) as ex:
        yield ex


def _executor(workers: int, cluster: Executor) -> Executor:
    return cluster if workers else Executor(None)


@pytest.mark.parametrize("workers", [0, 2])
def test_the_items_table_has_the_bytes_the_item_dicts_give(
    workers: int,
    sample_world: Path,
    tmp_path: Path,
    cluster: Executor,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    params = PipelineParams(
        catalog=str(sample_world / "catalog.json"),
        collections=SAMPLE_COLLECTIONS,
        work_dir=tmp_path / "work",
    )
    ex = _executor(workers, cluster)
    from_dicts = write_items(tmp_path / "dicts.parquet", discover(params, ex))
    assert discover_to_table(params, ex).read_bytes() == from_dicts.read_bytes()
    monkeypatch.setattr(static_catalog, "CHUNK_ITEMS", 3)  # chunks within a collection
    table = discover_table(params, ex)
    assert table.num_rows > 3 * len(SAMPLE_COLLECTIONS)
    assert table_rows_as_items(table) == read_items(from_dicts)


def _catalog(tmp_path: Path, labels: list[object]) -> Path:
    data = tmp_path / "cat" / "data.tif"
    data.parent.mkdir(parents=True, exist_ok=True)
    data.write_bytes(b"abc")
    items = []
    for n, label in enumerate(labels):
        item = stac_item(
            f"i{n}", {"image": file_asset(data)}, None if n == 1 else [n, 0.0, n + 1.0, 1.0]
        )
        if label is not None:
            item["properties"]["label"] = label
        items.append(item)
    return write_catalog(tmp_path / "cat", "c", items)


@pytest.mark.parametrize("workers", [0, 2])
def test_chunks_whose_fields_differ_are_unified_as_one_list_of_items_is(
    workers: int, tmp_path: Path, cluster: Executor, monkeypatch: pytest.MonkeyPatch
) -> None:
    # An integer in one chunk, a float in another, a field missing, an unlocated item.
    catalog = _catalog(tmp_path, [3, 2.5, None, 7])
    params = PipelineParams(catalog=str(catalog), collections=("c",), work_dir=tmp_path / "work")
    monkeypatch.setattr(static_catalog, "CHUNK_ITEMS", 1)
    path = discover_to_table(params, _executor(workers, cluster))
    items = discover(params)
    assert path.read_bytes() == write_items(tmp_path / "dicts.parquet", items).read_bytes()
    assert [item["properties"].get("label") for item in read_items(path)] == [3.0, 2.5, None, 7.0]
    assert read_items(path)[1]["geometry"] is None


@pytest.mark.parametrize("workers", [0, 2])
def test_items_whose_fields_differ_in_type_are_refused_by_name(
    workers: int, tmp_path: Path, cluster: Executor, monkeypatch: pytest.MonkeyPatch
) -> None:
    catalog = _catalog(tmp_path, [3, "three", 4])
    params = PipelineParams(catalog=str(catalog), collections=("c",), work_dir=tmp_path / "work")
    ex = _executor(workers, cluster)
    first, last = (catalog.parent / "c" / name / f"{name}.json" for name in ("i0", "i2"))
    with pytest.raises(
        ValueError,
        match=rf"^{catalog}, item files {first} to {last}: the "
        r"items cannot be written as one table: ",
    ):
        discover_to_table(params, ex)
    monkeypatch.setattr(static_catalog, "CHUNK_ITEMS", 1)  # each chunk alone is fine
    with pytest.raises(
        ValueError,
        match=rf"^{params.items_table}: the items cannot be "
        r"written as one table: .*label",
    ):
        discover_to_table(params, ex)
    assert not params.items_table.exists()


def test_a_geoparquet_catalog_gives_the_table_its_item_dicts_give(
    sample_world: Path, tmp_path: Path
) -> None:
    work = tmp_path / "work"
    path = discover_to_table(
        PipelineParams(
            catalog=str(sample_world / "catalog.json"),
            collections=SAMPLE_COLLECTIONS,
            work_dir=work,
        )
    )
    params = PipelineParams(
        catalog=str(path), collections=("mdas", "geopile"), work_dir=tmp_path / "again"
    )
    table = discover_table(params)
    assert table_rows_as_items(table) == read_items(
        write_items(tmp_path / "dicts.parquet", discover(params))
    )
    assert {item["collection"] for item in table_items(table)} == {"mdas", "geopile"}


def test_tables_are_concatenated_in_order_and_sorted_by_collection_and_id() -> None:
    def table(*keys: tuple[str, str]) -> pa.Table:
        return items_table(
            [{**stac_item(i, {}, [0.0, 0.0, 1.0, 1.0]), "collection": c} for c, i in keys], "test"
        )

    parts = [table(("b", "2"), ("a", "9")), table(), table(("a", "10"), ("b", "1"))]
    merged = concat_tables(parts, "test")
    assert merged.column("id").to_pylist() == ["2", "9", "10", "1"]
    assert [(i["collection"], i["id"]) for i in table_items(sorted_by_id(merged))] == [
        ("a", "10"),
        ("a", "9"),
        ("b", "1"),
        ("b", "2"),
    ]
    assert concat_tables([table()], "test").num_rows == 0


def _without_nulls(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _without_nulls(v) for k, v in value.items() if v is not None}
    return [_without_nulls(v) for v in value] if isinstance(value, list) else value


@pytest.mark.parametrize(
    "names",
    [[path.stem] for path in sorted(STAC_ITEMS.glob("*.json"))]
    + [
        [
            path.stem
            for path in sorted(STAC_ITEMS.glob("*.json"))
            if path.stem != "pc_3dep-lidar-dsm"
        ]
    ],
)
def test_table_items_are_the_item_dicts_stac_geoparquet_gives(names: list[str]) -> None:
    # table_items converts a whole table at once, stac-geoparquet a row at a time: its dicts
    # (published items, one by one and together; stac-geoparquet cannot read back the 3DEP
    # item's proj:geometry beside items without one), with what table_items does on top:
    # nulls dropped, properties in column order, timestamps in pystac's form.
    items = [json.loads((STAC_ITEMS / f"{name}.json").read_text()) for name in names]
    table = items_table(items, "test")
    position = {name: index for index, name in enumerate(table.schema.names)}
    timestamps = [field.name for field in table.schema if pa.types.is_timestamp(field.type)]
    expected = []
    for item in map(_without_nulls, stac_arrow.stac_table_to_items(table)):
        properties = dict(sorted(item["properties"].items(), key=lambda kv: position[kv[0]]))
        for key in set(timestamps) & set(properties):
            properties[key] = datetime_to_str(str_to_datetime(properties[key]))
        properties.setdefault("datetime", None)
        expected.append({**item, "properties": properties})
    assert json.dumps(table_items(table)) == json.dumps(expected)
