"""STAC Collections of the source datasets, from ``catalogs/sources.yaml``."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from functools import cache
from pathlib import Path
from typing import Any

import pystac
import yaml

from catalogs.stac import EXTENSIONS

SOURCES_PATH = Path(__file__).with_name("sources.yaml")
_PER_FILE_FIELDS = (
    "file:checksum",
    "file:size",
    "proj:shape",
    "proj:transform",
    "proj:bbox",
    "proj:code",
    "proj:wkt2",
)


@cache
def sources() -> dict[str, dict[str, Any]]:
    """Every source's metadata entry, by collection id."""
    with open(SOURCES_PATH) as f:
        return yaml.safe_load(f)


def source_info(source: str) -> dict[str, Any]:
    """The metadata entry of ``source``; KeyError listing the known sources otherwise."""
    known = sources()
    if source not in known:
        raise KeyError(f"unknown source {source!r}; known sources: {sorted(known)}")
    return known[source]


def _parse_time(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def _item_assets(items: Sequence[pystac.Item]) -> dict[str, dict[str, Any]]:
    """``item_assets`` from the items themselves, so the collection describes what is there."""
    described: dict[str, dict[str, Any]] = {}
    for item in items:
        for key, asset in item.assets.items():
            if key in described:
                continue
            fields = {
                k: v
                for k, v in asset.to_dict().items()
                if k not in _PER_FILE_FIELDS and k != "href"
            }
            described[key] = fields
    return described


def _extent(info: dict[str, Any], items: Sequence[pystac.Item], sample: bool) -> pystac.Extent:
    if sample:
        boxes = [item.bbox for item in items if item.bbox]
        times = [
            t
            for item in items
            for t in (
                item.datetime,
                item.common_metadata.start_datetime,
                item.common_metadata.end_datetime,
            )
            if t
        ]
        bbox = (
            [
                min(b[0] for b in boxes),
                min(b[1] for b in boxes),
                max(b[2] for b in boxes),
                max(b[3] for b in boxes),
            ]
            if boxes
            else [-180.0, -90.0, 180.0, 90.0]
        )
        interval = [min(times), max(times)] if times else [None, None]
    else:
        bbox = info["extent"]["bbox"]
        interval = [_parse_time(t) if t else None for t in info["extent"]["interval"]]
    return pystac.Extent(pystac.SpatialExtent([bbox]), pystac.TemporalExtent([interval]))


def source_collection(
    source: str, items: Sequence[pystac.Item], sample: bool = False
) -> pystac.Collection:
    """The Collection of ``source`` holding ``items``.

    With ``sample=True`` the collection describes the embedded sample world's stand-in for the
    source: the title says so and the extent is the items' own; everything else (licence,
    citation, providers) still names the real dataset it imitates.
    """
    info = source_info(source)
    title = f"Sample world stand-in for {info['title']}" if sample else info["title"]
    collection = pystac.Collection(
        id=source,
        title=title,
        description=" ".join(info["description"].split()),
        extent=_extent(info, items, sample),
        license=info["license"],
        keywords=info.get("keywords"),
        providers=[pystac.Provider(**p) for p in info.get("providers", [])],
        extra_fields={
            "sci:citation": " ".join(info["citation"].split()),
            **({"sci:doi": info["doi"]} if info.get("doi") else {}),
            "msgfm:role": info["role"],
            "msgfm:layout": info["layout"],
            "msgfm:pairs": info.get("pairs", []),
            **(
                {"msgfm:license_note": " ".join(info["license_note"].split())}
                if info.get("license_note")
                else {}
            ),
            "item_assets": _item_assets(items),
        },
        stac_extensions=[EXTENSIONS["scientific"]],
    )
    originals = info["originals"]
    collection.add_link(pystac.Link("via", originals["href"], title=originals["title"]))
    if info.get("license_href"):
        collection.add_link(
            pystac.Link("license", info["license_href"], title=f"Licence terms of {info['title']}")
        )
    for item in items:
        collection.add_item(item)
    return collection
