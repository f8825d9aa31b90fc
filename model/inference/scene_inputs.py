"""A scene's inputs: STAC items -> each input sensor read tile by tile onto the reference grid.

The items of one scene are a reference item and its partners (public APIs publish one sensor per
collection: Sentinel-2 L2A with a Sentinel-1 RTC item), or one item holding every sensor. Each
input sensor of the model is found among their assets (:mod:`catalogs.item_assets`); the
reference grid is the finest raster of the reference item's input sensors (PAN, not MS; the
10 m bands of Sentinel-2). Every tile is read through the reading layer the pipeline's
coregister stage uses (:mod:`catalogs.scene_reading`): each sensor's window that covers the tile
(plus the resampling kernel's margin) is read and warped onto the tile with the registry's
resampling rule, so a tile holds the same pixels as a chip of the store cut at the same window.
Only rasters no larger than one tile are read whole; memory follows the tile, not the scene.

Values reach the network as the fine-tuning data modules give them: float32 in the sensor's model
unit; sensors the model takes relative to the scene's lowest valid value (Vaihingen's DSM) have
that value subtracted (found in a first pass over the scene, block by block); missing values are
filled with the band's training mean (0 once normalised).
"""

from __future__ import annotations

import json
import math
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import numpy as np
import torch
from rasterio.windows import Window
from torch import Tensor
from torch.nn import functional as F
from torch.utils.data import Dataset

from catalogs.access_policy import (
    AccessRefused,
    check_host,
    is_local,
    local_path,
)
from catalogs.grid import Grid
from catalogs.item_assets import ItemReadError
from catalogs.scene_reading import Raster, open_raster, raster_sensors, sensor_block
from catalogs.sensors import get_sensor
from catalogs.stac_search import check_item_assets, folder_of, with_origin
from model.datasets.units import to_model_unit

MAX_RASTER_PX = 2_000_000_000  # a raster declaring more pixels is refused from its header
MAX_ITEM_BYTES = 16 * 2**20  # an item JSON larger than this is refused
OFFSET_BLOCK_PX = 2048  # block side of the pass that finds a relative sensor's lowest value


class SceneInputError(ValueError):
    """The items cannot give the model's inputs: names the item (or file) and the reason."""


@dataclass(frozen=True)
class ScenePolicy:
    """What ``model.predict`` may read beyond the default access policy (its command line).

    Attributes:
        allow_private_hosts: http(s) to loopback or private addresses.
        allow_local_files_from_remote: an item read over the network may name local files.
        allowed_local_folders: folders a local item may name files in, besides its own.
    """

    allow_private_hosts: bool = False
    allow_local_files_from_remote: bool = False
    allowed_local_folders: tuple[str, ...] = ()

    def option_name(self, option: str) -> str:
        """The command-line option that sets ``option``."""
        flag = "--" + option.replace("_", "-")
        return flag.removesuffix("s") if option == "allowed_local_folders" else flag  # repeatable


def read_item(source: str, policy: ScenePolicy = ScenePolicy()) -> dict[str, Any]:
    """A STAC item from a path or an http(s) URL, its asset hrefs absolute and allowed.

    Relative hrefs are resolved against the item's own location.

    Raises:
        SceneInputError: an item that cannot be read or is not a STAC item, or an asset href the
            access policy refuses (naming the item, the href and the option that allows it).
    """
    if not is_local(source) and urlsplit(source).scheme.lower() not in ("http", "https"):
        raise SceneInputError(f"{source}: read items from a path or an http(s) URL")
    try:
        text, base = _item_text(source, policy)
        if len(text) > MAX_ITEM_BYTES:
            raise SceneInputError(f"{source}: larger than {MAX_ITEM_BYTES} bytes")
        item = json.loads(text)
    except (OSError, AccessRefused, json.JSONDecodeError, UnicodeDecodeError) as error:
        raise SceneInputError(f"{source}: cannot read the item: {error}") from error
    if not isinstance(item, dict) or item.get("type") != "Feature" or "assets" not in item:
        raise SceneInputError(f"{source}: not a STAC item (a Feature with assets)")
    # The item's folder is its catalog root (a remote one may name remote files only).
    root = folder_of(base)
    unnamed = [
        key for key, asset in item["assets"].items() if not isinstance(asset.get("href"), str)
    ]
    if unnamed:
        raise SceneInputError(f"{source}: assets {unnamed} have no href")
    item = with_origin({"properties": {}, **item}, base, root)
    try:
        check_item_assets(item, policy)
    except AccessRefused as error:
        raise SceneInputError(f"{source}: {error.reason}") from error
    return item


def _item_text(source: str, policy: ScenePolicy) -> tuple[str, str]:
    """An item file's text (at most one byte over the limit) and its absolute location."""
    if is_local(source):
        path = local_path(source).resolve()
        with path.open() as stream:
            return stream.read(MAX_ITEM_BYTES + 1), str(path)
    check_host(source, policy)
    with urllib.request.urlopen(source, timeout=60) as response:
        return response.read(MAX_ITEM_BYTES + 1).decode(), source


@dataclass(frozen=True)
class SceneSources:
    """The rasters of every input sensor of one scene, and the reference grid.

    Attributes:
        item_id: the reference item's id.
        grid: the reference grid: the finest raster of the reference item's input sensors.
        rasters: per input sensor (the model's order), its rasters; several are mosaicked
            (each pixel from the first with data).
        offsets: per sensor, the value subtracted before the network (relative inputs).
    """

    item_id: str
    grid: Grid
    rasters: dict[str, list[Raster]]
    offsets: dict[str, float] = field(default_factory=dict)


def scene_sources(
    items: Sequence[Mapping[str, Any]], sensors: Sequence[str], tile_px: int
) -> SceneSources:
    """Find each of ``sensors`` among the items' assets and open its rasters.

    Args:
        items: the reference item first, then its partners.
        sensors: the model's input sensors (registry names).
        tile_px: rasters no larger than this are read whole, once.

    Raises:
        SceneInputError: naming the items and what they hold, when a sensor is in none of them,
            the reference item holds none of the sensors, or a raster cannot be opened.
    """
    found: dict[str, list[tuple[str, Any]]] = {}
    held: dict[str, list[str]] = {}
    try:
        for item in items:
            by_sensor = raster_sensors(dict(item))
            held[item["id"]] = sorted(by_sensor)
            for name, assets in by_sensor.items():
                found.setdefault(name, []).extend((item["id"], a) for a in assets)
    except ItemReadError as error:
        raise SceneInputError(str(error)) from error
    missing = [s for s in sensors if s not in found]
    if missing:
        raise SceneInputError(
            f"no item holds the model's input sensor(s) {missing}; the items hold {held}"
        )
    reference_id = items[0]["id"]
    try:
        rasters = {
            s: [
                open_raster(item_id, asset, max_raster_px=MAX_RASTER_PX, block_px=tile_px)
                for item_id, asset in found[s]
            ]
            for s in sensors
        }
    except ItemReadError as error:
        raise SceneInputError(str(error)) from error
    own = [
        r.grid
        for s in sensors
        for (item_id, _), r in zip(found[s], rasters[s], strict=True)
        if item_id == reference_id
    ]
    if not own:
        raise SceneInputError(
            f"the reference item {reference_id!r} holds none of the model's input sensors "
            f"{list(sensors)} (it holds {held[reference_id]}); name it first"
        )
    return SceneSources(reference_id, min(own, key=lambda g: g.pixel_area), rasters)


def with_relative_offsets(sources: SceneSources, relative: Sequence[str]) -> SceneSources:
    """``sources`` with the lowest valid value of each sensor of ``relative`` on the grid.

    One pass over the scene in blocks of :data:`OFFSET_BLOCK_PX`: memory follows the block.
    A sensor without any valid pixel gets 0.
    """
    offsets = dict(sources.offsets)
    rows, cols = sources.grid.shape
    for name in relative:
        sensor = get_sensor(name)
        lowest = math.inf
        for row in range(0, rows, OFFSET_BLOCK_PX):
            for col in range(0, cols, OFFSET_BLOCK_PX):
                window = Window(
                    col, row, min(OFFSET_BLOCK_PX, cols - col), min(OFFSET_BLOCK_PX, rows - row)
                )
                block = sensor_block(sources.item_id, sources.rasters[name], sources.grid, window)
                values = to_model_unit(torch.from_numpy(block.data), sensor)
                present = values[:, torch.from_numpy(~block.invalid)]
                if present.numel():
                    lowest = min(lowest, float(present.min()))
        offsets[name] = 0.0 if math.isinf(lowest) else lowest
    return SceneSources(sources.item_id, sources.grid, sources.rasters, offsets)


class SceneTiles(Dataset[dict[str, Any]]):
    """The tiles of a scene as network inputs: one item per window of the reference grid.

    Each item: ``index``; ``inputs`` ``{sensor: (C, tile_px, tile_px) float32}`` (a window
    smaller than a tile, at the scene's edge, padded by repeating its border); ``valid``
    ``(tile_px, tile_px)`` bool, True where every sensor has data.
    """

    def __init__(
        self,
        sources: SceneSources,
        windows: Sequence[tuple[int, int, int, int]],
        tile_px: int,
        means: Mapping[str, Tensor],
    ) -> None:
        """Initialise the tiles.

        Args:
            sources: the scene's rasters and grid.
            windows: ``(row, col, rows, cols)`` of each tile, at most ``tile_px`` a side.
            tile_px: side of the network's input.
            means: per sensor, the (C,) training means that fill missing values.
        """
        self.sources = sources
        self.windows = list(windows)
        self.tile_px = tile_px
        self.means = {name: m.float() for name, m in means.items()}

    def __len__(self) -> int:
        """Number of tiles."""
        return len(self.windows)

    def __getitem__(self, index: int) -> dict[str, Any]:
        """The inputs of tile ``index`` and where they hold data."""
        row, col, rows, cols = self.windows[index]
        window = Window(col, row, cols, rows)
        inputs: dict[str, Tensor] = {}
        valid = torch.ones((rows, cols), dtype=torch.bool)
        for name, rasters in self.sources.rasters.items():
            block = sensor_block(self.sources.item_id, rasters, self.sources.grid, window)
            values = to_model_unit(
                torch.from_numpy(np.ascontiguousarray(block.data)), get_sensor(name)
            )
            missing = torch.from_numpy(block.invalid) | torch.isnan(values).any(dim=0)
            values -= self.sources.offsets.get(name, 0.0)
            values = torch.where(missing, self.means[name][:, None, None], values)
            inputs[name] = self._padded(values)
            valid &= ~missing
        padded_valid = torch.zeros((self.tile_px, self.tile_px), dtype=torch.bool)
        padded_valid[:rows, :cols] = valid
        return {"index": index, "inputs": inputs, "valid": padded_valid}

    def _padded(self, values: Tensor) -> Tensor:
        rows, cols = values.shape[-2:]
        if (rows, cols) == (self.tile_px, self.tile_px):
            return values
        return F.pad(
            values[None], (0, self.tile_px - cols, 0, self.tile_px - rows), mode="replicate"
        )[0]
