"""SpaceNet 2 PAN + MS dataset."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import rasterio
import rasterio.features
import rasterio.warp
import torch
from matplotlib.figure import Figure
from torch import Tensor
from torchgeo.datasets import DatasetNotFoundError, NonGeoDataset

from catalogs.layouts.spacenet2 import (
    AOI_FOLDER,
    AOI_FOLDER_NAME,
    LABEL_PRODUCT,
    RASTER_PRODUCTS,
    chip_path,
    image_of,
    product_folder,
)
from catalogs.sensors import get_sensor
from model.datasets.display import panel_figure, stretch
from model.datasets.raster_files import read_physical


class SpaceNet2PanMS(NonGeoDataset):
    """SpaceNet 2 (building detection v2) as PAN + MS pairs, for pan-sharpening.

    `SpaceNet 2 <https://spacenet.ai/spacenet-buildings-dataset-v2/>`__ holds WorldView-3 image
    chips of 200 m x 200 m over four cities (AOI_2_Vegas, AOI_3_Paris, AOI_4_Shanghai,
    AOI_5_Khartoum; 3,850 + 1,148 + 4,582 + 1,012 training chips as TorchGeo lists them), each
    in several products. TorchGeo's ``SpaceNet2``
    returns one product per sample; this class returns the panchromatic chip and its
    multispectral partner together:

    * PAN: 1 band, ~0.31 m GSD, 650 x 650 pixels, uint16 11-bit digital numbers.
    * MUL: 8 bands (coastal, blue, green, yellow, red, red edge, NIR1, NIR2), ~1.24 m GSD,
      about 163 x 163 pixels, uint16 11-bit digital numbers, over the same ground as PAN.
    * Building footprints: a GeoJSON FeatureCollection of polygons (EPSG:4326) per chip.

    Official training layout (the extracted ``SN2_buildings_train_AOI_<n>_<City>.tar.gz``
    tarballs; TorchGeo's ``SpaceNet2`` reads them from ``<its root>/SN2_buildings/train``, which is
    this class's ``root``)::

        AOI_<n>_<City>_Train/PAN/PAN_AOI_<n>_<City>_img<k>.tif
        AOI_<n>_<City>_Train/MUL/MUL_AOI_<n>_<City>_img<k>.tif
        AOI_<n>_<City>_Train/geojson/buildings/buildings_AOI_<n>_<City>_img<k>.geojson

    A chip is listed when its PAN and MUL files exist (and, with ``buildings=True``, its
    GeoJSON); other folders (the pan-sharpened products, ``summaryData``, test tarballs) are
    ignored. A file that cannot be read, or a raster with the wrong band count, raises a
    ``ValueError`` naming it when the sample is loaded. Chips are sorted by AOI folder and image
    number.

    Sample keys:

    * ``image_pan``: float32 1 x H x W (650 x 650), digital numbers as stored (the registry's
      ``worldview3_pan`` has scale 1, offset 0).
    * ``image_ms``: float32 8 x h x w (about 163 x 163), digital numbers as stored.
    * ``mask`` (only with ``buildings=True``): int64 H x W on the PAN grid, 1 where a building
      polygon covers the pixel centre, else 0.

    Splits (deterministic, by image number ``k``, which the public test set lacks labels for,
    so every split comes from the training chips): ``train`` where ``k % 10 < 8``, ``val``
    where ``k % 10 == 8``, ``test`` where ``k % 10 == 9``.

    Download: the ``SN2_buildings_train_AOI_*.tar.gz`` tarballs of
    ``s3://spacenet-dataset/spacenet/SN2_buildings/tarballs/`` (AWS Open Data), extracted.

    If you use this dataset in your research, please cite:

    * https://arxiv.org/abs/1807.01232
    """

    splits: ClassVar[tuple[str, ...]] = ("train", "val", "test")
    split_modulus: ClassVar[int] = 10
    # Split -> the remainders of the image number modulo :attr:`split_modulus` it holds.
    split_remainders: ClassVar[dict[str, frozenset[int]]] = {
        "train": frozenset(range(8)),
        "val": frozenset({8}),
        "test": frozenset({9}),
    }
    # Sample key -> (product folder and file prefix, registry sensor).
    image_products: ClassVar[dict[str, tuple[str, str]]] = {
        f"image_{key}": product for key, product in RASTER_PRODUCTS.items()
    }
    label_prefix: ClassVar[str] = LABEL_PRODUCT
    pan_band_names: ClassVar[tuple[str, ...]] = get_sensor("worldview3_pan").band_names
    ms_band_names: ClassVar[tuple[str, ...]] = get_sensor("worldview3_ms").band_names
    rgb_bands: ClassVar[tuple[str, ...]] = ("red", "green", "blue")

    def __init__(
        self,
        root: str | os.PathLike[str] = "data",
        split: str = "train",
        transforms: Callable[[dict[str, Tensor]], dict[str, Tensor]] | None = None,
        buildings: bool = False,
    ) -> None:
        """Initialise a new SpaceNet2PanMS dataset instance.

        Args:
            root: the folder holding the ``AOI_<n>_<City>_Train`` folders.
            split: one of :attr:`splits`.
            transforms: a function/transform that takes a sample dict and returns a transformed
                version; applied last.
            buildings: also return the building ``mask`` (and list only chips with a GeoJSON).

        Raises:
            ValueError: if ``split`` is not one of :attr:`splits`.
            DatasetNotFoundError: if ``root`` holds no chip with its PAN and MUL files.
        """
        if split not in self.splits:
            raise ValueError(f"split {split!r} is not one of {self.splits}")
        self.root = root
        self.split = split
        self.transforms = transforms
        self.buildings = buildings
        chips = self._find_chips(Path(root))
        if not chips:
            raise DatasetNotFoundError(self)
        remainders = self.split_remainders[split]
        self.chips = [(aoi, k) for aoi, k in chips if k % self.split_modulus in remainders]

    def __len__(self) -> int:
        """Return the number of chips in the split.

        Returns:
            length of the dataset
        """
        return len(self.chips)

    def __getitem__(self, index: int) -> dict[str, Tensor]:
        """Return the chip at ``index``.

        Args:
            index: index to return

        Returns:
            ``image_pan``, ``image_ms`` and, with ``buildings``, ``mask`` (see the class
            docstring)

        Raises:
            IndexError: if ``index`` is out of range.
            ValueError: if a file of the chip is unreadable or has the wrong band count.
        """
        aoi, image = self.chips[index]
        sample: dict[str, Tensor] = {}
        for key, (product, sensor) in self.image_products.items():
            sample[key] = self._load_raster(self.path(aoi, image, product), sensor)
        if self.buildings:
            sample["mask"] = self._load_mask(aoi, image)
        if self.transforms is not None:
            sample = self.transforms(sample)
        return sample

    def path(self, aoi: str, image: int, product: str) -> Path:
        """Where the layout puts a chip's file of ``product``.

        Args:
            aoi: the AOI, e.g. ``AOI_2_Vegas``.
            image: the image number ``k``.
            product: ``PAN``, ``MUL`` or :attr:`label_prefix` (the building GeoJSON).

        Returns:
            the file's path under ``root``
        """
        return chip_path(self._aoi_folder(aoi), product, aoi, image)

    def _aoi_folder(self, aoi: str) -> Path:
        """The folder of ``aoi``'s files."""
        return Path(self.root) / AOI_FOLDER_NAME.format(aoi=aoi)

    def _find_chips(self, root: Path) -> list[tuple[str, int]]:
        """``(aoi, image number)`` of every chip with the files this instance reads, sorted."""
        products = [product for product, _ in self.image_products.values()]
        if self.buildings:
            products.append(self.label_prefix)
        chips: list[tuple[str, int]] = []
        for aoi_dir in sorted(root.iterdir()) if root.is_dir() else ():
            match = AOI_FOLDER.fullmatch(aoi_dir.name)
            if match is None or not aoi_dir.is_dir():
                continue
            aoi = match["aoi"]
            numbers = [self._image_numbers(aoi, product) for product in products]
            chips.extend((aoi, image) for image in sorted(set.intersection(*numbers)))
        return chips

    def _image_numbers(self, aoi: str, product: str) -> set[int]:
        """The image numbers of the ``product`` files of ``aoi`` named as the layout says."""
        folder = self._aoi_folder(aoi) / product_folder(product)
        numbers: set[int] = set()
        for entry in os.scandir(folder) if folder.is_dir() else ():
            image = image_of(entry.name, product, aoi)
            if image is not None and entry.is_file():
                numbers.add(image)
        return numbers

    @staticmethod
    def _load_raster(path: Path, sensor_name: str) -> Tensor:
        """A raster as float32 (bands, rows, cols) in the registry's physical unit.

        Args:
            path: the GeoTIFF.
            sensor_name: its registry sensor.

        Returns:
            the stored values times the sensor's scale plus its offset

        Raises:
            ValueError: if the file is unreadable or its band count is not the sensor's.
        """
        return read_physical(path, get_sensor(sensor_name))

    def _load_mask(self, aoi: str, image: int) -> Tensor:
        """The chip's building polygons rasterised on its PAN grid (pixel centres inside).

        Args:
            aoi: the AOI.
            image: the image number.

        Returns:
            an int64 (rows, cols) tensor, 1 on buildings, 0 elsewhere

        Raises:
            ValueError: if the GeoJSON is not a readable FeatureCollection.
        """
        path = self.path(aoi, image, self.label_prefix)
        try:
            collection = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
            raise ValueError(f"{path}: unreadable GeoJSON ({error})") from error
        if not isinstance(collection, dict) or collection.get("type") != "FeatureCollection":
            raise ValueError(f"{path}: not a GeoJSON FeatureCollection")
        with rasterio.open(self.path(aoi, image, self.image_products["image_pan"][0])) as src:
            shape, transform, crs = (src.height, src.width), src.transform, src.crs
        geometries: list[dict[str, Any]] = [
            feature["geometry"]
            for feature in collection.get("features", [])
            if feature.get("geometry")
        ]
        if crs is not None and crs.to_string() != "EPSG:4326":  # GeoJSON is in EPSG:4326
            geometries = [rasterio.warp.transform_geom("EPSG:4326", crs, g) for g in geometries]
        if not geometries:
            return torch.zeros(shape, dtype=torch.long)
        mask = rasterio.features.rasterize(
            geometries,
            out_shape=shape,
            transform=transform,
            fill=0,
            default_value=1,
            dtype=np.uint8,
        )
        return torch.from_numpy(mask.astype(np.int64))

    def plot(
        self,
        sample: dict[str, Tensor],
        show_titles: bool = True,
        suptitle: str | None = None,
    ) -> Figure:
        """Plot a sample: PAN, the MS true colour, the building ``mask`` and any ``prediction``.

        The ``prediction``, where present, is a pan-sharpened 8-band MS image. Each panel is
        stretched between its 2nd and 98th percentile.

        Args:
            sample: a sample returned by :meth:`__getitem__`
            show_titles: flag indicating whether to show titles above each panel
            suptitle: optional string to use as a suptitle

        Returns:
            a matplotlib Figure with the rendered sample
        """
        grey = {"cmap": "gray", "vmin": 0, "vmax": 1, "interpolation": "none"}
        colour = {"vmin": 0, "vmax": 1, "interpolation": "none"}
        panels = [
            ("PAN", stretch(sample["image_pan"][0].float().numpy()[..., None])[..., 0], grey),
            ("MS (true colour)", self._rgb(sample["image_ms"]), colour),
        ]
        if "mask" in sample:
            panels.append(("Buildings", sample["mask"].numpy(), grey))
        if "prediction" in sample:
            panels.append(("Prediction", self._rgb(sample["prediction"]), colour))
        return panel_figure(panels, show_titles, suptitle)[0]

    def _rgb(self, ms: Tensor) -> np.ndarray:
        """The true-colour bands of an 8-band MS tensor as a (rows, cols, 3) picture."""
        indices = [self.ms_band_names.index(band) for band in self.rgb_bands]
        # display.stretch, not TorchGeo's percentile_normalization: from TorchGeo 0.10 that
        # one flattens the image before taking percentiles (no per-band axis) and is deprecated.
        return stretch(ms[indices].float().numpy().transpose(1, 2, 0))
