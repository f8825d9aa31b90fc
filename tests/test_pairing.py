"""Pairing across collections (pipeline/pairing.py) and its parameters."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import pytest
import yaml

from pipeline.pairing import PAIR, PARTNERS, pair_items
from pipeline.params import PairSource, load_params

S2, S1 = "sentinel-2-l2a", "sentinel-1-rtc"
PAIR_S1S2 = PairSource(
    reference=S2, partners=(S1,), max_days=3, min_overlap=0.5, max_cloud_cover=20
)


def item(
    collection: str,
    item_id: str,
    when: str,
    box: tuple[float, float, float, float],
    **properties: Any,
) -> dict[str, Any]:
    west, south, east, north = box
    return {
        "type": "Feature",
        "id": item_id,
        "collection": collection,
        "bbox": list(box),
        "geometry": {
            "type": "Polygon",
            "coordinates": [
                [[west, south], [east, south], [east, north], [west, north], [west, south]]
            ],
        },
        "properties": {"datetime": when, **properties},
        "assets": {},
        "links": [],
    }


TILE = (10.0, 50.0, 11.0, 51.0)
ITEMS = [
    item(S2, "tile", "2024-06-10T10:00:00Z", TILE, **{"eo:cloud_cover": 5.0}),
    item(S2, "cloudy", "2024-06-10T10:00:00Z", TILE, **{"eo:cloud_cover": 60.0}),
    # One acquisition in two slices (same platform, same orbit), a day before: covers the tile.
    item(
        S1,
        "a_north",
        "2024-06-09T05:00:00Z",
        (9.5, 50.5, 11.5, 51.5),
        platform="sentinel-1a",
        **{"sat:absolute_orbit": 100},
    ),
    item(
        S1,
        "a_south",
        "2024-06-09T05:00:25Z",
        (9.5, 49.5, 11.5, 50.5),
        platform="sentinel-1a",
        **{"sat:absolute_orbit": 100},
    ),
    # Closer in time but covering 30% of the tile: not enough.
    item(
        S1,
        "b_edge",
        "2024-06-10T17:00:00Z",
        (10.7, 49.0, 12.0, 52.0),
        platform="sentinel-1a",
        **{"sat:absolute_orbit": 105},
    ),
    # Full cover but two days later: further in time than the slices.
    item(
        S1,
        "c_later",
        "2024-06-12T05:00:00Z",
        (9.0, 49.0, 12.0, 52.0),
        platform="sentinel-1a",
        **{"sat:absolute_orbit": 130},
    ),
    # Full cover, ten days away: outside max_days.
    item(
        S1,
        "d_far",
        "2024-06-20T05:00:00Z",
        (9.0, 49.0, 12.0, 52.0),
        platform="sentinel-1a",
        **{"sat:absolute_orbit": 250},
    ),
    item("other", "kept", "2024-06-10T10:00:00Z", TILE),
]


def test_the_closest_acquisition_covering_enough_is_chosen_with_all_its_slices() -> None:
    kept, rows = pair_items(ITEMS, {"s1s2": PAIR_S1S2})
    paired = next(i for i in kept if i["id"] == "tile")
    assert paired["properties"][PAIR] == "s1s2"
    assert paired["properties"][PARTNERS] == {S1: ["a_north", "a_south"]}
    assert [i["id"] for i in kept] == ["tile", "a_north", "a_south", "kept"]
    assert [(r.reference_id, r.partner_ids, r.left_out) for r in rows] == [
        ("cloudy", (), "cloud cover 60.0% above max_cloud_cover 20%"),
        ("tile", ("a_north", "a_south"), ""),
    ]
    # The nearest slice (a_south, 28 h 59 min 35 s before) gives the acquisition's time.
    assert rows[1].time_difference_days == pytest.approx((29 * 3600 - 25) / 86400, abs=1e-12)
    assert rows[1].overlap == pytest.approx(1.0)


def test_the_choice_does_not_depend_on_the_order_the_api_answered_in() -> None:
    expected = pair_items(ITEMS, {"s1s2": PAIR_S1S2})
    for seed in range(5):
        shuffled = ITEMS.copy()
        random.Random(seed).shuffle(shuffled)
        kept, rows = pair_items(shuffled, {"s1s2": PAIR_S1S2})
        assert rows == expected[1]
        assert sorted(i["id"] for i in kept) == sorted(i["id"] for i in expected[0])


def test_a_reference_without_a_partner_is_left_out_with_the_reason() -> None:
    strict = PairSource(reference=S2, partners=(S1,), max_days=0.5, min_overlap=0.5)
    kept, rows = pair_items(ITEMS, {"s1s2": strict})
    assert [i["id"] for i in kept] == ["kept"]  # no reference paired, no partner used
    assert {r.reference_id: r.left_out for r in rows} == {
        "cloudy": f"no {S1} acquisition within 0.5 days covering 50% of the footprint",
        "tile": f"no {S1} acquisition within 0.5 days covering 50% of the footprint",
    }


def test_partners_no_sensor_reads_or_too_cloudy_are_passed_over() -> None:
    pair = PairSource(
        reference=S2, partners=("landsat-c2-l2",), max_days=3, min_overlap=0.5, max_cloud_cover=20
    )
    landsat = [
        item("landsat-c2-l2", "l7_same_day", "2024-06-10T10:30:00Z", TILE, platform="landsat-7"),
        item(
            "landsat-c2-l2",
            "l8_cloudy",
            "2024-06-10T11:00:00Z",
            TILE,
            platform="landsat-8",
            **{"eo:cloud_cover": 80.0},
        ),
        item(
            "landsat-c2-l2",
            "l9_next_day",
            "2024-06-11T10:30:00Z",
            TILE,
            platform="landsat-9",
            **{"eo:cloud_cover": 3.0},
        ),
    ]
    kept, rows = pair_items([ITEMS[0], *landsat], {"p": pair})
    assert [(r.reference_id, r.partner_ids) for r in rows] == [("tile", ("l9_next_day",))]
    assert [i["id"] for i in kept] == ["tile", "l9_next_day"]


def test_a_partner_dated_by_a_span_is_as_far_as_the_gap_between_the_spans() -> None:
    pair = PairSource(reference="naip", partners=("3dep-lidar-dsm",), max_days=30, min_overlap=0.5)
    naip = item("naip", "photo", "2023-11-17T16:00:00Z", TILE)
    dsm = item(
        "3dep-lidar-dsm",
        "lidar",
        None,
        TILE,
        start_datetime="2023-01-01T00:00:00Z",
        end_datetime="2023-10-31T00:00:00Z",
    )
    _, rows = pair_items([naip, dsm], {"p": pair})
    assert rows[0].partner_ids == ("lidar",)
    assert rows[0].time_difference_days == pytest.approx(17 + 16 / 24)  # from the span's end


def test_without_pairs_the_items_are_untouched() -> None:
    assert pair_items(ITEMS, {}) == (ITEMS, [])


def _params(tmp_path: Path, pairs: dict[str, Any], collections: list[str]) -> Path:
    path = tmp_path / "params.yaml"
    path.write_text(
        yaml.safe_dump({"pipeline": {"collections": collections, "coregister": {"pairs": pairs}}})
    )
    return path


def test_pair_parameters_are_read(tmp_path: Path) -> None:
    pair = {"reference": "s2", "partners": ["s1"], "max_days": 2, "max_cloud_cover": 10}
    params = load_params(_params(tmp_path, {"p": pair}, ["s1", "s2"]))
    assert params.coregister.pairs == {
        "p": PairSource(reference="s2", partners=("s1",), max_days=2, max_cloud_cover=10)
    }


@pytest.mark.parametrize(
    ("pair", "collections", "message"),
    [
        (
            {"reference": "s2", "partners": ["s1"]},
            ["s2"],
            r"pairs.p: collections \['s1'\] are not in pipeline.collections \['s2'\]",
        ),
        (
            {"reference": "s2", "partners": []},
            ["s2"],
            r"pairs.p.partners: must be a non-empty list of distinct names, got \[\]",
        ),
        (
            {"reference": "s2", "partners": ["s1"], "min_overlap": 0},
            ["s1", "s2"],
            r"pairs.p.min_overlap: must be a number in \(0, 1\], got 0",
        ),
        (
            {"reference": "s2", "partner": ["s1"]},
            ["s1", "s2"],
            r"unknown parameter\(s\) \['partner'\]",
        ),
        ({"partners": ["s1"]}, ["s1", "s2"], "missing 1 required positional argument: 'reference'"),
    ],
)
def test_bad_pair_parameters_are_named(
    tmp_path: Path, pair: dict[str, Any], collections: list[str], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        load_params(_params(tmp_path, {"p": pair}, collections))
