"""Discover: the items of the chosen sources, from a STAC API or a static STAC catalog.

Both paths take the same search: ``collections``, ``bbox`` and ``datetime`` of the pipeline
parameters, normalised once by pystac-client (partial dates expand to whole periods, e.g.
``2017-06`` is June 2017, ``..`` marks an open end) and then either sent to the API or applied
to the static catalog's items with the STAC API's semantics, as rustac's server implements them:

* ``bbox``: an item matches when its geometry intersects the box (touching counts). An item
  without geometry (an unlocated picture) never matches a bbox. Boxes crossing the antimeridian
  (west > east) are refused.
* ``datetime``: an item covers ``[start_datetime, end_datetime]``, or the instant ``datetime``;
  it matches when that span intersects the searched interval, ends included.

Every returned item has absolute asset hrefs (a relative href is resolved against the item's own
location) and records where it came from, so that fetch can refuse a relative href that escapes
its catalog:

* ``properties["msgfm:catalog_root"]``: the folder (or URL prefix) of the root catalog, or the
  API's URL;
* ``asset["msgfm:catalog_href"]``: the href as the catalog wrote it, only where it was relative.

Every file discover reads beyond the source the user named (a child or item link, an API's
next page) passes the access policy (:mod:`pipeline.access_policy`): links of a local catalog
stay inside its root folder (resolved) or are remote; links of a remote catalog or API are
remote, and an http(s) link to another host than the source's never reaches a loopback, private
or link-local address unless allowed. A refused link stops discover with an error naming the
source, the link and the rule: the catalog itself is hostile or broken.

Items come sorted by collection, then item id.
"""

from __future__ import annotations

import os
import posixpath
from collections.abc import Iterable, Sequence
from datetime import datetime
from pathlib import Path
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

from pipeline.access_policy import (
    AccessRefused,
    check_host,
    check_local_allowed,
    is_local,
    local_path,
)
from pipeline.items import CATALOG_ROOT, write_items
from pipeline.pairing import pair_items, write_pairs_table
from pipeline.params import FetchParams, PipelineParams

CATALOG_HREF = "msgfm:catalog_href"
_OPEN_END = ("", "..")


def discover(params: PipelineParams) -> list[dict[str, Any]]:
    """The items of ``params.collections`` matching ``params.bbox`` and ``params.datetime``.

    Read from ``params.api_url`` when it is set, else from the static catalog
    ``params.catalog`` (a path or URL of its root ``catalog.json``).

    Returns:
        STAC item dicts with absolute asset hrefs, ``msgfm:catalog_root`` and, on assets whose
        href was relative, ``msgfm:catalog_href``; sorted by (collection, id).

    Raises:
        ValueError: no source is set, a search parameter is invalid, a collection is not
            in the source (the message names the source and the collections it has), or the
            access policy refuses a link of the source (naming the link and the rule).
    """
    source = params.api_url or params.catalog
    if not source:
        raise ValueError("pipeline: neither api_url nor catalog is set; nothing to discover")
    if not params.collections:
        raise ValueError("pipeline.collections is empty; name the collections to discover")
    search = _search_parameters(source, params)
    try:
        if params.api_url:
            items = _from_api(params.api_url, search, params.fetch)
        else:
            items = _from_catalog(source, search, params.fetch)
    except Exception as error:  # pystac wraps a reader's error in its own: find the refusal
        refusal = _refusal(error)
        if refusal is None:
            raise
        raise ValueError(f"{source}: {refusal.reason}") from error
    return sorted(items, key=lambda item: (item["collection"], item["id"]))


def _refusal(error: BaseException | None) -> AccessRefused | None:
    """The access refusal that ``error`` is or was raised from, if any."""
    while error is not None and not isinstance(error, AccessRefused):
        error = error.__cause__
    return error


def discover_to_table(params: PipelineParams) -> Path:
    """Run :func:`discover`, pair the items of the declared pairs across collections, write
    the items to ``params.items_table`` and the matches to ``params.pairs_table``; returns the
    items table."""
    items, rows = pair_items(discover(params), params.coregister.pairs)
    params.work_dir.mkdir(parents=True, exist_ok=True)
    write_pairs_table(params.pairs_table, rows)
    return write_items(params.items_table, items)


def _search_parameters(source: str, params: PipelineParams) -> dict[str, Any]:
    """collections, bbox and datetime exactly as pystac-client sends them to ``source``.

    Only pystac-client's parameter parsing is used here; no request is made.
    """
    if params.bbox is not None:
        _check_bbox(params.bbox)
    try:
        search = ItemSearch(source, collections=params.collections,
                            bbox=params.bbox, datetime=params.datetime)
    except Exception as error:  # pystac-client raises a bare Exception for a bad datetime
        raise ValueError(f"pipeline.datetime {params.datetime!r} is not a datetime or "
                         f"interval: {error}") from error
    return search.get_parameters()


def _check_bbox(bbox: Sequence[float]) -> None:
    if len(bbox) != 4 or not all(isinstance(v, int | float) for v in bbox):
        raise ValueError(f"pipeline.bbox {list(bbox)}: expected [west, south, east, north] "
                         "in degrees")
    west, south, east, north = bbox
    if west > east:
        raise ValueError(f"pipeline.bbox {list(bbox)}: west > east (boxes crossing the "
                         "antimeridian are not supported)")
    if south > north:
        raise ValueError(f"pipeline.bbox {list(bbox)}: south > north")


class _LinkPolicy:
    """Mixed into a pystac or pystac-client reader: each file it reads passes the access policy
    for the catalog at ``source`` (that one URL's scheme and host are the user's choice)."""

    def __init__(self, source: str, policy: FetchParams, **reader_options: Any) -> None:
        super().__init__(**reader_options)
        self._origin = urlsplit(source)[:2] if not is_local(source) else None
        self._root = (posixpath.dirname(source) if self._origin
                      else str(local_path(source).absolute().parent))
        self._policy = policy

    def read_text(self, source: Any, *args: Any, **kwargs: Any) -> str:
        href = source.href if isinstance(source, pystac.Link) else str(os.fspath(source))
        if is_local(href):
            check_local_allowed(href, self._root, self._policy)
        elif urlsplit(href)[:2] != self._origin:
            try:
                check_host(href, self._policy.allow_private_hosts)
            except AccessRefused as error:
                raise AccessRefused(f"link {href}: {error.reason}") from error
        return super().read_text(source, *args, **kwargs)  # type: ignore[misc]


class _CheckedStacIO(_LinkPolicy, DefaultStacIO):
    """pystac's reader of static catalogs, its links checked."""


class _CheckedApiIO(_LinkPolicy, StacApiIO):
    """pystac-client's reader of STAC APIs, its links checked."""


def _from_api(api_url: str, search: dict[str, Any],
              policy: FetchParams) -> list[dict[str, Any]]:
    """Items of a STAC API search; relative asset hrefs resolved against each item's self link."""
    client = Client.open(api_url, stac_io=_CheckedApiIO(api_url, policy))
    _check_collections(api_url, search["collections"],
                       (c.id for c in client.get_collections()))
    items = []
    for item in client.search(**search).items_as_dicts():
        base = next((link["href"] for link in item.get("links", []) if link.get("rel") == "self"),
                    api_url)
        items.append(_with_origin(item, base, api_url))
    return items


def _from_catalog(catalog_href: str, search: dict[str, Any],
                  policy: FetchParams) -> list[dict[str, Any]]:
    """Items of a static catalog's collections that match ``search``."""
    root = pystac.Catalog.from_file(catalog_href,
                                    stac_io=_CheckedStacIO(catalog_href, policy))
    root_href = root.get_self_href() or catalog_href
    root_dir = posixpath.dirname(root_href) if "://" in root_href else str(Path(root_href).parent)
    collections = {c.id: c for c in root.get_all_collections()}
    _check_collections(catalog_href, search["collections"], collections)
    area = shapely.geometry.box(*search["bbox"]) if "bbox" in search else None
    interval = _interval(search["datetime"]) if "datetime" in search else None
    items = []
    for collection_id in search["collections"]:
        for item in collections[collection_id].get_items(recursive=True):
            if _matches(item, area, interval):
                item_dict = item.to_dict(include_self_link=True, transform_hrefs=True)
                item_dict["collection"] = collection_id
                items.append(_with_origin(item_dict, item.get_self_href() or root_href, root_dir))
    return items


def _check_collections(source: str, wanted: Iterable[str], available: Iterable[str]) -> None:
    known = sorted(available)
    missing = [c for c in wanted if c not in known]
    if missing:
        raise ValueError(f"{source}: no collection(s) {missing}; it has {known}")


def _interval(value: str) -> tuple[datetime | None, datetime | None]:
    """A normalised datetime parameter (``A``, ``A/B``, ``../B``, ``A/..``) as (start, end)."""
    ends = value.split("/")
    start, end = ends[0], ends[-1]
    return (None if start in _OPEN_END else str_to_datetime(start),
            None if end in _OPEN_END else str_to_datetime(end))


def _matches(item: pystac.Item, area: BaseGeometry | None,
             interval: tuple[datetime | None, datetime | None] | None) -> bool:
    """Whether ``item`` intersects ``area`` and ``interval`` (None: no constraint)."""
    if area is not None:
        if item.geometry is None or not shapely.geometry.shape(item.geometry).intersects(area):
            return False
    if interval is not None:
        start, end = interval
        meta = item.common_metadata
        item_start = meta.start_datetime or item.datetime
        item_end = meta.end_datetime or item.datetime
        if start is not None and item_end is not None and item_end < start:
            return False
        if end is not None and item_start is not None and item_start > end:
            return False
    return True


def _with_origin(item: dict[str, Any], base_href: str, root: str) -> dict[str, Any]:
    """``item`` with absolute link and asset hrefs (relative ones resolved against ``base_href``;
    an asset keeps its relative href as ``msgfm:catalog_href``) and ``msgfm:catalog_root``."""
    links = [{**link, "href": make_absolute_href(link["href"], base_href)}
             for link in item.get("links", [])]
    assets = {}
    for key, asset in item.get("assets", {}).items():
        href = asset["href"]
        if is_absolute_href(href):
            assets[key] = dict(asset)
        else:
            assets[key] = {**asset, "href": make_absolute_href(href, base_href),
                           CATALOG_HREF: href}
    return {**item, "links": links, "assets": assets,
            "properties": {**item["properties"], CATALOG_ROOT: root}}
