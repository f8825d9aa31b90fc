"""The ready-made pipeline configs (configs/pipeline/*.yaml): each a complete params file that
loads, searches a bounded area and time, reads every collection it discovers as one registry
sensor, and writes nowhere near the sample build of params.yaml nor another config."""

from __future__ import annotations

from pathlib import Path, PurePath

import pytest
from pystac_client.item_search import ItemSearch

from catalogs.item_assets import match_sensor
from pipeline.params import PipelineParams, load_params

REPO = Path(__file__).resolve().parents[1]
CONFIGS = sorted((REPO / "configs" / "pipeline").glob("*.yaml"))
# What a minimal item of a collection needs besides its collection id to match its sensor.
PROPERTIES = {"landsat-c2-l2": {"platform": "landsat-8"}}
# The registry sensor each collection of the configs is read as.
SENSORS = {
    "sentinel-2-l2a": "sentinel2_l2a",
    "sentinel-2-c1-l2a": "sentinel2_l2a",
    "landsat-c2-l2": "landsat_c2_l2",
    "sentinel-1-rtc": "sentinel1_rtc",
    "naip": "naip",
    "3dep-lidar-dsm": "dsm",
    "3dep-seamless": "dem",
    "cop-dem-glo-30": "dem",
}


def _ids(paths: list[Path]) -> list[str]:
    return [path.stem for path in paths]


def _outputs(params: PipelineParams) -> dict[str, PurePath]:
    """Every place a build with ``params`` writes to."""
    return {
        "work_dir": params.work_dir,
        "store": params.store,
        "reports_dir": params.reports_dir,
        "fetch.cache_dir": params.fetch.cache_dir,
    }


def _overlap(a: PurePath, b: PurePath) -> bool:
    """Whether one path is the other or lies inside it."""
    return a == b or a in b.parents or b in a.parents


def test_the_three_public_api_configs_are_there() -> None:
    assert {
        "earth-search-s2-landsat",
        "planetary-computer-s1s2",
        "planetary-computer-naip-dsm",
    } <= set(_ids(CONFIGS))


@pytest.mark.parametrize("path", CONFIGS, ids=_ids(CONFIGS))
def test_a_config_loads_and_searches_a_bounded_area_and_time(path: Path) -> None:
    params = load_params(path)
    assert params.api_url or params.catalog
    if params.api_url:  # a public API search without bounds pages through whole collections
        assert params.bbox is not None and params.datetime is not None
        search = ItemSearch(
            params.api_url,
            collections=params.collections,
            bbox=params.bbox,
            datetime=params.datetime,
        ).get_parameters()
        start, _, end = search["datetime"].partition("/")
        assert ".." not in (start, end), search["datetime"]  # both ends bounded
    assert params.coregister.pairs


@pytest.mark.parametrize("path", CONFIGS, ids=_ids(CONFIGS))
def test_every_collection_is_paired_and_read_as_one_registry_sensor(path: Path) -> None:
    params = load_params(path)
    paired = set()
    for name, pair in params.coregister.pairs.items():
        collections = (pair.reference, *pair.partners)
        assert set(collections) <= set(params.collections), name
        sensors = []
        for collection in collections:
            item = {
                "id": "x",
                "collection": collection,
                "properties": PROPERTIES.get(collection, {}),
            }
            sensor = match_sensor(item)  # raises unless exactly one sensor matches
            assert sensor.name == SENSORS.get(collection, sensor.name), collection
            assert sensor.kind != "mask", collection
            sensors.append(sensor.name)
        assert len(set(sensors)) == len(sensors), f"{name}: one sensor on both sides"
        paired.update(collections)
    # A discovered collection in no pair (and no source) would be cut as unlocated pictures.
    assert set(params.collections) <= paired | set(params.coregister.sources)


@pytest.mark.parametrize("path", CONFIGS, ids=_ids(CONFIGS))
def test_a_config_writes_apart_from_the_sample_build_and_the_other_configs(path: Path) -> None:
    own = _outputs(load_params(path))
    sample = _outputs(load_params(REPO / "params.yaml"))
    for key, place in own.items():
        for sample_key, sample_place in sample.items():
            assert not _overlap(place, sample_place), f"{key} {place} vs params.yaml {sample_key}"
    for other in CONFIGS:
        if other != path:
            for key, place in own.items():
                for other_key, other_place in _outputs(load_params(other)).items():
                    assert not _overlap(place, other_place), (
                        f"{key} {place} vs {other.name} {other_key}"
                    )


@pytest.mark.parametrize("path", CONFIGS, ids=_ids(CONFIGS))
def test_store_options_are_options_of_obstore_stores(path: Path) -> None:
    from obstore.store import HTTPStore, from_url

    for scheme, options in load_params(path).fetch.store_options.items():
        open_url = HTTPStore.from_url if scheme in ("http", "https") else from_url
        open_url(f"{scheme}://example/", **options)  # raises on an unknown option
