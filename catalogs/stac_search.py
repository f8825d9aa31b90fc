"""A STAC search of a static catalog or an API, and what every reader does to the items it returns.

Shared by the pipeline's discover stage and ``model.predict``'s scene search. A search is
``collections``, ``bbox`` and ``datetime`` (the pipeline's parameters, or the command line),
normalised once by pystac-client (partial dates expand to whole periods, e.g. ``2017-06`` is
June 2017, ``..`` marks an open end) and then either sent to a STAC API or applied to a
catalog's items (:func:`matches`) with the STAC API's semantics, as rustac's server implements them:

* ``bbox``: an item matches when its geometry intersects the box (touching counts). An item
  without geometry (an unlocated picture) never matches a bbox. Boxes crossing the antimeridian
  (west > east) are refused.
* ``datetime``: an item covers ``[start_datetime, end_datetime]``, or the instant ``datetime``;
  it matches when that span intersects the searched interval, ends included.

Every returned item has absolute link and asset hrefs (:func:`with_origin`) and records where it
came from, so that an asset href that escapes its catalog can be refused
(:func:`check_asset_href`): ``properties["msgfm:catalog_root"]`` (the folder or URL prefix of
the catalog, or the API's URL) and ``asset["msgfm:catalog_href"]`` (the href as the catalog
wrote it, only where it was relative).

:class:`CheckedStacIO` and :class:`CheckedApiIO` read the files a source names beyond itself
(child and item links, an API's next pages) through the access policy
(:mod:`catalogs.access_policy`); :func:`refusal_named` turns a refusal into an error naming the
source.
"""

from __future__ import annotations

import os
import posixpath
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import PurePosixPath
from typing import Any
from urllib.parse import urlsplit

import pystac
import shapely.geometry
from pystac.stac_io import DefaultStacIO
from pystac.utils import is_absolute_href, make_absolute_href, str_to_datetime
from pystac_client import Client
from pystac_client.item_search import ItemSearch
from pystac_client.stac_api_io import StacApiIO
from shapely.geometry.base import BaseGeometry

from catalogs.access_policy import (
    AccessOptions,
    AccessRefused,
    check_host,
    check_local_allowed,
    is_local,
    local_path,
)

CATALOG_ROOT = "msgfm:catalog_root"  # item property: the folder or URL of the item's catalog
CATALOG_HREF = "msgfm:catalog_href"  # asset field: a relative href as its catalog wrote it
# A STAC Item's top-level fields, in the order the specification lists them.
ITEM_FIELDS = (
    "type",
    "stac_version",
    "stac_extensions",
    "id",
    "geometry",
    "bbox",
    "properties",
    "links",
    "assets",
    "collection",
)
API_SEARCHES = 8  # collections searched at once in a STAC API
_OPEN_END = ("", "..")


@dataclass(frozen=True)
class Search:
    """A normalised search.

    The parameters as pystac-client sends them to an API, and the bbox and datetime as a geometry
    and an interval for matching items here.
    """

    parameters: dict[str, Any]

    @property
    def collections(self) -> list[str]:
        """The collections searched."""
        return list(self.parameters["collections"])

    @property
    def area(self) -> BaseGeometry | None:
        """The bbox as a geometry; None without a bbox."""
        bbox = self.parameters.get("bbox")
        return None if bbox is None else shapely.geometry.box(*bbox)

    @property
    def interval(self) -> tuple[datetime | None, datetime | None] | None:
        """The datetime as (start, end), None for an open end; None without a datetime."""
        value = self.parameters.get("datetime")
        if value is None:
            return None
        ends = value.split("/")
        start, end = ends[0], ends[-1]
        return (
            None if start in _OPEN_END else str_to_datetime(start),
            None if end in _OPEN_END else str_to_datetime(end),
        )


def search_of(
    source: str,
    collections: Sequence[str],
    bbox: Sequence[float] | None,
    datetime: str | None,
    option_name: Callable[[str], str],
) -> Search:
    """``collections``, ``bbox`` and ``datetime`` as pystac-client sends them to ``source``.

    Only pystac-client's parameter parsing is used, no request is made.

    Args:
        source: the catalog or API searched.
        collections: the collection ids.
        bbox: [west, south, east, north] in degrees, or None.
        datetime: a datetime or interval as STAC APIs take it (``2017-06``, ``a/b``, ``../b``),
            or None.
        option_name: how the user sets ``collections``, ``bbox`` or ``datetime``, for messages.

    Raises:
        ValueError: no collection is named, or the bbox or datetime is invalid.
    """
    if not collections:
        raise ValueError(f"{option_name('collections')} is empty; name the collections to discover")
    if bbox is not None:
        _check_bbox(bbox, option_name("bbox"))
    try:
        search = ItemSearch(source, collections=list(collections), bbox=bbox, datetime=datetime)
    except Exception as error:  # pystac-client raises a bare Exception for a bad datetime
        raise ValueError(
            f"{option_name('datetime')} {datetime!r} is not a datetime or interval: {error}"
        ) from error
    return Search(search.get_parameters())


def _check_bbox(bbox: Sequence[float], name: str) -> None:
    if len(bbox) != 4 or not all(isinstance(v, int | float) for v in bbox):
        raise ValueError(f"{name} {list(bbox)}: expected [west, south, east, north] in degrees")
    west, south, east, north = bbox
    if west > east:
        raise ValueError(
            f"{name} {list(bbox)}: west > east (boxes crossing the antimeridian are not supported)"
        )
    if south > north:
        raise ValueError(f"{name} {list(bbox)}: south > north")


def check_collections(source: str, wanted: Iterable[str], available: Iterable[str]) -> None:
    """Refuse a search for collections ``source`` does not have, naming those it has."""
    known = sorted(set(available))
    missing = [c for c in wanted if c not in known]
    if missing:
        raise ValueError(f"{source}: no collection(s) {missing}; it has {known}")


def matches(
    item: dict[str, Any],
    area: BaseGeometry | None,
    interval: tuple[datetime | None, datetime | None] | None,
) -> bool:
    """Whether the item dict intersects ``area`` and ``interval`` (None: no constraint)."""
    if area is not None:
        geometry = item.get("geometry")
        if not geometry or not shapely.geometry.shape(geometry).intersects(area):
            return False
    if interval is not None:
        start, end = interval
        properties = item.get("properties") or {}
        instant = properties.get("datetime")
        item_start = _time(properties.get("start_datetime") or instant)
        item_end = _time(properties.get("end_datetime") or instant)
        if start is not None and item_end is not None and item_end < start:
            return False
        if end is not None and item_start is not None and item_start > end:
            return False
    return True


def _time(value: str | None) -> datetime | None:
    return str_to_datetime(value) if value else None


def with_origin(item: dict[str, Any], base_href: str, root: str) -> dict[str, Any]:
    """``item`` with absolute link and asset hrefs, and ``msgfm:catalog_root``.

    Relative hrefs are resolved against ``base_href``; an asset keeps its relative href as
    ``msgfm:catalog_href``.
    """
    links = [
        {**link, "href": make_absolute_href(link["href"], base_href)}
        for link in item.get("links", [])
    ]
    assets = {}
    for key, asset in item.get("assets", {}).items():
        href = asset["href"]
        if is_absolute_href(href):
            assets[key] = dict(asset)
        else:
            assets[key] = {**asset, "href": make_absolute_href(href, base_href), CATALOG_HREF: href}
    return {
        **item,
        "links": links,
        "assets": assets,
        "properties": {**item["properties"], CATALOG_ROOT: root},
    }


def check_asset_href(
    asset: dict[str, Any], root: str | None, policy: AccessOptions, shown: str
) -> None:
    """Refuse an asset href that the item's catalog at ``root`` may not name.

    A local href must pass :func:`catalogs.access_policy.check_local_allowed`; a href the catalog
    wrote relative (``msgfm:catalog_href``) must stay below ``root``. The host of a remote href
    is not checked here: that is done just before each request (it may resolve otherwise later).

    Args:
        asset: the asset, its href absolute (:func:`with_origin`).
        root: the item's ``msgfm:catalog_root``; None when unknown.
        policy: what the caller allows.
        shown: the href as the message shows it (as the catalog wrote it).

    Raises:
        AccessRefused: naming the href and the rule.
    """
    href = asset["href"]
    if is_local(href) and root is not None:
        check_local_allowed(href, root, policy, shown)
    elif CATALOG_HREF in asset and (root is None or not _within(href, root)):
        raise AccessRefused(f"href {shown!r} resolves outside the catalog root {root}")


def check_item_assets(item: dict[str, Any], policy: AccessOptions) -> None:
    """Refuse an item one of whose assets the access policy refuses, before anything is read.

    Each asset as :func:`check_asset_href` judges it, and an http(s) asset's host as
    :func:`catalogs.access_policy.check_host` does (for a reader that requests the file later,
    the host is checked once here).

    Args:
        item: the item, its hrefs absolute and its origin recorded (:func:`with_origin`).
        policy: what the caller allows.

    Raises:
        AccessRefused: naming the item, the asset and the rule.
    """
    root = item["properties"].get(CATALOG_ROOT)
    for key, asset in item.get("assets", {}).items():
        href = asset["href"]
        try:
            check_asset_href(asset, root, policy, asset.get(CATALOG_HREF, href))
            check_host(href, policy)
        except AccessRefused as error:
            raise AccessRefused(f"item {item['id']!r}, asset {key!r}: {error.reason}") from error


def _within(href: str, root: str) -> bool:
    """Whether ``href`` lies under ``root`` (same scheme and host, path below root's)."""
    target, base = urlsplit(href), urlsplit(root)
    if (target.scheme, target.netloc) != (base.scheme, base.netloc):
        return False
    # A root at the top of its host (``http://host``, the folder of ``http://host/x.json``)
    # has an empty path: the whole host.
    target_path = PurePosixPath(posixpath.normpath(target.path or "/"))
    return target_path.is_relative_to(posixpath.normpath(base.path or "/"))


def folder_of(href: str) -> str:
    """The folder (or URL prefix) of a file href."""
    return posixpath.dirname(href) if "://" in href else str(local_path(href).parent)


class _LinkPolicy:
    """Mixed into a pystac or pystac-client reader: each file it reads passes the access policy.

    The policy for the catalog at ``source`` (that one URL's scheme and host are the user's choice).
    """

    def __init__(self, source: str, policy: AccessOptions, **reader_options: Any) -> None:
        super().__init__(**reader_options)
        self._origin = urlsplit(source)[:2] if not is_local(source) else None
        self._root = (
            posixpath.dirname(source) if self._origin else str(local_path(source).absolute().parent)
        )
        self._policy = policy

    def read_text(self, source: Any, *args: Any, **kwargs: Any) -> str:
        href = source.href if isinstance(source, pystac.Link) else str(os.fspath(source))
        if is_local(href):
            check_local_allowed(href, self._root, self._policy)
        elif urlsplit(href)[:2] != self._origin:
            try:
                check_host(href, self._policy)
            except AccessRefused as error:
                raise AccessRefused(f"link {href}: {error.reason}") from error
        return super().read_text(source, *args, **kwargs)  # type: ignore[misc]


class CheckedStacIO(_LinkPolicy, DefaultStacIO):
    """pystac's reader of static catalogs (local files and URLs), its links checked."""


class CheckedApiIO(_LinkPolicy, StacApiIO):
    """pystac-client's reader of STAC APIs, its links checked."""


def api_items(api_url: str, search: Search, policy: AccessOptions) -> list[dict[str, Any]]:
    """The items of a STAC API search, one search per collection.

    Up to :data:`API_SEARCHES` at once; relative hrefs resolved against each item's self link,
    the API's URL recorded as ``msgfm:catalog_root``. Unsorted.

    Raises:
        ValueError: a collection is not in the API (naming those it has).
    """
    client = Client.open(api_url, stac_io=CheckedApiIO(api_url, policy))
    check_collections(api_url, search.collections, (c.id for c in client.get_collections()))

    def one(collection: str) -> list[dict[str, Any]]:
        # Each search has its own reader: a requests session is not shared between threads.
        own = Client.open(api_url, stac_io=CheckedApiIO(api_url, policy))
        parameters = {**search.parameters, "collections": [collection]}
        return [
            with_origin(item, _self_href(item, api_url), api_url)
            for item in own.search(**parameters).items_as_dicts()
        ]

    with ThreadPoolExecutor(max_workers=min(API_SEARCHES, len(search.collections))) as pool:
        return [item for items in pool.map(one, search.collections) for item in items]


def _self_href(item: dict[str, Any], default: str) -> str:
    return next(
        (link["href"] for link in item.get("links", []) if link.get("rel") == "self"), default
    )


@contextmanager
def refusal_named(source: str) -> Iterator[None]:
    """Re-raise an access refusal as a ValueError naming ``source``.

    pystac wraps a reader's error in its own: the refusal is found among the causes.
    """
    try:
        yield
    except Exception as error:
        refusal = _refusal(error)
        if refusal is None:
            raise
        raise ValueError(f"{source}: {refusal.reason}") from error


def _refusal(error: BaseException | None) -> AccessRefused | None:
    """The access refusal that ``error`` is or was raised from, if any."""
    while error is not None and not isinstance(error, AccessRefused):
        error = error.__cause__
    return error
