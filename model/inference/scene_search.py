"""The STAC items of one scene, found by a search of a static catalog or a STAC API.

``model.predict --catalog``/``--api-url`` with ``--collections``, ``--bbox`` and ``--datetime``
names a scene by a search instead of by its item files. The search is the pipeline's discover
search (:mod:`catalogs.stac_search`: the same normalisation, matching and access policy):

* the reference item is an item of the first collection: the one whose footprint covers the
  largest part of the bbox (ties: the latest datetime, then the smallest id);
* its partners are, for each other collection, the items whose footprints overlap the
  reference's (a shared area, not a shared edge) within ``max_days`` of it, nearest in time
  first (ties: id): the caller mosaics them. They are searched around the reference item
  (its footprint's bounds, its datetime +- ``max_days``), not with the user's bbox and datetime,
  so a datetime that picks the reference's day still finds a partner acquired days apart.

The items are input: every link the search follows passes the access policy as discover's do,
and so does every asset href of the items returned (as the fetch stage checks them, and an
http(s) host is checked once here; a reader that requests it later should check it again).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime as DateTime
from datetime import timedelta
from typing import Any

import shapely.geometry
from pystac.utils import datetime_to_str, str_to_datetime
from shapely.geometry.base import BaseGeometry

from catalogs.access_policy import AccessOptions
from catalogs.stac_search import (
    Search,
    api_items,
    check_item_assets,
    refusal_named,
    search_of,
)
from catalogs.static_catalog import item_chunks, read_chunk

DEFAULT_MAX_DAYS = 30.0
# Item files per read of a static catalog: chunks are read in turn, any size finds the same items.
_CHUNK_ITEMS = 500


class SceneSearchError(ValueError):
    """The search finds no reference item, or no partner in a collection; the message says which."""


def find_scene_items(
    source: str,
    *,
    api: bool,
    collections: Sequence[str],
    bbox: Sequence[float],
    datetime: str | None,
    policy: AccessOptions,
    max_days: float = DEFAULT_MAX_DAYS,
) -> list[dict[str, Any]]:
    """The reference item of a scene and its partners.

    Args:
        source: a static catalog's root ``catalog.json`` (path or URL), or a STAC API's URL.
        api: whether ``source`` is a STAC API.
        collections: the reference collection first, then one collection per partner sensor.
        bbox: [west, south, east, north] in degrees.
        datetime: a datetime or interval as STAC APIs take it (``2017-06``, ``a/b``), or None.
        policy: what the caller allows beyond the access policy's defaults.
        max_days: the largest time difference between a partner and the reference, in days.

    Returns:
        STAC item dicts with absolute asset hrefs, ``collection`` and ``msgfm:catalog_root``:
        the reference item, then each other collection's partners, nearest in time first.

    Raises:
        SceneSearchError: no item of the first collection matches the search, or another
            collection has no partner; naming the source, collections, bbox and datetime.
        ValueError: an invalid search (naming the option), a collection the source does not
            have, or a link or asset href the access policy refuses (naming the source, the
            item and the rule).
    """
    wanted = (
        f"collections {list(collections)}, bbox {list(bbox)}, datetime {datetime!r}, "
        f"max_days {max_days}"
    )
    first = search_of(source, collections[:1], bbox, datetime, _option_name)
    with refusal_named(source):
        reference = _reference(_items(source, api, first, policy), first.area)
        if reference is None:
            raise SceneSearchError(
                f"{source}: no item of collection {collections[0]!r} matches the search ({wanted})"
            )
        items = [reference]
        if len(collections) > 1:
            items += _partners(source, api, reference, collections[1:], max_days, policy, wanted)
        for item in items:
            check_item_assets(item, policy)
    return items


def _option_name(option: str) -> str:
    return f"--{option}"


def _items(source: str, api: bool, search: Search, policy: AccessOptions) -> list[dict[str, Any]]:
    """The items of ``source`` matching ``search``, sorted by (collection, id)."""
    if api:
        found = api_items(source, search, policy)
    else:
        chunks = item_chunks(source, search, policy, _CHUNK_ITEMS)
        found = [item for chunk in chunks for item in read_chunk(chunk, search, policy)]
    return sorted(found, key=lambda item: (item["collection"], item["id"]))


def _reference(items: list[dict[str, Any]], area: BaseGeometry | None) -> dict[str, Any] | None:
    """The item covering the largest part of ``area``; ties: the latest, then the smallest id."""
    if not items:
        return None

    def rank(item: dict[str, Any]) -> tuple[float, float, str]:
        covered = 0.0 if area is None else _footprint(item).intersection(area).area
        instant = _time(item)
        return -covered, -(instant.timestamp() if instant else float("-inf")), item["id"]

    return min(items, key=rank)


def _partners(
    source: str,
    api: bool,
    reference: dict[str, Any],
    collections: Sequence[str],
    max_days: float,
    policy: AccessOptions,
    wanted: str,
) -> list[dict[str, Any]]:
    """Each collection's items overlapping ``reference`` within ``max_days``, nearest first."""
    footprint, instant = _footprint(reference), _time(reference)
    if instant is None:
        raise SceneSearchError(
            f"{source}: the reference item {reference['id']!r} has no datetime to find "
            f"partners near ({wanted})"
        )
    window = timedelta(days=max_days)
    interval = f"{datetime_to_str(instant - window)}/{datetime_to_str(instant + window)}"
    around = search_of(source, collections, footprint.bounds, interval, _option_name)
    distances: dict[str, list[tuple[float, str, dict[str, Any]]]] = {c: [] for c in collections}
    for item in _items(source, api, around, policy):
        when = _time(item)
        if when is None or _footprint(item).intersection(footprint).area <= 0:
            continue
        days = abs((when - instant).total_seconds()) / 86400.0
        if days <= max_days:
            distances[item["collection"]].append((days, item["id"], item))
    partners = []
    for collection in collections:
        if not distances[collection]:
            raise SceneSearchError(
                f"{source}: no item of collection {collection!r} overlaps the reference item "
                f"{reference['id']!r} within {max_days} days of {datetime_to_str(instant)} "
                f"({wanted})"
            )
        partners += [item for *_, item in sorted(distances[collection], key=lambda d: d[:2])]
    return partners


def _footprint(item: dict[str, Any]) -> BaseGeometry:
    return shapely.geometry.shape(item["geometry"])


def _time(item: dict[str, Any]) -> DateTime | None:
    """The item's ``datetime``, else its ``start_datetime``; None without either."""
    properties = item.get("properties") or {}
    value = properties.get("datetime") or properties.get("start_datetime")
    return str_to_datetime(value) if value else None
