"""Checks the catalog builder tests share: what an asset says of its file, what a build reports,
what the CLI writes."""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pystac
import rasterio
from PIL import Image

from catalogs.build import main
from catalogs.stac import BuildResult, validate_core

WGS84_A, WGS84_F = 6378137.0, 1 / 298.257223563


@dataclass(frozen=True)
class StartsWith:
    """Equal to a string that starts with ``start`` and ends with ``end``: a reason that quotes
    a library's error message."""

    start: str
    end: str = ""

    def __eq__(self, other: object) -> bool:
        return isinstance(other, str) and other.startswith(self.start) and other.endswith(self.end)


def problems(result: BuildResult) -> list[tuple[str, str]]:
    """The skipped files of a build as ``(path, reason)``, in the order they were reported."""
    return [(p.path, p.reason) for p in result.problems]


def items_by_id(result: BuildResult) -> dict[str, pystac.Item]:
    """The build's Items by id."""
    return {item.id: item for item in result.items}


def assets_of(items: Iterable[pystac.Item]) -> list[pystac.Asset]:
    """Every asset of ``items``."""
    return [asset for item in items for asset in item.assets.values()]


def assert_builds_cleanly(result: BuildResult, ids: Sequence[str]) -> None:
    """The build made the Items ``ids``, in this order, and skipped no file."""
    assert [item.id for item in result.items] == list(ids)
    assert result.problems == []


def assert_one_item_per_picture(
    result: BuildResult, ids: Sequence[str], root: Path, pictures: Iterable[str]
) -> None:
    """The build made the Items ``ids``, in this order, each of the picture (relative to
    ``root``) at its place in ``pictures``, and skipped no file."""
    assert_builds_cleanly(result, ids)
    assert [item.assets["image"].href for item in result.items] == [
        str(root / relative) for relative in pictures
    ]


def assert_proj_fields(asset: pystac.Asset) -> None:
    """The asset's ``proj:`` fields are its raster file's; ``gsd`` its pixel size where the CRS is
    projected (geographic: see ``test_stac``)."""
    fields = asset.extra_fields
    with rasterio.open(asset.href) as src:
        assert fields["proj:code"] == f"EPSG:{src.crs.to_epsg()}"
        assert fields["proj:transform"] == list(src.transform)[:6]
        assert fields["proj:shape"] == [src.height, src.width]
        if not src.crs.is_geographic:
            assert fields["gsd"] == src.res[0]


def assert_picture_fields(asset: pystac.Asset, shape: Sequence[int]) -> None:
    """The asset of a picture without georeference: null ``proj:code``, the picture's shape,
    which is ``shape`` (rows, columns)."""
    fields = asset.extra_fields
    with Image.open(asset.href) as image:
        assert fields["proj:shape"] == [image.height, image.width] == list(shape)
    assert fields["proj:code"] is None
    assert "proj:transform" not in fields


def assert_file_fields(asset: pystac.Asset) -> None:
    """The asset's ``file:checksum`` (sha2-256 multihash) and ``file:size`` are its file's."""
    content = Path(asset.href).read_bytes()
    assert asset.extra_fields["file:checksum"] == "1220" + hashlib.sha256(content).hexdigest()
    assert asset.extra_fields["file:size"] == len(content)


def assert_undated_pictures(items: Iterable[pystac.Item], start: str, end: str) -> None:
    """Items without georeference or datetime, only the range ``start`` .. ``end``."""
    for item in items:
        stac = item.to_dict()
        assert stac["geometry"] is None
        assert "bbox" not in stac
        assert stac["properties"]["datetime"] is None
        assert stac["properties"]["start_datetime"] == start
        assert stac["properties"]["end_datetime"] == end


def build_with_cli(
    source: str, root: Path, out: Path, ids: Sequence[str]
) -> tuple[list[pystac.Item], list[dict[str, Any]]]:
    """Run ``python -m catalogs.build source --root root --out out`` and check what it wrote.

    Checked: the command succeeds; the catalog, its collection and one Item per id (no other
    STAC document) are valid STAC; pystac reads the Items ``ids`` back, every asset's href
    pointing at a file.

    Returns:
        The Items read back, sorted by id, and ``problems.json``.
    """
    assert main([source, "--root", str(root), "--out", str(out)]) == 0
    documents = sorted(p for p in out.rglob("*.json") if p.name != "problems.json")
    assert len(documents) == 1 + 1 + len(ids)  # catalog, collection, items
    assert {str(p): validate_core(json.loads(p.read_text())) for p in documents} == {
        str(p): [] for p in documents
    }
    catalog = pystac.Catalog.from_file(str(out / "catalog.json"))
    items = sorted(catalog.get_items(recursive=True), key=lambda item: item.id)
    assert [item.id for item in items] == sorted(ids)
    for item in items:
        for asset in item.assets.values():
            assert Path(asset.get_absolute_href()).is_file(), (item.id, asset.href)
    return items, json.loads((out / "problems.json").read_text())


def wgs84_pixel_side_m(pixel_deg: float, lat_deg: float) -> float:
    """Closed-form side (m) of a square of the area of a small WGS84 pixel at ``lat_deg``."""
    e2 = WGS84_F * (2 - WGS84_F)
    w = math.sqrt(1 - e2 * math.sin(math.radians(lat_deg)) ** 2)
    east_west = WGS84_A / w * math.cos(math.radians(lat_deg)) * math.radians(pixel_deg)
    north_south = WGS84_A * (1 - e2) / w**3 * math.radians(pixel_deg)
    return math.sqrt(east_west * north_south)


def validate_tree(catalog_path: Path | str) -> dict[str, list[str]]:
    """Core-validate every STAC object of a static catalog, following child and item links.

    Args:
        catalog_path: a ``catalog.json``, or the folder holding one.

    Returns:
        ``{path: errors}`` for the invalid objects and for links to missing files.
    """
    root = Path(catalog_path)
    pending = [root / "catalog.json" if root.is_dir() else root]
    seen: set[Path] = set()
    failures: dict[str, list[str]] = {}
    while pending:
        path = pending.pop().resolve()
        if path in seen:
            continue
        seen.add(path)
        if not path.is_file():
            failures[str(path)] = ["linked, but there is no such file"]
            continue
        stac = json.loads(path.read_text())
        errors = validate_core(stac)
        if errors:
            failures[str(path)] = errors
        pending.extend(
            path.parent / link["href"]
            for link in stac.get("links", [])
            if link.get("rel") in ("child", "item")
        )
    return failures
