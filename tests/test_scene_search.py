"""The items of one scene found by a search: reference first, then its partners nearest in time.

Over a static catalog of two sample classification scenes (Sentinel-2 L2A and its Sentinel-1
partner, each scene on its own ground), and the same catalog served as a STAC API.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pystac
import pytest

from catalogs.sample.task_scenes import render_task_scene
from catalogs.stac import write_catalog
from catalogs.stac_search import CATALOG_ROOT
from model.inference.scene_inputs import ScenePolicy
from model.inference.scene_search import SceneSearchError, find_scene_items
from tests.stac_server import stac_api

S2, S1 = "sentinel-2-l2a-sample", "sentinel-1-sample"
OVER_A = (11.83, 48.21, 11.84, 48.22)  # inside scene A (seed 0) only
OVER_B = (11.79, 48.415, 11.80, 48.425)  # inside scene B (seed 1) only
# A strip of A's top and a larger part of B's bottom: B's Sentinel-2 covers more of it.
MOSTLY_B = (11.80, 48.225, 11.83, 48.42)
NOWHERE = (0.0, 0.0, 1.0, 1.0)
B_S1_DAYS = 3  # B's Sentinel-1 pass, days after its Sentinel-2 scene


def _scene_items(folder: Path, seed: int, suffix: str) -> tuple[pystac.Item, pystac.Item]:
    """The (Sentinel-2, Sentinel-1) items of a rendered scene, ids suffixed, hrefs absolute."""
    reference, partner = (
        pystac.Item.from_file(str(path))
        for path in render_task_scene("classification", folder, size_px=256, seed=seed)
    )
    for item in (reference, partner):
        item.id += suffix
        item.make_asset_hrefs_absolute()
    return reference, partner


def _later(item: pystac.Item, days: int, item_id: str) -> pystac.Item:
    copy = item.clone()
    copy.id = item_id
    assert item.datetime is not None
    copy.datetime = item.datetime + timedelta(days=days)
    return copy


def _collection(collection_id: str, items: list[pystac.Item]) -> pystac.Collection:
    collection = pystac.Collection(
        collection_id, f"{collection_id} of sample scenes", pystac.Extent.from_items(items)
    )
    collection.add_items(items)
    return collection


@pytest.fixture(scope="module")
def catalog(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Scenes A and B; A has two later Sentinel-1 passes (5 and 40 days), B's is 3 days on."""
    root = tmp_path_factory.mktemp("scene_catalog")
    s2_a, s1_a = _scene_items(root / "scenes" / "a", 0, "")
    s2_b, s1_b = _scene_items(root / "scenes" / "b", 1, "_b")
    s1_b.datetime = _later(s1_b, B_S1_DAYS, s1_b.id).datetime
    s1_items = [s1_a, _later(s1_a, 5, "s1_a_day5"), _later(s1_a, 40, "s1_a_day40"), s1_b]
    collections = [_collection(S2, [s2_a, s2_b]), _collection(S1, s1_items)]
    return write_catalog(root, collections, "scenes", "two sample classification scenes")


@pytest.fixture(scope="module")
def api_url(catalog: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with stac_api(catalog, tmp_path_factory.mktemp("api")) as url:
        yield url


def _find(source: str | Path, bbox: tuple[float, ...], **options: Any) -> list[dict[str, Any]]:
    arguments: dict[str, Any] = {
        "api": False,
        "collections": (S2, S1),
        "datetime": None,
        "policy": ScenePolicy(),
    }
    return find_scene_items(str(source), bbox=bbox, **{**arguments, **options})


def _ids(items: list[dict[str, Any]]) -> list[tuple[str, str]]:
    return [(item["collection"], item["id"]) for item in items]


def _hrefs(item: dict[str, Any]) -> dict[str, str]:
    return {key: asset["href"] for key, asset in item["assets"].items()}


def test_a_bbox_over_scene_a_gives_its_sentinel2_then_sentinel1_nearest_first(
    catalog: Path,
) -> None:
    items = _find(catalog, OVER_A)
    assert _ids(items) == [
        (S2, "classification_scene"),
        (S1, "classification_scene_s1"),
        (S1, "s1_a_day5"),  # the day-40 pass is beyond max_days
    ]
    scene = catalog.parent / "scenes" / "a"
    assert items[0]["assets"]["s2"]["href"] == str(scene / "s2.tif")
    assert items[1]["assets"]["s1"]["href"] == str(scene / "s1.tif")
    assert all(item["properties"][CATALOG_ROOT] == str(catalog.parent) for item in items)
    longer = _find(catalog, OVER_A, max_days=40)
    assert [item["id"] for item in longer][1:] == [
        "classification_scene_s1",
        "s1_a_day5",
        "s1_a_day40",
    ]


def test_a_bbox_over_scene_b_gives_scene_b(catalog: Path) -> None:
    assert _ids(_find(catalog, OVER_B)) == [
        (S2, "classification_scene_b"),
        (S1, "classification_scene_s1_b"),
    ]


def test_the_reference_covers_the_largest_part_of_the_bbox(catalog: Path) -> None:
    assert _find(catalog, MOSTLY_B)[0]["id"] == "classification_scene_b"


def test_the_datetime_picks_the_reference_and_partners_are_searched_around_it(
    catalog: Path,
) -> None:
    # The day's search matches no Sentinel-1 pass of B; its pass 3 days on is still found.
    items = _find(catalog, OVER_B, datetime="2017-06-15")
    assert _ids(items)[1:] == [(S1, "classification_scene_s1_b")]
    with pytest.raises(SceneSearchError) as raised:
        _find(catalog, OVER_B, datetime="2017-06-14")
    assert "no item of collection 'sentinel-2-l2a-sample' matches" in str(raised.value)


def test_no_reference_names_the_search(catalog: Path) -> None:
    with pytest.raises(SceneSearchError) as raised:
        _find(catalog, NOWHERE, datetime="2017-06")
    assert str(raised.value) == (
        f"{catalog}: no item of collection {S2!r} matches the search (collections "
        f"[{S2!r}, {S1!r}], bbox [0.0, 0.0, 1.0, 1.0], datetime '2017-06', max_days 30.0)"
    )


def test_no_partner_within_max_days_names_the_collection_and_the_reference(
    catalog: Path,
) -> None:
    with pytest.raises(SceneSearchError) as raised:
        _find(catalog, OVER_B, max_days=2.0)
    assert str(raised.value) == (
        f"{catalog}: no item of collection {S1!r} overlaps the reference item "
        "'classification_scene_b' within 2.0 days of 2017-06-15T10:30:00Z (collections "
        f"[{S2!r}, {S1!r}], bbox {list(OVER_B)}, datetime None, max_days 2.0)"
    )


def test_an_invalid_search_names_the_option(catalog: Path) -> None:
    with pytest.raises(ValueError, match=r"^--bbox \[2, 0, 1, 1\]: west > east"):
        _find(catalog, (2, 0, 1, 1))


def test_an_asset_href_escaping_the_catalog_is_refused(catalog: Path, tmp_path: Path) -> None:
    hostile = tmp_path / "hostile"
    shutil.copytree(catalog.parent, hostile)
    item_file = hostile / S2 / "classification_scene" / "classification_scene.json"
    record = json.loads(item_file.read_text())
    record["assets"]["s2"]["href"] = "../../../../elsewhere/s2.tif"
    item_file.write_text(json.dumps(record))
    with pytest.raises(ValueError) as raised:
        _find(hostile / "catalog.json", OVER_A)
    assert str(raised.value) == (
        f"{hostile / 'catalog.json'}: item 'classification_scene', asset 's2': href "
        f"'../../../../elsewhere/s2.tif' resolves outside the catalog root {hostile} "
        "(allow its folder with --allowed-local-folder)"
    )


def test_a_stac_api_gives_the_static_catalogs_items(catalog: Path, api_url: str) -> None:
    policy = ScenePolicy(allow_private_hosts=True, allow_local_files_from_remote=True)
    for bbox in (OVER_A, OVER_B):
        static = _find(catalog, bbox)
        served = _find(api_url, bbox, api=True, policy=policy)
        assert _ids(served) == _ids(static)
        assert list(map(_hrefs, served)) == list(map(_hrefs, static))
        assert all(item["properties"][CATALOG_ROOT] == api_url for item in served)


def test_a_stac_api_names_no_local_file_without_the_option(api_url: str) -> None:
    policy = ScenePolicy(allow_private_hosts=True)
    with pytest.raises(ValueError, match="may not name the local file") as raised:
        _find(api_url, OVER_A, api=True, policy=policy)
    assert "--allow-local-files-from-remote" in str(raised.value)
