"""The search every discover reader applies, and what every reader does to the items it returns.

A search is ``collections``, ``bbox`` and ``datetime`` of the pipeline parameters, normalised
once by pystac-client (partial dates expand to whole periods, e.g. ``2017-06`` is June 2017,
``..`` marks an open end) and then either sent to a STAC API or applied to a catalog's items
(:func:`matches`) with the STAC API's semantics, as rustac's server implements them:

* ``bbox``: an item matches when its geometry intersects the box (touching counts). An item
  without geometry (an unlocated picture) never matches a bbox. Boxes crossing the antimeridian
  (west > east) are refused.
* ``datetime``: an item covers ``[start_datetime, end_datetime]``, or the instant ``datetime``;
  it matches when that span intersects the searched interval, ends included.

Every returned item has absolute link and asset hrefs (:func:`with_origin`) and records where it
came from, so that fetch can refuse a relative href that escapes its catalog:
``properties["msgfm:catalog_root"]`` (the folder or URL prefix of the catalog, or the API's URL)
and ``asset["msgfm:catalog_href"]`` (the href as the catalog wrote it, only where it was
relative).

:class:`CheckedStacIO` and :class:`CheckedApiIO` read the files a source names beyond itself
(child and item links, an API's next pages) through the access policy
(:mod:`catalogs.access_policy`).
"""

from __future__ import annotations

import os
import posixpath
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from urllib.parse import urlsplit

import pystac
import shapely.geometry
from pystac.stac_io import DefaultStacIO
from pystac.utils import is_absolute_href, make_absolute_href, str_to_datetime
from pystac_client.item_search import ItemSearch
from pystac_client.stac_api_io import StacApiIO
from shapely.geometry.base import BaseGeometry

from catalogs.access_policy import (
    AccessRefused,
    check_host,
    check_local_allowed,
    is_local,
    local_path,
)
from pipeline.items import CATALOG_ROOT
from pipeline.params import FetchParams, PipelineParams

CATALOG_HREF = "msgfm:catalog_href"
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


def search_of(source: str, params: PipelineParams) -> Search:
    """The collections, bbox and datetime of ``params`` as pystac-client sends them.

    Exactly as sent to ``source``; only pystac-client's parameter parsing is used, no request is
    made.

    Raises:
        ValueError: no collection is named, or the bbox or datetime is invalid.
    """
    if not params.collections:
        raise ValueError("pipeline.collections is empty; name the collections to discover")
    if params.bbox is not None:
        _check_bbox(params.bbox)
    try:
        search = ItemSearch(
            source, collections=params.collections, bbox=params.bbox, datetime=params.datetime
        )
    except Exception as error:  # pystac-client raises a bare Exception for a bad datetime
        raise ValueError(
            f"pipeline.datetime {params.datetime!r} is not a datetime or interval: {error}"
        ) from error
    return Search(search.get_parameters())


def _check_bbox(bbox: Sequence[float]) -> None:
    if len(bbox) != 4 or not all(isinstance(v, int | float) for v in bbox):
        raise ValueError(
            f"pipeline.bbox {list(bbox)}: expected [west, south, east, north] in degrees"
        )
    west, south, east, north = bbox
    if west > east:
        raise ValueError(
            f"pipeline.bbox {list(bbox)}: west > east (boxes crossing the "
            "antimeridian are not supported)"
        )
    if south > north:
        raise ValueError(f"pipeline.bbox {list(bbox)}: south > north")


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


def folder_of(href: str) -> str:
    """The folder (or URL prefix) of a file href."""
    return posixpath.dirname(href) if "://" in href else str(local_path(href).parent)


class _LinkPolicy:
    """Mixed into a pystac or pystac-client reader: each file it reads passes the access policy.

    The policy for the catalog at ``source`` (that one URL's scheme and host are the user's choice).
    """

    def __init__(self, source: str, policy: FetchParams, **reader_options: Any) -> None:
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
