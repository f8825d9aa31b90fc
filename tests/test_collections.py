"""The source Collections built from ``catalogs/sources.yaml`` (``catalogs.collections``)."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pystac
import pytest

from catalogs.collections import source_collection, source_info, sources
from catalogs.sensors import registry
from catalogs.stac import EXTENSIONS, validate_core

SOURCE_IDS = sorted(sources())
# STAC provider roles (STAC 1.1 Collection spec, Provider Object).
PROVIDER_ROLES = {"licensor", "producer", "processor", "host"}
# The license field of STAC 1.1 common metadata: an SPDX id or "other" (no spaces, so no
# SPDX expressions).
LICENSE_PATTERN = re.compile(r"^[\w\-.+]+$")
PER_FILE_FIELDS = (
    "href",
    "file:checksum",
    "file:size",
    "proj:shape",
    "proj:transform",
    "proj:bbox",
    "proj:code",
    "proj:wkt2",
)

# Two synthetic items in known places and times: their union is the sample extent.
ITEM_A_BBOX = [10.0, 47.0, 10.5, 47.5]
ITEM_A_TIME = datetime(2019, 3, 1, 10, 30, tzinfo=UTC)
ITEM_B_BBOX = [11.0, 46.0, 11.2, 48.0]
ITEM_B_RANGE = (datetime(2018, 1, 1, tzinfo=UTC), datetime(2018, 12, 31, 23, 59, 59, tzinfo=UTC))
UNION_BBOX = [10.0, 46.0, 11.2, 48.0]
UNION_INTERVAL = [ITEM_B_RANGE[0], ITEM_A_TIME]


def _text(value: str) -> str:
    """A folded YAML text as the collection holds it: whitespace runs collapsed."""
    return " ".join(value.split())


def _time(value: str | None) -> datetime | None:
    return datetime.fromisoformat(value.replace("Z", "+00:00")) if value else None


def _asset(key: str, sensor: str, index: int) -> pystac.Asset:
    """An asset carrying the per-file fields a builder writes, plus fields that describe it."""
    if sensor == "labels":
        return pystac.Asset(
            href=f"/data/item{index}/{key}.geojson",
            media_type=pystac.MediaType.GEOJSON,
            roles=["labels"],
            extra_fields={"file:checksum": "1220" + f"{index:064x}", "file:size": 1000 + index},
        )
    return pystac.Asset(
        href=f"/data/item{index}/{key}.tif",
        media_type=pystac.MediaType.COG,
        roles=["data"],
        extra_fields={
            "msgfm:sensor": sensor,
            "proj:code": "EPSG:32632",
            "proj:shape": [64 + index, 64 + index],
            "proj:transform": [10.0, 0.0, 500000.0 + index, 0.0, -10.0, 5200000.0],
            "proj:bbox": [500000.0 + index, 5199360.0, 500640.0 + index, 5200000.0],
            "file:checksum": "1220" + f"{index:064x}",
            "file:size": 4096 + index,
        },
    )


def _items(source: str) -> list[pystac.Item]:
    """Two georeferenced items with one asset per asset key of ``source``, and one without."""
    keys = source_info(source)["assets"]

    def item(
        item_id: str,
        bbox: list[float] | None,
        when: datetime | None,
        properties: dict[str, Any],
        index: int,
    ) -> pystac.Item:
        geometry = (
            None
            if bbox is None
            else {
                "type": "Polygon",
                "coordinates": [
                    [
                        [bbox[0], bbox[1]],
                        [bbox[2], bbox[1]],
                        [bbox[2], bbox[3]],
                        [bbox[0], bbox[3]],
                        [bbox[0], bbox[1]],
                    ]
                ],
            }
        )
        it = pystac.Item(item_id, geometry, bbox, when, properties)
        for key, sensor in keys.items():
            it.add_asset(key, _asset(key, sensor, index))
        it.stac_extensions = [EXTENSIONS["proj"], EXTENSIONS["file"]]
        return it

    return [
        item(f"{source}-a", ITEM_A_BBOX, ITEM_A_TIME, {}, 1),
        item(
            f"{source}-b",
            ITEM_B_BBOX,
            None,
            {
                "start_datetime": ITEM_B_RANGE[0].isoformat().replace("+00:00", "Z"),
                "end_datetime": ITEM_B_RANGE[1].isoformat().replace("+00:00", "Z"),
            },
            2,
        ),
        # No georeference (as Million-AID / GeoPile pictures): must not move the union.
        item(f"{source}-c", None, datetime(2018, 6, 1, tzinfo=UTC), {}, 3),
    ]


def _collection_dict(collection: pystac.Collection, root: Path) -> dict[str, Any]:
    """The collection as written to disk (items get hrefs, as in ``write_catalog``)."""
    collection.normalize_hrefs(str(root))
    return collection.to_dict()


def test_all_eight_sources_are_described() -> None:
    assert SOURCE_IDS == sorted(
        [
            "sen12ms",
            "mdas",
            "millionaid",
            "geopile",
            "bigearthnet",
            "sen12ms-cr",
            "spacenet2",
            "vaihingen",
        ]
    )


def test_roles_split_pretraining_from_downstream() -> None:
    roles = {source: source_info(source)["role"] for source in SOURCE_IDS}
    assert {s for s, r in roles.items() if r == "pretraining"} == {
        "sen12ms",
        "mdas",
        "millionaid",
        "geopile",
    }
    assert {s for s, r in roles.items() if r == "downstream"} == {
        "bigearthnet",
        "sen12ms-cr",
        "spacenet2",
        "vaihingen",
    }


def test_unknown_source_names_the_known_ones() -> None:
    with pytest.raises(KeyError, match="unknown source 'nope'.*sen12ms"):
        source_info("nope")


def test_validate_core_rejects_a_broken_collection() -> None:
    """Guards the tests below: the validator does report errors."""
    broken = source_collection("sen12ms", items=[]).to_dict()
    del broken["license"]
    broken["extent"]["temporal"]["interval"] = [["yesterday", None]]
    errors = validate_core(broken)
    assert any("license" in e for e in errors)
    assert any(e.startswith("extent/temporal/interval/0/0") for e in errors)


@pytest.mark.parametrize("sample", [False, True])
@pytest.mark.parametrize("source", SOURCE_IDS)
def test_collection_without_items_is_valid_stac(source: str, sample: bool) -> None:
    collection = source_collection(source, items=[], sample=sample)
    assert validate_core(collection.to_dict()) == []


@pytest.mark.parametrize("sample", [False, True])
@pytest.mark.parametrize("source", SOURCE_IDS)
def test_collection_with_items_is_valid_stac(source: str, sample: bool, tmp_path: Path) -> None:
    collection = source_collection(source, items=_items(source), sample=sample)
    stac = _collection_dict(collection, tmp_path)
    assert validate_core(stac) == []
    assert [link["href"] for link in stac["links"] if link["rel"] == "item"] == [
        str(tmp_path / f"{source}-{x}" / f"{source}-{x}.json") for x in "abc"
    ]


@pytest.mark.parametrize("source", SOURCE_IDS)
def test_identity_and_citation_match_the_yaml(source: str) -> None:
    info = source_info(source)
    stac = source_collection(source, items=[]).to_dict()
    assert stac["id"] == source
    assert stac["title"] == info["title"]
    assert stac["description"] == _text(info["description"])
    assert stac["license"] == info["license"]
    assert stac["sci:citation"] == _text(info["citation"])
    assert stac["sci:doi"] == info["doi"]
    assert stac["keywords"] == info["keywords"]
    assert stac["msgfm:role"] == info["role"]
    assert stac["msgfm:layout"] == info["layout"]
    assert stac["msgfm:pairs"] == info["pairs"]
    assert EXTENSIONS["scientific"] in stac["stac_extensions"]
    via = [link for link in stac["links"] if link["rel"] == "via"]
    assert via == [
        {"rel": "via", "href": info["originals"]["href"], "title": info["originals"]["title"]}
    ]


@pytest.mark.parametrize("source", SOURCE_IDS)
def test_license_is_spdx_or_other_with_its_terms(source: str) -> None:
    info = source_info(source)
    assert LICENSE_PATTERN.fullmatch(info["license"]), info["license"]
    assert ("license_note" in info) == ("license_href" in info)
    if info["license"] == "other":
        assert info.get("license_note") and info.get("license_href")
    stac = source_collection(source, items=[]).to_dict()
    license_links = [link for link in stac["links"] if link["rel"] == "license"]
    if "license_href" in info:
        assert info["license_href"].startswith("https://")
        assert [link["href"] for link in license_links] == [info["license_href"]]
        assert stac["msgfm:license_note"] == _text(info["license_note"])
    else:
        assert license_links == []
        assert "msgfm:license_note" not in stac


@pytest.mark.parametrize("source", SOURCE_IDS)
def test_extent_is_the_yaml_one_when_not_sample(source: str) -> None:
    info = source_info(source)
    expected_interval = [_time(t) for t in info["extent"]["interval"]]
    for items in ([], _items(source)):
        collection = source_collection(source, items=items, sample=False)
        assert collection.extent.spatial.bboxes == [info["extent"]["bbox"]]
        assert collection.extent.temporal.intervals == [expected_interval]
        assert collection.to_dict()["extent"]["spatial"]["bbox"] == [info["extent"]["bbox"]]


@pytest.mark.parametrize("source", SOURCE_IDS)
def test_extent_is_the_items_union_when_sample(source: str) -> None:
    collection = source_collection(source, items=_items(source), sample=True)
    assert collection.extent.spatial.bboxes == [UNION_BBOX]
    assert collection.extent.temporal.intervals == [UNION_INTERVAL]
    assert collection.to_dict()["extent"]["temporal"]["interval"] == [
        ["2018-01-01T00:00:00Z", "2019-03-01T10:30:00Z"]
    ]


@pytest.mark.parametrize("source", SOURCE_IDS)
def test_yaml_extent_is_well_formed(source: str) -> None:
    west, south, east, north = source_info(source)["extent"]["bbox"]
    assert -180.0 <= west < east <= 180.0
    assert -90.0 <= south < north <= 90.0
    start, end = (_time(t) for t in source_info(source)["extent"]["interval"])
    assert end is not None
    assert start is None or start < end


@pytest.mark.parametrize("source", SOURCE_IDS)
def test_title_says_sample_world_only_when_sample(source: str) -> None:
    title = source_info(source)["title"]
    sample = source_collection(source, items=[], sample=True)
    real = source_collection(source, items=[], sample=False)
    assert sample.title == f"Sample world stand-in for {title}"
    assert "Sample world" in sample.title
    assert real.title == title
    assert "Sample world" not in real.title


@pytest.mark.parametrize("source", SOURCE_IDS)
def test_item_assets_describe_the_items_without_per_file_fields(source: str) -> None:
    assets = source_info(source)["assets"]
    assert source_collection(source, items=[]).extra_fields["item_assets"] == {}
    item_assets = source_collection(source, items=_items(source)).extra_fields["item_assets"]
    assert set(item_assets) == set(assets)
    for key, sensor in assets.items():
        described = item_assets[key]
        assert [f for f in PER_FILE_FIELDS if f in described] == []
        if sensor == "labels":
            assert described == {"type": pystac.MediaType.GEOJSON, "roles": ["labels"]}
        else:
            assert described == {
                "type": pystac.MediaType.COG,
                "roles": ["data"],
                "msgfm:sensor": sensor,
            }


@pytest.mark.parametrize("source", SOURCE_IDS)
def test_asset_sensors_are_in_the_registry(source: str) -> None:
    known = set(registry())
    assets = source_info(source)["assets"]
    assert assets
    assert [s for s in assets.values() if s not in known and s != "labels"] == []


@pytest.mark.parametrize("source", SOURCE_IDS)
def test_pairs_name_asset_keys_of_the_source(source: str) -> None:
    keys = set(source_info(source)["assets"])
    for pair in source_info(source)["pairs"]:
        assert len(pair) == 2 and pair[0] != pair[1], pair
        assert set(pair) <= keys, pair


@pytest.mark.parametrize("source", SOURCE_IDS)
def test_providers_have_names_urls_and_stac_roles(source: str) -> None:
    providers = source_info(source)["providers"]
    for provider in providers:
        assert provider["name"].strip()
        assert provider["roles"] and set(provider["roles"]) <= PROVIDER_ROLES, provider
        assert provider["url"].startswith("https://"), provider
    roles = {role for provider in providers for role in provider["roles"]}
    assert {"producer", "licensor", "host"} <= roles
    stac = source_collection(source, items=[]).to_dict()
    assert stac["providers"] == providers
