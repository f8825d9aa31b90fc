"""Discover: items from a static catalog and from a real STAC API, and the items table."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest

from pipeline.discover import CATALOG_HREF, CATALOG_ROOT, discover, discover_to_table
from pipeline.items import read_items, write_items
from pipeline.params import PipelineParams
from pipeline.stages import chip_file
from tests.small_catalog import file_asset, stac_item, write_catalog
from tests.stac_server import stac_api

ALL_COLLECTIONS = (
    "sen12ms",
    "mdas",
    "millionaid",
    "geopile",
    "bigearthnet",
    "sen12ms-cr",
    "spacenet2",
    "vaihingen",
)
UNLOCATED_COLLECTIONS = {"millionaid", "geopile"}


def _catalog_items(world: Path) -> dict[str, tuple[str, dict[str, Any], Path]]:
    """Every item of the sample catalog read as plain JSON: id -> (collection, item, path)."""
    found = {}
    catalog = json.loads((world / "catalog.json").read_text())
    for child in (link for link in catalog["links"] if link["rel"] == "child"):
        collection_path = (world / child["href"]).resolve()
        collection = json.loads(collection_path.read_text())
        for link in (link for link in collection["links"] if link["rel"] == "item"):
            item_path = (collection_path.parent / link["href"]).resolve()
            item = json.loads(item_path.read_text())
            found[item["id"]] = (collection["id"], item, item_path)
    return found


def _params(world: Path, **overrides: Any) -> PipelineParams:
    return PipelineParams(
        **{"catalog": str(world / "catalog.json"), "collections": ALL_COLLECTIONS, **overrides}
    )


def _ids(items: list[dict[str, Any]]) -> list[str]:
    return [item["id"] for item in items]


def _centre_box(item: dict[str, Any], half_width: float = 1e-4) -> tuple[float, ...]:
    west, south, east, north = item["bbox"]
    x, y = (west + east) / 2, (south + north) / 2
    return (x - half_width, y - half_width, x + half_width, y + half_width)


@pytest.fixture(scope="module")
def catalog_items(sample_world: Path) -> dict[str, tuple[str, dict[str, Any], Path]]:
    return _catalog_items(sample_world)


@pytest.fixture(scope="module")
def api_url(sample_world: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with stac_api(sample_world / "catalog.json", tmp_path_factory.mktemp("api")) as url:
        yield url


# --- static catalog ---------------------------------------------------------------------------


def test_static_finds_every_item_of_each_collection(
    sample_world: Path, catalog_items: dict
) -> None:
    items = discover(_params(sample_world))
    expected = Counter(collection for collection, _, _ in catalog_items.values())
    assert Counter(item["collection"] for item in items) == expected
    assert set(expected) == set(ALL_COLLECTIONS)
    assert sorted(_ids(items)) == sorted(catalog_items)


def test_static_order_is_collection_then_id(sample_world: Path) -> None:
    items = discover(_params(sample_world, collections=("sen12ms", "geopile", "mdas")))
    keys = [(item["collection"], item["id"]) for item in items]
    assert keys == sorted(keys)
    assert [c for c, _ in keys][0] == "geopile" and [c for c, _ in keys][-1] == "sen12ms"


def test_static_hrefs_are_absolute_and_record_their_origin(
    sample_world: Path, catalog_items: dict
) -> None:
    for item in discover(_params(sample_world, collections=("sen12ms", "millionaid"))):
        _, original, item_path = catalog_items[item["id"]]
        assert item["properties"][CATALOG_ROOT] == str(sample_world)
        for key, asset in item["assets"].items():
            written = original["assets"][key]["href"]
            assert asset[CATALOG_HREF] == written
            assert asset["href"] == str((item_path.parent / written).resolve())
            assert Path(asset["href"]).is_file()
            assert asset["file:checksum"] == original["assets"][key]["file:checksum"]


def test_static_bbox_matches_intersecting_geometries_only(
    sample_world: Path, catalog_items: dict
) -> None:
    target = catalog_items["ROIs1158_spring_1_p0"][1]
    items = discover(_params(sample_world, bbox=_centre_box(target)))
    assert _ids(items) == ["ROIs1158_spring_1_p0"]
    everywhere = discover(_params(sample_world, bbox=(-180.0, -90.0, 180.0, 90.0)))
    located = [i for i, (c, _, _) in catalog_items.items() if c not in UNLOCATED_COLLECTIONS]
    assert sorted(_ids(everywhere)) == sorted(located)  # no unlocated picture matches a bbox


def test_static_bbox_touching_an_edge_matches(sample_world: Path, catalog_items: dict) -> None:
    west, south, east, north = catalog_items["mdas_sub_area_1"][1]["bbox"]
    items = discover(
        _params(sample_world, collections=("mdas",), bbox=(east, south, east + 0.01, north))
    )
    assert _ids(items) == ["mdas_sub_area_1"]


def test_static_datetime_intersects_item_ranges(sample_world: Path) -> None:
    june = discover(
        _params(
            sample_world,
            collections=("sen12ms", "mdas", "geopile", "millionaid"),
            datetime="2017-06",
        )
    )
    by_collection = Counter(item["collection"] for item in june)
    assert by_collection == {"geopile": 15, "millionaid": 16, "sen12ms": 2}
    assert {i["id"] for i in june if i["collection"] == "sen12ms"} == {
        "ROIs1868_summer_3_p0",
        "ROIs1868_summer_3_p1",
    }


def test_static_datetime_ends_are_inclusive(sample_world: Path) -> None:
    last_second_of_spring = discover(
        _params(sample_world, collections=("sen12ms",), datetime="2017-05-31T23:59:59Z")
    )
    assert _ids(last_second_of_spring) == ["ROIs1158_spring_1_p0", "ROIs1158_spring_1_p1"]
    open_start = discover(
        _params(sample_world, collections=("sen12ms", "bigearthnet"), datetime="../2017-02-28")
    )
    assert open_start == []
    open_end = discover(
        _params(sample_world, collections=("sen12ms", "mdas"), datetime="2018-05-07T23:59:59Z/..")
    )
    assert _ids(open_end) == ["mdas_sub_area_1", "mdas_sub_area_2"]


def test_unknown_collection_names_source_and_known_ones(sample_world: Path) -> None:
    with pytest.raises(
        ValueError,
        match=r"catalog\.json: no collection\(s\) \['sen2'\]; "
        r"it has \['bigearthnet', 'geopile'",
    ):
        discover(_params(sample_world, collections=("sen12ms", "sen2")))


def test_invalid_search_parameters_are_refused(sample_world: Path) -> None:
    with pytest.raises(ValueError, match=r"pipeline\.datetime 'June' is not a datetime"):
        discover(_params(sample_world, datetime="June"))
    with pytest.raises(ValueError, match=r"west > east \(boxes crossing the antimeridian"):
        discover(_params(sample_world, bbox=(170.0, 0.0, -170.0, 1.0)))
    with pytest.raises(ValueError, match=r"expected \[west, south, east, north\] in degrees"):
        discover(_params(sample_world, bbox=(0.0, 1.0, 1.0)))
    with pytest.raises(ValueError, match=r"south > north"):
        discover(_params(sample_world, bbox=(0.0, 1.0, 1.0, 0.0)))
    with pytest.raises(ValueError, match=r"neither api_url nor catalog is set"):
        discover(PipelineParams(catalog=None, api_url=None))
    with pytest.raises(ValueError, match=r"pipeline\.collections is empty"):
        discover(_params(sample_world, collections=()))


def test_relative_hrefs_resolve_against_the_item(tmp_path: Path) -> None:
    data = tmp_path / "data" / "a.bin"
    data.parent.mkdir()
    data.write_bytes(b"abc")
    catalog = write_catalog(
        tmp_path / "cat",
        "c",
        [
            stac_item(
                "i1",
                {
                    "near": file_asset(data, href="../../../data/a.bin"),
                    "far": file_asset(data, href=str(data)),
                },
            )
        ],
    )
    (item,) = discover(PipelineParams(catalog=str(catalog), collections=("c",)))
    assert item["assets"]["near"]["href"] == str(data)
    assert item["assets"]["near"][CATALOG_HREF] == "../../../data/a.bin"
    assert item["assets"]["far"] == file_asset(data)  # absolute: kept as it is
    assert item["properties"][CATALOG_ROOT] == str(tmp_path / "cat")
    assert item["collection"] == "c"


# --- STAC API (a real rustac server) ---------------------------------------------------------

API_CASES = {
    "everything": {},
    "one_item_bbox": {"bbox": "centre of ROIs1868_summer_3_p1"},
    "whole_world": {"bbox": (-180.0, -90.0, 180.0, 90.0)},
    "month": {"datetime": "2017-06"},
    "instant_at_range_end": {"datetime": "2017-05-31T23:59:59Z"},
    "open_start": {"datetime": "../2016-01-01"},
    "bbox_and_datetime": {"bbox": (11.0, 48.0, 13.0, 49.0), "datetime": "2017-03-01/2017-06-13"},
    "nothing": {"bbox": (-150.0, -10.0, -149.0, -9.0)},
}


@pytest.mark.parametrize("case", sorted(API_CASES))
def test_api_finds_the_same_items_as_the_static_catalog(
    case: str, sample_world: Path, catalog_items: dict, api_url: str
) -> None:
    search = dict(API_CASES[case])
    if isinstance(search.get("bbox"), str):
        search["bbox"] = _centre_box(catalog_items[search["bbox"].split()[-1]][1])
    static = discover(_params(sample_world, **search))
    from_api = discover(_params(sample_world, api_url=api_url, **search))
    assert _ids(from_api) == _ids(static)
    assert [i["collection"] for i in from_api] == [i["collection"] for i in static]
    assert [{k: a["href"] for k, a in i["assets"].items()} for i in from_api] == [
        {k: a["href"] for k, a in i["assets"].items()} for i in static
    ]
    assert all(i["properties"][CATALOG_ROOT] == api_url for i in from_api)
    if case == "nothing":
        assert static == []
    if case == "everything":
        assert len(static) == len(catalog_items)


def test_api_unknown_collection_is_refused(sample_world: Path, api_url: str) -> None:
    with pytest.raises(ValueError, match=rf"{api_url}: no collection\(s\) \['sen2'\]"):
        discover(_params(sample_world, api_url=api_url, collections=("sen2",)))


# --- items table ------------------------------------------------------------------------------


def test_table_round_trips_the_sample_items(sample_world: Path, tmp_path: Path) -> None:
    items = discover(_params(sample_world))
    path = write_items(tmp_path / "items.parquet", items)
    back = read_items(path)
    assert len(back) == len(items)
    for written, read in zip(items, back, strict=True):
        expected = json.loads(json.dumps(written))
        for asset in expected["assets"].values():
            if asset.get("proj:code", "") is None:  # explicit nulls read back as absent
                del asset["proj:code"]
        assert read == expected


def test_table_keeps_null_geometry_as_a_real_null(tmp_path: Path) -> None:
    data = tmp_path / "a.bin"
    data.write_bytes(b"abc")
    located = stac_item(
        "located", {"image": file_asset(data, **{"proj:shape": [2, 3]})}, bbox=[1.0, 2.0, 3.0, 4.0]
    )
    unlocated = stac_item("unlocated", {"image": file_asset(data, gsd=0.5)}, when=None)
    unlocated["properties"].update(
        start_datetime="1990-01-01T00:00:00Z", end_datetime="2020-06-30T23:59:59Z"
    )
    items = [{**unlocated, "collection": "c"}, {**located, "collection": "c"}]
    path = write_items(tmp_path / "t" / "items.parquet", items)
    assert read_items(path) == items
    table = pq.read_table(path)
    assert table.column("geometry").to_pylist()[0] is None
    assert table.column("bbox").to_pylist()[0] is None
    assert table.column("geometry").to_pylist()[1] is not None
    assert b"geo" in table.schema.metadata and b"stac-geoparquet" in table.schema.metadata
    assert sorted(p.name for p in path.parent.iterdir()) == ["items.parquet"]  # no temp left


def test_table_keeps_paths_inside_the_project_relative_so_it_moves_with_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    outside = tmp_path / "elsewhere.bin"
    outside.write_bytes(b"far")
    tables, chip_names = {}, set()
    for name in ("here", "moved"):
        project = tmp_path / name
        data = project / "data" / "a.bin"
        data.parent.mkdir(parents=True)
        data.write_bytes(b"abc")
        item = stac_item(
            "x",
            {
                "image": file_asset(data),
                "far": file_asset(outside),
                "remote": {"href": "https://example.com/b.tif"},
            },
            bbox=[1.0, 2.0, 3.0, 4.0],
        )
        item["links"] = [{"rel": "self", "href": str(project / "data" / "x.json")}]
        item["properties"][CATALOG_ROOT] = str(project / "data")
        item = {**item, "collection": "c"}
        monkeypatch.chdir(project)
        path = write_items(project / "items.parquet", [item])
        row = pq.read_table(path).to_pylist()[0]
        assert {key: asset["href"] for key, asset in row["assets"].items() if asset} == {
            "image": "data/a.bin",
            "far": str(outside),
            "remote": "https://example.com/b.tif",
        }
        assert row["links"][0]["href"] == "data/x.json" and row[CATALOG_ROOT] == "data"
        assert read_items(path) == [item]  # absolute again, in the project it is read in
        tables[name] = path.read_bytes()
        chip_names.add(chip_file(PipelineParams(), read_items(path)).name)
    assert tables["here"] == tables["moved"]
    assert len(chip_names) == 1


def test_a_table_rewritten_from_its_items_has_the_same_bytes_in_every_process(
    tmp_path: Path,
) -> None:
    data = tmp_path / "a.bin"
    data.write_bytes(b"abc")
    item = stac_item("x", {"image": file_asset(data)}, bbox=[1.0, 2.0, 3.0, 4.0])
    item["properties"].update(
        start_datetime="2017-01-01T00:00:00Z",
        end_datetime="2017-12-31T23:59:59Z",
        created="2018-01-01T00:00:00Z",
    )
    first = write_items(tmp_path / "first.parquet", [{**item, "collection": "c"}])
    rewrite = (
        "import sys; from pathlib import Path; from pipeline.items import read_items, "
        "write_items; write_items(Path(sys.argv[2]), read_items(Path(sys.argv[1])))"
    )
    written = set()
    for seed in ("1", "2", "3", "4"):  # hash seeds that order Python's string sets differently
        out = tmp_path / f"seed{seed}.parquet"
        subprocess.run(
            [sys.executable, "-c", rewrite, str(first), str(out)],
            check=True,
            cwd=Path(__file__).resolve().parents[1],
            env={**os.environ, "PYTHONHASHSEED": seed},
        )
        written.add(out.read_bytes())
    assert len(written) == 1


def test_table_of_unlocated_items_only(sample_world: Path, tmp_path: Path) -> None:
    items = discover(_params(sample_world, collections=("millionaid",)))
    back = read_items(write_items(tmp_path / "items.parquet", items))
    assert [i["id"] for i in back] == _ids(items)
    assert all(i["geometry"] is None and "bbox" not in i for i in back)
    assert [i["assets"] for i in back] == [
        {k: {f: v for f, v in a.items() if v is not None} for k, a in i["assets"].items()}
        for i in items
    ]


def test_table_of_no_items(tmp_path: Path) -> None:
    assert read_items(write_items(tmp_path / "empty.parquet", [])) == []


def test_table_refuses_items_with_conflicting_field_types(tmp_path: Path) -> None:
    a = {**stac_item("a", {}, bbox=[0.0, 0.0, 1.0, 1.0]), "collection": "c"}
    b = {**stac_item("b", {}, bbox=[0.0, 0.0, 1.0, 1.0]), "collection": "c"}
    a["properties"]["label"] = 3
    b["properties"]["label"] = "three"
    with pytest.raises(ValueError, match=r"bad\.parquet: the items cannot be written as one"):
        write_items(tmp_path / "bad.parquet", [a, b])
    assert not (tmp_path / "bad.parquet").exists()


def test_discover_to_table_writes_the_items_table(sample_world: Path, tmp_path: Path) -> None:
    params = _params(sample_world, collections=("mdas", "geopile"), work_dir=tmp_path / "work")
    path = discover_to_table(params)
    assert path == params.items_table
    assert _ids(read_items(path)) == _ids(discover(params))
