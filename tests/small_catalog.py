"""Hand-made static STAC catalogs for discover and fetch tests, written as plain JSON."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from catalogs.stac import file_fields

CATALOG_ID = "small"


def file_asset(path: Path, href: str | None = None, **fields: Any) -> dict[str, Any]:
    """An asset of the file at ``path`` with its ``file:checksum`` and ``file:size``.

    Args:
        path: the file (read for its checksum and size).
        href: the asset's href as the catalog writes it; ``path`` by default.
        fields: further asset fields, overriding the computed ones.
    """
    return {
        "href": href or str(path),
        "roles": ["data"],
        "msgfm:sensor": "rgb",
        **file_fields(path),
        **fields,
    }


def stac_item(
    item_id: str,
    assets: dict[str, dict[str, Any]],
    bbox: list[float] | None = None,
    when: str | None = "2020-01-01T00:00:00Z",
) -> dict[str, Any]:
    """A STAC item dict: a box geometry from ``bbox`` (none without), instant ``when``."""
    geometry = None
    if bbox is not None:
        west, south, east, north = bbox
        geometry = {
            "type": "Polygon",
            "coordinates": [
                [[west, south], [east, south], [east, north], [west, north], [west, south]]
            ],
        }
    item = {
        "type": "Feature",
        "stac_version": "1.1.0",
        "stac_extensions": [],
        "id": item_id,
        "geometry": geometry,
        "properties": {"datetime": when},
        "links": [],
        "assets": assets,
    }
    if bbox is not None:
        item["bbox"] = bbox
    return item


def write_catalog(root: Path, collection_id: str, items: list[dict[str, Any]]) -> Path:
    """A static catalog at ``root``: one collection, its items at
    ``root/<collection>/<item id>/<item id>.json`` (relative asset hrefs are relative to that
    folder). Returns ``root/catalog.json``."""
    collection_dir = root / collection_id
    item_links = []
    for item in items:
        item_path = collection_dir / item["id"] / f"{item['id']}.json"
        item_path.parent.mkdir(parents=True, exist_ok=True)
        record = {
            **item,
            "collection": collection_id,
            "links": [
                {"rel": "root", "href": "../../catalog.json"},
                {"rel": "parent", "href": "../collection.json"},
                {"rel": "collection", "href": "../collection.json"},
            ],
        }
        item_path.write_text(json.dumps(record))
        item_links.append({"rel": "item", "href": f"./{item['id']}/{item['id']}.json"})
    collection = {
        "type": "Collection",
        "stac_version": "1.1.0",
        "id": collection_id,
        "description": "test collection",
        "license": "CC-BY-4.0",
        "extent": {
            "spatial": {"bbox": [[-180.0, -90.0, 180.0, 90.0]]},
            "temporal": {"interval": [[None, None]]},
        },
        "links": [
            {"rel": "root", "href": "../catalog.json"},
            {"rel": "parent", "href": "../catalog.json"},
            *item_links,
        ],
    }
    (collection_dir / "collection.json").write_text(json.dumps(collection))
    catalog = {
        "type": "Catalog",
        "stac_version": "1.1.0",
        "id": CATALOG_ID,
        "description": "test catalog",
        "links": [
            {"rel": "root", "href": "./catalog.json"},
            {"rel": "child", "href": f"./{collection_id}/collection.json"},
        ],
    }
    (root / "catalog.json").write_text(json.dumps(catalog))
    return root / "catalog.json"
