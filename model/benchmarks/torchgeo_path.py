"""The TorchGeo-user path to paired Sentinel-2 / Sentinel-1 chips, without the GeoPile-2 store.

A TorchGeo user with the source COGs (and no store) would write one ``RasterDataset`` per sensor,
join them with ``&`` (an ``IntersectionDataset``: TorchGeo reprojects Sentinel-1 onto
Sentinel-2's CRS and resolution on the fly, through GDAL warped VRTs), draw chips with a
``RandomGeoSampler`` and batch them with ``stack_samples``. This module builds exactly that, with
TorchGeo's defaults (file-handle cache on, GDAL's default block cache, TorchGeo's resampling), and
times it; :func:`paired_source_files` finds the COGs behind a store's pairs through the catalog.

TorchGeo 0.8.1 quirks met here:

* ``IntersectionDataset`` concatenates the two images along the band axis by default
  (``concat_samples``); we pass a ``collate_fn`` that keeps each sensor's image under its name.
* ``RandomGeoSampler`` draws the tile with ``torch.multinomial`` on the *global* torch RNG (its
  ``generator`` only places the box inside the tile), so a seeded run also seeds the global RNG,
  inside ``torch.random.fork_rng`` so the caller's RNG state is left as it was.
* A chip as large as a tile fits (the sampler keeps tiles with ``extent >= size``; the box's
  offset is then 0): chip_px=256 on the 256 px Sentinel-2 patches samples whole patches.
* A query selects every file whose bounds *touch* it (``GeoDataFrame.cx`` is inclusive), so a
  whole-patch chip of the SEN12MS layout (edge-adjacent patches) merges two S2 and two S1 files.
* Setting the second dataset's CRS prints ``Converting ... CRS from ... to ...`` to stdout; we
  silence it (it is not part of the timed loop).
* The Sentinel-1 warp is two resamplings: ``WarpedVRT`` (nearest, TorchGeo's default there) to
  a grid GDAL picks, then ``rasterio.merge`` (bilinear, as ``dtype`` is float32) onto the query
  grid, on dB values; the store's co-registration averages in linear power instead.
"""

from __future__ import annotations

import contextlib
import io
import os
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import pystac
import torch
from torch.utils.data import DataLoader
from torchgeo.datasets import IntersectionDataset, RasterDataset, stack_samples
from torchgeo.samplers import RandomGeoSampler

from catalogs.sensors import get_sensor
from catalogs.stac import SENSOR_FIELD
from catalogs.store_format import (
    INDEX_A,
    INDEX_B,
    ITEM_ID,
    PAIRS_GROUP,
    SENSOR_A,
    SENSOR_B,
    SOURCE,
    open_store,
)

OPTICAL_SENSOR = "sentinel2_l2a"
SAR_SENSOR = "sentinel1_grd"


# --- the source files behind a store's pairs ---------------------------------------------------


class SourceFileError(FileNotFoundError):
    """A store chip's source file cannot be found through the catalog; names the item."""


def _store_pair_chips(store: Path, sensor_a: str, sensor_b: str) -> list[tuple[int, int]]:
    """The (chip of ``sensor_a``, chip of ``sensor_b``) index pairs of the store's pairs table.

    In table order, whichever order the table names the two sensors in.
    """
    pairs = open_store(store)[PAIRS_GROUP]
    names_a, names_b = pairs[SENSOR_A][:], pairs[SENSOR_B][:]
    index_a, index_b = pairs[INDEX_A][:], pairs[INDEX_B][:]
    chips = []
    for name_a, name_b, chip_a, chip_b in zip(names_a, names_b, index_a, index_b, strict=True):
        if (str(name_a), str(name_b)) == (sensor_a, sensor_b):
            chips.append((int(chip_a), int(chip_b)))
        elif (str(name_a), str(name_b)) == (sensor_b, sensor_a):
            chips.append((int(chip_b), int(chip_a)))
    return chips


def _chip_items(store: Path, sensor: str) -> list[tuple[str, str]]:
    """Per chip of ``sensor``, the (source collection, item id) it was cut from."""
    group = open_store(store)[sensor]
    return [
        (str(source), str(item_id))
        for source, item_id in zip(group[SOURCE][:], group[ITEM_ID][:], strict=True)
    ]


def _collection_items(catalog: pystac.Catalog, source: str) -> dict[str, pystac.Item]:
    """The items of the catalog's collection ``source``, by id."""
    collection = catalog.get_child(source)
    if collection is None:
        raise SourceFileError(f"{catalog.self_href}: no collection {source!r}")
    return {item.id: item for item in collection.get_items()}


def _sensor_file(item: pystac.Item, sensor: str) -> Path:
    """The local file of the item's asset of registry sensor ``sensor``.

    Raises:
        SourceFileError: the item has no such asset, or its file does not exist.
    """
    for key, asset in item.assets.items():
        if asset.extra_fields.get(SENSOR_FIELD) == sensor:
            path = Path(os.path.normpath(asset.get_absolute_href()))
            if not path.is_file():
                raise SourceFileError(
                    f"item {item.id!r}: asset {key!r} ({sensor}): missing file {path}"
                )
            return path
    raise SourceFileError(f"item {item.id!r}: no asset of sensor {sensor!r}")


def paired_source_files(
    store: Path, catalog: Path, sensor_a: str = OPTICAL_SENSOR, sensor_b: str = SAR_SENSOR
) -> list[tuple[Path, Path]]:
    """The source COGs behind the store's pairs of two sensors, one pair of files per location.

    Each paired chip's (source, item_id) is looked up in the static STAC catalog; the file is the
    item's asset whose ``msgfm:sensor`` names the chip's sensor.

    Args:
        store: the GeoPile-2 store.
        catalog: the static STAC catalog (``catalog.json``) the store was built from.
        sensor_a: registry name of the first sensor of each pair (Sentinel-2 by default).
        sensor_b: registry name of its partner (Sentinel-1 by default).

    Returns:
        (file of ``sensor_a``, file of ``sensor_b``) per location, absolute, in store order,
        without repeats.

    Raises:
        SourceFileError: a chip's collection, item, asset or file is not found (names the item).
    """
    chips_a, chips_b = _chip_items(store, sensor_a), _chip_items(store, sensor_b)
    root = pystac.Catalog.from_file(str(catalog))
    items: dict[str, dict[str, pystac.Item]] = {}
    files: dict[tuple[Path, Path], None] = {}  # ordered set
    for chip_a, chip_b in _store_pair_chips(store, sensor_a, sensor_b):
        pair = []
        for sensor, (source, item_id) in ((sensor_a, chips_a[chip_a]), (sensor_b, chips_b[chip_b])):
            if source not in items:
                items[source] = _collection_items(root, source)
            if item_id not in items[source]:
                raise SourceFileError(
                    f"item {item_id!r}: not in collection {source!r} of {catalog}"
                )
            pair.append(_sensor_file(items[source][item_id], sensor))
        files[(pair[0], pair[1])] = None
    return list(files)


# --- the TorchGeo datasets ---------------------------------------------------------------------


class Sentinel2Files(RasterDataset):
    """Sentinel-2 L2A COGs (SEN12MS layout), read as float32 on their own grid.

    12 bands B01-B12 (no B10), uint16 reflectance x 10000, 10 m, nodata 0.
    """

    filename_glob = "*.tif"
    is_image = True
    all_bands: ClassVar[tuple[str, ...]] = get_sensor(OPTICAL_SENSOR).band_names


class Sentinel1Files(RasterDataset):
    """Sentinel-1 GRD COGs (SEN12MS layout): VV and VH backscatter in dB.

    Float32, 10 m, nodata NaN, warped by TorchGeo onto the grid of the dataset it is
    intersected with.
    """

    filename_glob = "*.tif"
    is_image = True
    all_bands: ClassVar[tuple[str, ...]] = get_sensor(SAR_SENSOR).band_names


def _keep_both_images(samples: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """IntersectionDataset collate: each sensor's image under its registry name.

    Not one concatenated ``image``; with the first sample's other keys (``crs`` and ``bounds``
    in TorchGeo 0.8; from 0.10, ``bounds`` and ``transform``, and no ``crs``).
    """
    optical, sar = samples
    metadata = {key: value for key, value in optical.items() if key != "image"}
    return {**metadata, OPTICAL_SENSOR: optical["image"], SAR_SENSOR: sar["image"]}


def torchgeo_pair_dataset(files: Sequence[tuple[Path, Path]]) -> IntersectionDataset:
    """Sentinel-2 & Sentinel-1 as a TorchGeo user joins them (S1 warped to S2's CRS and res).

    Args:
        files: (Sentinel-2 COG, Sentinel-1 COG) per location.

    Returns:
        The intersection dataset; samples hold ``sentinel2_l2a`` (12, H, W) and
        ``sentinel1_grd`` (2, H, W) float32 images.

    Raises:
        ValueError: ``files`` is empty.
    """
    if not files:
        raise ValueError("no paired source files")
    optical = Sentinel2Files(paths=[path for path, _ in files])
    sar = Sentinel1Files(paths=[path for _, path in files])
    with contextlib.redirect_stdout(io.StringIO()):  # "Converting Sentinel1Files CRS ..."
        return IntersectionDataset(optical, sar, collate_fn=_keep_both_images)


def _pair_loader(
    dataset: IntersectionDataset,
    chip_px: int,
    samples: int,
    batch_size: int,
    num_workers: int,
    seed: int,
) -> DataLoader[dict[str, Any]]:
    """``RandomGeoSampler`` (chip_px at the dataset's resolution) + ``DataLoader``."""
    generator = torch.Generator().manual_seed(seed)
    sampler = RandomGeoSampler(dataset, size=chip_px, length=samples, generator=generator)
    return DataLoader(
        dataset,
        batch_size=batch_size,
        sampler=sampler,
        collate_fn=stack_samples,
        num_workers=num_workers,
    )


@contextlib.contextmanager
def _seeded(seed: int) -> Iterator[None]:
    """Seed the global torch RNG (RandomGeoSampler draws tiles from it), restoring it after."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield


def _check_batch(batch: dict[str, Any], chip_px: int) -> None:
    """Both sensors' images in the batch have the expected shapes.

    Raises:
        RuntimeError: a shape differs (names the sensor, expected and actual shapes).
    """
    size = len(batch[OPTICAL_SENSOR])
    for sensor in (OPTICAL_SENSOR, SAR_SENSOR):
        expected = (size, get_sensor(sensor).num_bands, chip_px, chip_px)
        if tuple(batch[sensor].shape) != expected:
            raise RuntimeError(
                f"TorchGeo path: {sensor} batch has shape "
                f"{tuple(batch[sensor].shape)}, expected {expected}"
            )


@dataclass(frozen=True)
class LoaderTiming:
    """A timed run of a loader: the pairs loaded after the warm-up batch and how long it took."""

    samples: int
    seconds: float
    setup_seconds: float = 0.0  # building the datasets' index (not in ``seconds``)

    @property
    def samples_per_s(self) -> float:
        """Pairs per second over the timed part of the run."""
        return self.samples / self.seconds


def torchgeo_pairs_per_s(
    files: Sequence[tuple[Path, Path]],
    chip_px: int,
    samples: int,
    batch_size: int,
    num_workers: int = 0,
    seed: int = 0,
) -> LoaderTiming:
    """Time the TorchGeo path: paired chips through RandomGeoSampler and a DataLoader.

    The first batch (worker start-up, file opening) is a warm-up; the rest are timed.

    Args:
        files: (Sentinel-2 COG, Sentinel-1 COG) per location.
        chip_px: chip side in Sentinel-2 pixels (at most the patch size, 256 for SEN12MS).
        samples: pairs drawn in all, the warm-up batch included.
        batch_size: pairs per batch.
        num_workers: DataLoader worker processes (0: load in this process).
        seed: seed of the sampler.

    Returns:
        The pairs loaded after the warm-up batch and the seconds they took.

    Raises:
        ValueError: fewer samples than two batches' worth.
        RuntimeError: a batch's images do not have the expected shapes.
    """
    if samples <= batch_size:
        raise ValueError(
            f"samples ({samples}) must exceed batch_size ({batch_size}): the "
            "first batch is a warm-up"
        )
    start = time.perf_counter()
    dataset = torchgeo_pair_dataset(files)
    setup_s = time.perf_counter() - start
    with _seeded(seed):
        batches = iter(_pair_loader(dataset, chip_px, samples, batch_size, num_workers, seed))
        _check_batch(next(batches), chip_px)
        timed = 0
        start = time.perf_counter()
        for batch in batches:
            timed += len(batch[OPTICAL_SENSOR])
        seconds = time.perf_counter() - start
    return LoaderTiming(samples=timed, seconds=seconds, setup_seconds=setup_s)
