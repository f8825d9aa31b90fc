"""A static STAC catalog's items, read as plain JSON in chunks.

The catalog and collection files (few) are walked once (:func:`item_chunks`); the item files (up
to millions) are read in chunks (:func:`read_chunk`), which the pipeline's discover stage spreads
over its executor and ``model.predict``'s scene search reads in turn.

Items are read as plain JSON, not as pystac objects: building each item's pystac hierarchy cost
35 ms per item on a 5,000-item catalog (pystac looks up every link target in the whole resolved
tree), where this reader costs well under a millisecond. The dicts are what pystac's
``Catalog.get_items`` and ``Item.to_dict(include_self_link=True, transform_hrefs=True)`` give:

* the item is migrated to the current STAC version by pystac's own migration;
* links: the file's, less ``self`` and ``parent``, its ``root`` link (replaced in place, or
  appended) pointing at the root catalog, then ``self`` (the file) and ``parent`` (the catalog or
  collection that links to the item), the last three typed ``application/json`` and titled with
  their target's title;
* ``properties.datetime`` in pystac's canonical form (or null), entries with a null ``type``,
  ``title``, ``description`` or ``roles`` dropped from links and assets, keys in pystac's order.

The items of a collection are those it links to and those of its sub-catalogs, as pystac's
``get_items(recursive=True)``. Every child and item link passes the access policy, in the worker
that reads the item (:class:`catalogs.stac_search.CheckedStacIO`).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from pystac.serialization import identify_stac_object, migrate_to_latest
from pystac.utils import datetime_to_str, make_absolute_href, str_to_datetime

from catalogs.access_policy import AccessOptions
from catalogs.stac_search import (
    ITEM_FIELDS,
    CheckedStacIO,
    Search,
    check_collections,
    folder_of,
    matches,
    with_origin,
)

_JSON = "application/json"
_LINK_FIELDS = ("rel", "href", "type", "title")
_ASSET_FIELDS = ("href", "type", "title", "description", "roles")


@dataclass
class _Node:
    """A catalog or collection file: what items need of it, and what it links to."""

    href: str
    id: str
    title: str | None
    is_collection: bool
    children: list[_Node] = field(default_factory=list)
    item_hrefs: list[str] = field(default_factory=list)  # as written: resolved on the workers


@dataclass(frozen=True)
class ItemChunk:
    """Item files of one collection to read at once, each with its parent node."""

    source: str  # the catalog as the user named it (the access policy's origin)
    collection: str
    root: tuple[str, str | None]  # root catalog href and title
    root_dir: str
    # item link href (as the parent writes it), parent href, parent title
    entries: tuple[tuple[str, str, str | None], ...]

    def item_href(self, entry: int) -> str:
        """The absolute href of the item file of ``entries[entry]``."""
        href, parent_href, _ = self.entries[entry]
        return make_absolute_href(href, parent_href)


def item_chunks(
    catalog_href: str, search: Search, policy: AccessOptions, chunk_items: int
) -> list[ItemChunk]:
    """The item files of ``search.collections``, walked from the root catalog.

    In chunks of ``chunk_items`` files, each of one collection.

    Raises:
        ValueError: a collection is not in the catalog (naming those it has), or a catalog
            file is no JSON object.
        AccessRefused: a child link is refused by the access policy.
    """
    reader = CheckedStacIO(catalog_href, policy)
    root = _walk(reader, make_absolute_href(catalog_href), set())
    collections = {node.id: node for node in _collections(root)}
    check_collections(catalog_href, search.collections, collections)
    chunks = []
    for collection_id in search.collections:
        entries = list(_item_entries(collections[collection_id]))
        chunks.extend(
            ItemChunk(
                catalog_href,
                collection_id,
                (root.href, root.title),
                folder_of(root.href),
                tuple(entries[start : start + chunk_items]),
            )
            for start in range(0, len(entries), chunk_items)
        )
    return chunks


def _walk(reader: CheckedStacIO, href: str, seen: set[str]) -> _Node:
    """The catalog or collection at ``href`` with its children, depth first.

    A child already seen is not read again.
    """
    seen.add(href)
    record = _read_json(reader, href)
    node = _Node(
        href, record.get("id", ""), record.get("title"), record.get("type") == "Collection"
    )
    for link in record.get("links", []):
        if link.get("rel") == "item":  # up to millions: resolved on the workers
            node.item_hrefs.append(link["href"])
        elif link.get("rel") == "child":
            target = make_absolute_href(link["href"], href)
            if target not in seen:
                node.children.append(_walk(reader, target, seen))
    return node


def _collections(node: _Node) -> Iterator[_Node]:
    """The collections below ``node``, in pystac's ``get_all_collections`` order."""
    for child in node.children:
        if child.is_collection:
            yield child
        yield from _collections(child)


def _item_entries(node: _Node) -> Iterator[tuple[str, str, str | None]]:
    """(item link href, parent href, parent title) of the items of ``node``.

    Including those of its sub-catalogs.
    """
    for href in node.item_hrefs:
        yield href, node.href, node.title
    for child in node.children:
        yield from _item_entries(child)


def _read_json(reader: CheckedStacIO, href: str) -> dict[str, Any]:
    text = reader.read_text(href)
    try:
        record = json.loads(text)
    except ValueError as error:
        raise ValueError(f"{href}: not a JSON file: {error}") from error
    if not isinstance(record, dict):
        raise ValueError(f"{href}: not a STAC object (a JSON {type(record).__name__})")
    return record


def read_chunk(chunk: ItemChunk, search: Search, policy: AccessOptions) -> list[dict[str, Any]]:
    """The items of ``chunk`` that match ``search``, with their origin (``with_origin``).

    Raises:
        ValueError: an item file is no JSON object or no STAC item.
        AccessRefused: an item link is refused by the access policy.
    """
    reader = CheckedStacIO(chunk.source, policy)
    area, interval = search.area, search.interval
    items = []
    for entry, (_, parent_href, parent_title) in enumerate(chunk.entries):
        href = chunk.item_href(entry)
        record = _read_json(reader, href)
        if record.get("type") != "Feature":
            raise ValueError(f"{href}: an item link of {parent_href} names no STAC item")
        item = _as_pystac_writes(
            migrate_to_latest(record, identify_stac_object(record)),
            href,
            chunk.root,
            (parent_href, parent_title),
        )
        if matches(item, area, interval):
            item["collection"] = chunk.collection
            items.append(with_origin(item, href, chunk.root_dir))
    return items


def _as_pystac_writes(
    record: dict[str, Any], href: str, root: tuple[str, str | None], parent: tuple[str, str | None]
) -> dict[str, Any]:
    """The item file ``record`` (at ``href``) as pystac writes the item it reads from it.

    As written within its catalog: see the module docstring.
    """
    links = [
        _entry(link, _LINK_FIELDS)
        for link in record.get("links", [])
        if link.get("rel") not in ("self", "parent")
    ]
    root_link = _typed_link("root", *root)
    at = next((i for i, link in enumerate(links) if link.get("rel") == "root"), None)
    if at is None:
        links.append(root_link)
    else:
        links[at] = root_link
    links += [{"rel": "self", "href": href, "type": _JSON}, _typed_link("parent", *parent)]
    properties = dict(record.get("properties") or {})
    instant = properties.get("datetime")
    properties["datetime"] = None if instant is None else datetime_to_str(str_to_datetime(instant))
    item = {
        "type": "Feature",
        "stac_version": record["stac_version"],
        "stac_extensions": record.get("stac_extensions") or [],
        "id": record.get("id"),
        "geometry": record.get("geometry"),
        "bbox": record.get("bbox") or [],
        "properties": properties,
        "links": links,
        "assets": {
            key: _entry(asset, _ASSET_FIELDS) for key, asset in (record.get("assets") or {}).items()
        },
    }
    if record.get("collection"):
        item["collection"] = record["collection"]
    item.update((k, v) for k, v in record.items() if k not in ITEM_FIELDS)
    if not item["geometry"]:
        del item["bbox"]
    return item


def _typed_link(rel: str, href: str, title: str | None) -> dict[str, Any]:
    link = {"rel": rel, "href": href, "type": _JSON}
    return link if title is None else {**link, "title": title}


def _entry(record: dict[str, Any], fields: tuple[str, ...]) -> dict[str, Any]:
    """A link or asset as pystac writes it.

    Its own fields (less nulls) in pystac's order, then the others (an asset's ``roles`` last).
    """
    known = {k: record[k] for k in fields if record.get(k) is not None}
    extra = {k: v for k, v in record.items() if k not in fields}
    if "roles" in known:
        return {
            **{k: v for k, v in known.items() if k != "roles"},
            **extra,
            "roles": known["roles"],
        }
    return {**known, **extra}
