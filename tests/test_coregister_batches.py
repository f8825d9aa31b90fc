"""The coregister stage's batches: planned from the fetched table's columns, cut where the
items' ids say (so a new item changes one batch), one chip file per batch whose failures a
rerun reports again without retrying them."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq
import pytest

from pipeline.chips import ChipFile
from pipeline.failures import Failure
from pipeline.items import read_items, write_items
from pipeline.pairing import PARTNERS
from pipeline.params import PictureParams, PipelineParams
from pipeline.stages import (
    LARGE_ITEM_PX,
    MAX_BATCH_FACTOR,
    PlannedUnit,
    batch_items_of,
    batch_task,
    batches,
    coregister_batch,
    plan_units,
    work_units,
)
from tests.data.coregister import data


def _units(ids: list[str], collection: str = "pictures") -> list[PlannedUnit]:
    return [
        PlannedUnit(row, None, collection, item_id, False)
        for row, item_id in enumerate(sorted(ids))
    ]


def _ids(cut: list[list[PlannedUnit]]) -> set[tuple[str, ...]]:
    return {tuple(unit.id for unit in batch) for batch in cut}


def test_batches_hold_the_configured_items_on_average_and_never_too_many() -> None:
    cut = batches(_units([f"item{i:05d}" for i in range(4000)]), 32)
    sizes = [len(batch) for batch in cut]
    assert sum(sizes) == 4000 and max(sizes) <= MAX_BATCH_FACTOR * 32
    assert 16 < 4000 / len(cut) < 64  # about 32 on average


def test_an_item_added_to_the_catalog_changes_one_batch() -> None:
    ids = [f"item{i:05d}" for i in range(0, 4000, 2)]
    before = _ids(batches(_units(ids), 16))
    for new in ("item00101", "item01999", "item03333"):
        after = _ids(batches(_units([*ids, new]), 16))
        changed = before - after
        assert len(changed) == 1, new  # the batch it joins (split in two if it ends one)
        (old,) = changed
        assert sorted({*old, new}) == sorted(i for batch in after - before for i in batch)


def test_a_batch_holds_one_collection_and_a_large_item_alone() -> None:
    units = [*_units(["a", "b", "c"], "geopile"), *_units(["a", "b"], "millionaid")]
    units[1] = PlannedUnit(1, None, "geopile", "b", True)
    assert [[(u.collection, u.id) for u in batch] for batch in batches(units, 1000)] == [
        [("geopile", "a")],
        [("geopile", "b")],
        [("geopile", "c")],
        [("millionaid", "a"), ("millionaid", "b")],
    ]


def _item(
    collection: str,
    item_id: str,
    shape: list[int] | None = None,
    partners: dict[str, list[str]] | None = None,
) -> dict[str, Any]:
    asset: dict[str, Any] = {"href": f"/data/{collection}/{item_id}.tif", "roles": ["data"]}
    if shape is not None:
        asset["proj:shape"] = shape
    properties: dict[str, Any] = {"datetime": "2020-06-01T10:00:00Z"}
    if partners is not None:
        properties[PARTNERS] = partners
    return {
        "type": "Feature",
        "stac_version": "1.1.0",
        "id": item_id,
        "collection": collection,
        "geometry": None,
        "properties": properties,
        "links": [],
        "assets": {"data": asset},
    }


def test_planned_units_are_the_work_units_of_the_table(tmp_path: Path) -> None:
    # References of pairs across collections carry their fetched partners (a partner may be
    # shared, or missing: not fetched); partners are no units of their own; a reference
    # whose partner is a large scene is large.
    items = [
        _item("s1", "p1", [256, 256]),
        _item("s1", "p2", [20000, 20000]),
        _item("s1", "p3", [256, 256]),
        _item("s2", "a", [256, 256], {"s1": ["p1", "p3"]}),
        _item("s2", "b", [256, 256], {"s1": ["p2", "gone"]}),
        _item("s2", "c", [256, 256], {"s1": ["p1"]}),
        _item("s2", "d", [256, 256]),
    ]
    path = write_items(tmp_path / "fetched.parquet", items)
    table = pq.read_table(path)
    units = plan_units(table)
    assert [(u.collection, u.id, u.partner_rows, u.large) for u in units] == [
        ("s2", "a", (0, 2), False),
        ("s2", "b", (1,), True),
        ("s2", "c", (0,), False),
        ("s2", "d", None, False),
    ]
    assert 20000 * 20000 > LARGE_ITEM_PX >= 256 * 256
    planned = [
        item for batch in batches(units, 2) for item in batch_items_of(batch_task(table, batch))
    ]
    assert planned == work_units(read_items(path))


def _pictures_params(tmp_path: Path) -> PipelineParams:
    return PipelineParams(
        catalog=None, work_dir=tmp_path / "work", pictures=PictureParams(chip_px=32)
    )


def test_a_batch_keeps_its_failures_and_a_rerun_reports_them_without_retrying(
    tmp_path: Path,
) -> None:
    good = data.write_picture(tmp_path / "good.png", np.full((40, 40, 3), 7, dtype=np.uint8))
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"not a picture")
    batch = [
        data.stac_item(name, "pictures", {"image": data.raster_asset(path, "rgb")})
        for name, path in (("bad", bad), ("good", good))
    ]
    params = _pictures_params(tmp_path)
    first = coregister_batch(batch, params)
    assert first.locations == 1
    assert [(f.stage, f.item_id, f.path) for f in first.failures] == [
        ("coregister", "bad", str(bad))
    ]
    assert first.failures[0].reason.startswith("unreadable picture (")
    assert [loc["item_id"] for loc in ChipFile(first.path).locations] == ["good"]
    written = os.stat(first.path).st_mtime_ns
    bad.unlink()  # a retry would now fail with another reason
    again = coregister_batch(batch, params)
    assert again == first and os.stat(first.path).st_mtime_ns == written
    assert isinstance(again.failures[0], Failure)


def test_a_batch_of_failures_only_is_written_and_holds_no_location(tmp_path: Path) -> None:
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"")
    batch = [data.stac_item("bad", "pictures", {"image": data.raster_asset(bad, "rgb")})]
    result = coregister_batch(batch, _pictures_params(tmp_path))
    assert result.locations == 0 and [f.item_id for f in result.failures] == ["bad"]
    assert ChipFile(result.path).locations == []
    assert result.path.with_suffix(".chunks").stat().st_size == 0


@pytest.mark.parametrize("batch_items", [0, 100_001])
def test_batch_items_out_of_range_is_refused(tmp_path: Path, batch_items: int) -> None:
    from pipeline.params import ParamsError, load_params

    path = tmp_path / "params.yaml"
    path.write_text(f"pipeline:\n  coregister:\n    batch_items: {batch_items}\n")
    with pytest.raises(ParamsError, match="pipeline.coregister.batch_items"):
        load_params(path)
