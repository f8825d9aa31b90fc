"""GeoPile-2 dataset."""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from matplotlib.figure import Figure
from torchgeo.datasets import DatasetNotFoundError, NonGeoDataset

from catalogs import store_format as fmt
from model.datasets.chip_reader import ChipReadError, ImageLayout, ShardedChipReader
from model.datasets.display import composite, panel_figure
from model.datasets.shared_rows import empty_rows
from model.datasets.units import check_convertible, stored_as_model_unit, to_model_unit

PARTNER_PREFIX = "image_"


def location_fraction(source: str, item_id: str) -> float:
    """A location's place in [0, 1), from its source and item id.

    Stable across runs, machines and store rebuilds, so a split never changes while the location
    stays in the store.
    """
    digest = hashlib.blake2b(f"{source}/{item_id}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2.0**64


@dataclass
class _SensorChips:
    """One sensor of the store as the dataset reads it."""

    manifest: fmt.SensorManifest
    reader: ShardedChipReader
    item_id: np.ndarray
    source: np.ndarray
    crs: np.ndarray
    transform: np.ndarray
    bounds_lonlat: np.ndarray

    def __post_init__(self) -> None:
        m = self.manifest
        # Chips already float32 in the model's unit are decoded straight into the output.
        self.decoded_as_is = stored_as_model_unit(m)
        self.nodata_value = (
            None
            if m.nodata is None or math.isnan(m.nodata)
            else np.asarray(m.nodata, dtype=m.dtype)
        )
        # An integer nodata at the end of its dtype's range (0 in uint16 reflectance) is
        # found by a min or max: one pass without a mask, ~2x faster than ``==`` and ``any``.
        limits = np.iinfo(m.dtype) if np.issubdtype(m.dtype, np.integer) else None
        self.nodata_extreme = (
            None
            if self.nodata_value is None or limits is None
            else np.min
            if m.nodata == limits.min
            else np.max
            if m.nodata == limits.max
            else None
        )

    def holds_nodata(self, stored: np.ndarray) -> bool:
        """Whether chip values ``stored`` (in the stored dtype) hold the nodata value."""
        if self.nodata_value is None:
            return False
        if self.nodata_extreme is not None:
            return bool(self.nodata_extreme(stored) == self.nodata_value)
        return bool((stored == self.nodata_value).any())

    def read_into(self, chip: int, out: torch.Tensor, stored: bool) -> None:
        """Chip ``chip`` into ``out`` (C x H x W).

        As stored when ``stored`` (``out`` in the stored dtype), else float32 in the model's unit,
        nodata NaN.
        """
        if stored or self.decoded_as_is:
            values = self.reader.read(chip, out=out.numpy())
            if stored:
                return
            source = out
        else:  # decoded into a per-process buffer, then converted into ``out``
            values = self.reader.read(chip, out=self.reader.buffer())
            source = torch.from_numpy(values)
        to_model_unit(source, self.manifest, out=out, has_nodata=self.holds_nodata(values))


class GeoPile2(NonGeoDataset):
    """GeoPile-2: the multisensor pretraining corpus of msGFM, as built by this project.

    One Zarr v3 store (``dvc repro`` builds it; the layout is in :mod:`catalogs.store_format`)
    holding chips of every sensor of the sensor registry that its sources provide:

    * ``sentinel2_l2a`` (or ``sentinel2_l1c``): Sentinel-2 MSI, 12 (13) bands, reflectance,
      10 m, paired with ``sentinel1_grd``: Sentinel-1 IW GRD VV and VH in dB (SEN12MS);
    * ``rgb``: 8-bit red, green, blue: aerial RGB paired with ``dsm``, a digital surface model
      in metres (MDAS), and unpaired, mostly ungeoreferenced pictures (Million-AID, GeoPile);
    * chips are 256 x 256 pixels; a pair is two sensors' chips on one pixel grid.

    Each sample is one chip of one sensor: ``image`` (float32, C x H x W, in the unit the
    registry's ``model_unit`` names, nodata as NaN; with ``stored=True``, as stored),
    ``sensor`` (its name), ``index`` (its chip index in the sensor's group), ``crs``
    (``"EPSG:<code>"``, ``""`` without one), ``transform`` (float64 affine a, b, c, d, e, f
    of the chip's grid) and ``bounds`` (float64 west, south, east, north in degrees), both
    NaN without georeference, and, for a paired chip, each partner chip as
    ``image_<sensor>`` for cross-sensor reconstruction.

    Splits are by location: a location (source and item id) goes to ``train``, ``val`` or
    ``test`` by a hash of its name (80 / 10 / 10 %), so all chips of a scene, and both chips
    of a pair, are in one split, and the split of a location never changes when the store is
    rebuilt or grows. ``all`` is every chip.

    If you use this dataset in your research, please cite:

    * Han et al., "Bridging Remote Sensors with Multisensor Geospatial Foundation Models",
      CVPR 2024. https://arxiv.org/abs/2404.01260
    """

    splits: ClassVar[tuple[str, ...]] = ("train", "val", "test", "all")
    split_ranges: ClassVar[dict[str, tuple[float, float]]] = {
        "train": (0.0, 0.8),
        "val": (0.8, 0.9),
        "test": (0.9, 1.0),
        "all": (0.0, 1.0),
    }
    error_policies: ClassVar[tuple[str, ...]] = ("raise", "skip")

    def __init__(
        self,
        root: Path | str = "data/geopile2.zarr",
        sensors: Sequence[str] | None = None,
        split: str = "train",
        paired_only: bool = False,
        transforms: Callable[[dict[str, Any]], dict[str, Any]] | None = None,
        partners: bool = True,
        partner_sensors: Sequence[str] | None = None,
        on_error: str = "raise",
        verify: bool = True,
        stored: bool = False,
    ) -> None:
        """Initialize a new GeoPile2 instance.

        Args:
            root: the store (a ``.zarr`` folder).
            sensors: sensor groups to sample from (default: every sensor in the store).
            split: one of :attr:`splits`.
            paired_only: only chips that have a partner chip of another sensor.
            transforms: a function of a sample dict returning a transformed one.
            partners: load each paired chip's partners as ``image_<sensor>``.
            partner_sensors: the sensors whose chips count as partners (default: every
                sensor in the store; pretraining on some sensors passes those, so that no
                sample brings a partner the model has no decoder for).
            on_error: ``"raise"`` a :class:`ChipReadError` for a missing or damaged chip, or
                ``"skip"``: return None for it and count it in :attr:`skipped` (collate with
                :func:`model.datasets.batching.collate_by_sensor`, which drops and counts
                those).
            verify: check each chip's chunk against its CRC32C in the store's
                ``image_crc32c`` before decoding, so a flipped bit or a chunk in another
                chip's place is a :class:`ChipReadError` (costs one CRC32C pass over the
                compressed bytes; False skips it).
            stored: images as the store holds them (the sensor's storage dtype and values:
                no scale, nodata as stored), to be converted where the batch goes, e.g. on
                the GPU by :func:`model.datasets.units.to_model_unit`: a 16-bit sensor's
                batch is half the bytes to fill, pin and transfer, and the CPU does no
                conversion.

        Raises:
            DatasetNotFoundError: when ``root`` does not exist.
            catalogs.store_format.StoreFormatError: when ``root`` is not a GeoPile-2 store.
            ValueError: for an unknown split, sensor or error policy.
        """
        self.root = Path(root)
        if split not in self.splits:
            raise ValueError(f"split {split!r} is not one of {self.splits}")
        if on_error not in self.error_policies:
            raise ValueError(f"on_error {on_error!r} is not one of {self.error_policies}")
        if not self.root.exists():
            raise DatasetNotFoundError(self)
        self.split, self.paired_only, self.partners = split, paired_only, partners
        self.transforms, self.on_error, self.verify = transforms, on_error, verify
        self.stored = stored
        self.manifest = fmt.read_manifest(self.root)
        store = fmt.open_store(self.root)
        names = tuple(self.manifest.sensors) if sensors is None else tuple(sensors)
        asked = [*names, *(partner_sensors or ())]
        unknown = [name for name in asked if name not in self.manifest.sensors]
        if unknown or not names:
            raise ValueError(
                f"{self.root}: no sensor group {unknown or '(none asked)'}; "
                f"the store has {list(self.manifest.sensors)}"
            )
        self.sensors = names
        self.partner_sensors = (
            frozenset(self.manifest.sensors)
            if partner_sensors is None
            else frozenset(partner_sensors)
        )
        self._chips = {name: self._load_sensor(store, name) for name in self.manifest.sensors}
        self._pairs = self._load_pairs(store)
        self.sensor_chips = {name: self._select(name) for name in names}
        counts = np.array([len(self.sensor_chips[name]) for name in names])
        self.sensor_offsets = dict(
            zip(names, np.concatenate([[0], np.cumsum(counts)[:-1]]), strict=True)
        )
        self._ends = np.cumsum(counts)
        self.skipped: list[int] = []

    @property
    def sensor_counts(self) -> dict[str, int]:
        """Samples of each sensor in this dataset (indices ``sensor_offsets[s]`` onwards)."""
        return {name: len(chips) for name, chips in self.sensor_chips.items()}

    def __len__(self) -> int:
        """Return the number of samples (chips of every selected sensor) in the split."""
        return int(self._ends[-1]) if len(self._ends) else 0

    def locate(self, index: int) -> tuple[str, int]:
        """The sensor and chip index of sample ``index``.

        Raises:
            IndexError: when ``index`` is out of range.
        """
        if not 0 <= index < len(self):
            raise IndexError(f"sample {index} out of range for {len(self)} samples")
        position = int(np.searchsorted(self._ends, index, side="right"))
        sensor = self.sensors[position]
        return sensor, int(self.sensor_chips[sensor][index - self.sensor_offsets[sensor]])

    def chip_reader(self, sensor: str) -> ShardedChipReader:
        """The reader of ``sensor``'s stored chips (any sensor of the store)."""
        return self._chips[sensor].reader

    def partners_of(self, sensor: str, chip: int) -> list[tuple[str, int]]:
        """The (sensor, chip) of each partner of ``chip`` of ``sensor`` (of ``partner_sensors``)."""
        return [
            partner
            for partner in self._pairs.get(sensor, {}).get(chip, [])
            if partner[0] in self.partner_sensors
        ]

    def __getitem__(self, index: int) -> dict[str, Any] | None:
        """Return one chip (and its partners) as a sample.

        Args:
            index: sample index.

        Returns:
            The sample (see the class docstring); None for a damaged chip with
            ``on_error="skip"``.

        Raises:
            ChipReadError: naming the sample, sensor and chip, when a chip is missing or
                damaged (with ``on_error="raise"``).
        """
        return self.__getitems__([index])[0]

    def __getitems__(self, indices: Sequence[int]) -> list[dict[str, Any] | None]:
        """Return the samples of ``indices`` (what ``DataLoader`` asks for a batch).

        The images of one sensor (and each partner sensor) are decoded straight into one
        tensor of all such rows, in order; each sample holds a view of its row, so
        :func:`~model.datasets.batching.collate_by_sensor` batches them without a copy. The
        tensor is a buffer this process reuses once no process uses it any more, in a
        ``DataLoader`` worker in shared memory (:mod:`model.datasets.shared_rows`).

        Args:
            indices: sample indices.

        Returns:
            The samples as :meth:`__getitem__` returns them.

        Raises:
            ChipReadError: as :meth:`__getitem__`.
        """
        located = [self.locate(index) for index in indices]
        wanted: dict[str, list[tuple[int, int, str]]] = {}  # sensor -> (position, chip, key)
        for position, (sensor, chip) in enumerate(located):
            wanted.setdefault(sensor, []).append((position, chip, "image"))
            for partner, partner_chip in self.partners_of(sensor, chip) if self.partners else ():
                wanted.setdefault(f"{sensor}>{partner}", []).append(
                    (position, partner_chip, PARTNER_PREFIX + partner)
                )
        samples: list[dict[str, Any] | None] = [{"sensor": s} for s, _ in located]
        for group, rows in wanted.items():
            sensor = group.rpartition(">")[2]
            layout = self._chips[sensor].reader.layout
            images = empty_rows(
                (len(rows), *layout.chip_shape),
                getattr(torch, layout.dtype) if self.stored else torch.float32,
            )
            for row, (position, chip, key) in enumerate(rows):
                sample = samples[position]
                if sample is None:
                    continue
                try:
                    self._chips[sensor].read_into(chip, images[row], self.stored)
                except ChipReadError as error:
                    if self.on_error == "raise":
                        raise ChipReadError(
                            f"{self.root}: sample {indices[position]}: {error}"
                        ) from error
                    self.skipped.append(indices[position])
                    samples[position] = None
                    continue
                sample[key] = images[row]
        for sample, (sensor, chip) in zip(samples, located, strict=True):
            if sample is not None:
                chips = self._chips[sensor]
                sample.update(
                    index=chip,
                    crs=str(chips.crs[chip]),
                    transform=torch.from_numpy(chips.transform[chip].copy()),
                    bounds=torch.from_numpy(chips.bounds_lonlat[chip].copy()),
                )
        if self.transforms is not None:
            samples = [None if s is None else self.transforms(s) for s in samples]
        return samples

    def plot(
        self, sample: dict[str, Any], show_titles: bool = True, suptitle: str | None = None
    ) -> Figure:
        """Plot a sample: its chip and, side by side, its partners.

        Optical chips as true colour, SAR as VV / VH / VV-VH false colour, elevation as a
        hillshade tinted by height.

        Args:
            sample: a sample returned by :meth:`__getitem__`.
            show_titles: title each panel with its sensor and unit.
            suptitle: title of the figure.

        Returns:
            A matplotlib Figure with the sample.
        """
        panels = [(sample["sensor"], sample["image"])]
        panels += [
            (key.removeprefix(PARTNER_PREFIX), value)
            for key, value in sample.items()
            if key.startswith(PARTNER_PREFIX)
        ]
        pictures = []
        for sensor, image in panels:
            m = self.manifest.sensors[sensor]
            values = to_model_unit(image, m) if self.stored else image
            pictures.append(
                (
                    f"{sensor} ({m.model_unit})",
                    composite(np.asarray(values, dtype=np.float32), sensor, m.kind, m.band_names),
                    {},
                )
            )
        return panel_figure(pictures, show_titles, suptitle)[0]

    def _load_sensor(self, store: Any, name: str) -> _SensorChips:
        group = store[name]
        manifest = self.manifest.sensors[name]
        try:
            check_convertible(manifest)
        except ValueError as error:
            raise ValueError(f"{self.root}: {error}") from None
        return _SensorChips(
            manifest=manifest,
            reader=ShardedChipReader(
                ImageLayout.of(self.root, group[fmt.IMAGE], name),
                group[fmt.IMAGE_CRC32C][:] if self.verify else None,
            ),
            item_id=group[fmt.ITEM_ID][:],
            source=group[fmt.SOURCE][:],
            crs=group[fmt.CRS][:],
            transform=group[fmt.TRANSFORM][:],
            bounds_lonlat=group[fmt.BOUNDS_LONLAT][:],
        )

    def _load_pairs(self, store: Any) -> dict[str, dict[int, list[tuple[str, int]]]]:
        pairs = store[fmt.PAIRS_GROUP]
        columns = [
            pairs[name][:] for name in (fmt.SENSOR_A, fmt.INDEX_A, fmt.SENSOR_B, fmt.INDEX_B)
        ]
        partners: dict[str, dict[int, list[tuple[str, int]]]] = {}
        for sensor_a, index_a, sensor_b, index_b in zip(*columns, strict=True):
            a, b = (str(sensor_a), int(index_a)), (str(sensor_b), int(index_b))
            partners.setdefault(a[0], {}).setdefault(a[1], []).append(b)
            partners.setdefault(b[0], {}).setdefault(b[1], []).append(a)
        return partners

    def _select(self, sensor: str) -> np.ndarray:
        chips = self._chips[sensor]
        low, high = self.split_ranges[self.split]
        keep = [
            low <= location_fraction(str(source), str(item)) < high or self.split == "all"
            for source, item in zip(chips.source, chips.item_id, strict=True)
        ]
        if self.paired_only:
            keep = [k and bool(self.partners_of(sensor, chip)) for chip, k in enumerate(keep)]
        return np.flatnonzero(keep)
