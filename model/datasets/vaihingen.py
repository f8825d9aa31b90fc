"""ISPRS Vaihingen dataset with the DSM."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import ClassVar

import numpy as np
import torch
from matplotlib.colors import ListedColormap
from matplotlib.figure import Figure
from torch import Tensor
from torchgeo.datasets import DatasetNotFoundError, NonGeoDataset, Vaihingen2D
from torchgeo.datasets.utils import percentile_normalization, rgb_to_mask

from catalogs.layouts.vaihingen import (
    DSM_FILE,
    DSM_FOLDER,
    LABEL_FOLDERS,
    TEST_AREAS,
    TOP_FILE,
    TOP_FOLDER,
    TRAIN_AREAS,
    area_of,
)
from catalogs.sensors import get_sensor
from model.datasets.display import panel_figure
from model.datasets.raster_files import read_sensor_file


class VaihingenDSM(NonGeoDataset):
    """ISPRS Vaihingen 2D semantic labelling with the DSM: IR-R-G orthophoto + DSM + labels.

    The `ISPRS Vaihingen <https://www.isprs.org/education/benchmarks/UrbanSemLab/default.aspx>`__
    benchmark covers the town of Vaihingen/Enz (Germany) with 33 areas ("tiles", about
    2,000 x 2,500 pixels each) of a true orthophoto mosaic at 9 cm GSD from the DGPF camera test
    flights of summer 2008, a digital surface model on the same grid, and colour-coded ground
    truth of six classes. TorchGeo's ``Vaihingen2D`` returns the orthophoto and the labels; this
    class adds the DSM:

    * orthophoto (``top``): 3 bands near-infrared, red, green (IR-R-G), uint8 digital numbers.
    * DSM: 1 band float32, surface height in metres (dense image matching), same grid.
    * ground truth: RGB uint8, one colour per class (:attr:`colormap`).

    Classes (indices as ``Vaihingen2D``): 0 clutter/background, 1 impervious surfaces,
    2 building, 3 low vegetation, 4 tree, 5 car.

    Layout under ``root`` (``ISPRS_semantic_labeling_Vaihingen.zip`` extracted, plus the ground
    truth)::

        top/top_mosaic_09cm_area<N>.tif                    orthophoto
        dsm/dsm_09cm_matching_area<N>.tif                  DSM
        top_mosaic_09cm_area<N>.tif                        ground truth (COMPLETE zip), or
        gts_for_participants/top_mosaic_09cm_area<N>.tif   ground truth (training areas)

    the ground truth at the root (where the ``..._ground_truth_COMPLETE.zip`` of all 33 areas
    extracts and ``Vaihingen2D`` reads it) winning over ``gts_for_participants`` (the 16
    training areas of the benchmark package). An area is listed when its orthophoto, DSM and
    ground truth all exist; archives are not extracted. A file that cannot be read, has the
    wrong band count, or whose grid size differs from the orthophoto's raises a ``ValueError``
    naming it when the sample is loaded. Samples are sorted by area number.

    Sample keys (H x W is the area's size):

    * ``image``: float32 3 x H x W, IR-R-G digital numbers 0-255 as stored.
    * ``dsm``: float32 1 x H x W, metres as stored.
    * ``mask``: int64 H x W, class indices; as in ``Vaihingen2D``, a colour that is none of
      the six classes' becomes 0 (clutter/background).

    Splits as ``Vaihingen2D`` (by area): ``train`` the 16 areas whose ground truth ISPRS released
    for training (:attr:`split_areas`), ``test`` the other 17.

    If you use this dataset in your research, please cite:

    * https://doi.org/10.5194/isprsannals-I-3-293-2012
    """

    split_areas: ClassVar[dict[str, frozenset[int]]] = {
        "train": TRAIN_AREAS,
        "test": TEST_AREAS,
    }
    splits: ClassVar[tuple[str, ...]] = tuple(split_areas)
    classes: ClassVar[tuple[str, ...]] = Vaihingen2D.classes
    colormap: ClassVar[tuple[tuple[int, int, int], ...]] = Vaihingen2D.colormap
    top_folder: ClassVar[str] = TOP_FOLDER
    dsm_folder: ClassVar[str] = DSM_FOLDER
    label_folders: ClassVar[tuple[str, ...]] = LABEL_FOLDERS
    top_file: ClassVar[str] = TOP_FILE
    dsm_file: ClassVar[str] = DSM_FILE
    image_band_names: ClassVar[tuple[str, ...]] = get_sensor("cir").band_names
    dsm_band_names: ClassVar[tuple[str, ...]] = get_sensor("dsm").band_names
    # Sample key -> registry sensor of its file.
    file_sensors: ClassVar[dict[str, str]] = {"image": "cir", "dsm": "dsm", "mask": "isprs_labels"}

    def __init__(
        self,
        root: str | os.PathLike[str] = "data",
        split: str = "train",
        transforms: Callable[[dict[str, Tensor]], dict[str, Tensor]] | None = None,
    ) -> None:
        """Initialise a new VaihingenDSM dataset instance.

        Args:
            root: the folder holding ``top``, ``dsm`` and the ground truth.
            split: one of :attr:`splits`.
            transforms: a function/transform that takes a sample dict and returns a transformed
                version; applied last.

        Raises:
            ValueError: if ``split`` is not one of :attr:`splits`.
            DatasetNotFoundError: if ``root`` holds no area with orthophoto, DSM and ground
                truth.
        """
        if split not in self.splits:
            raise ValueError(f"split {split!r} is not one of {self.splits}")
        self.root = root
        self.split = split
        self.transforms = transforms
        files = self._find_areas(Path(root))
        if not files:
            raise DatasetNotFoundError(self)
        self.files = [
            paths for area, paths in sorted(files.items()) if area in self.split_areas[split]
        ]

    def __len__(self) -> int:
        """Return the number of areas in the split.

        Returns:
            length of the dataset
        """
        return len(self.files)

    def __getitem__(self, index: int) -> dict[str, Tensor]:
        """Return the area at ``index``.

        Args:
            index: index to return

        Returns:
            ``image``, ``dsm`` and ``mask`` (see the class docstring)

        Raises:
            IndexError: if ``index`` is out of range.
            ValueError: if a file of the area is unreadable, has the wrong band count or a grid
                size other than the orthophoto's.
        """
        paths = self.files[index]
        image = self._load_raster(paths["image"], "image")
        dsm = self._load_raster(paths["dsm"], "dsm")
        colours = self._load_raster(paths["mask"], "mask")
        for key, values in (("dsm", dsm), ("mask", colours)):
            if values.shape[1:] != image.shape[1:]:
                raise ValueError(
                    f"{paths[key]}: {values.shape[1]} x {values.shape[2]} pixels, "
                    f"the orthophoto {paths['image']} has "
                    f"{image.shape[1]} x {image.shape[2]}"
                )
        mask = rgb_to_mask(colours.transpose(1, 2, 0), list(self.colormap))
        sample = {
            "image": torch.from_numpy(image.astype(np.float32)),
            "dsm": torch.from_numpy(dsm.astype(np.float32)),
            "mask": torch.from_numpy(mask.astype(np.int64)),
        }
        if self.transforms is not None:
            sample = self.transforms(sample)
        return sample

    def _find_areas(self, root: Path) -> dict[int, dict[str, Path]]:
        """``{area: {sample key: file}}`` of the areas with all three files."""
        tops = self._area_files(root / self.top_folder, self.top_file)
        dsms = self._area_files(root / self.dsm_folder, self.dsm_file)
        labels: dict[int, Path] = {}
        for folder in reversed(self.label_folders):  # the first folder wins
            labels.update(self._area_files(root / folder, self.top_file))
        return {
            area: {"image": top, "dsm": dsms[area], "mask": labels[area]}
            for area, top in tops.items()
            if area in dsms and area in labels
        }

    @staticmethod
    def _area_files(folder: Path, template: str) -> dict[int, Path]:
        """``{area: file}`` of the files in ``folder`` named as ``template`` (``{area}``)."""
        files: dict[int, Path] = {}
        for entry in os.scandir(folder) if folder.is_dir() else ():
            area = area_of(entry.name, template)
            if area is not None and entry.is_file():
                files[area] = Path(entry.path)
        return files

    def _load_raster(self, path: Path, key: str) -> np.ndarray:
        """A file's stored values as (bands, rows, cols), checked against its sensor.

        Args:
            path: the TIFF (georeferenced or not: the real files carry no CRS).
            key: the sample key it is read for, one of :attr:`file_sensors`.

        Returns:
            the stored values

        Raises:
            ValueError: if the file is unreadable or its band count is not the sensor's.
        """
        return read_sensor_file(path, get_sensor(self.file_sensors[key]))

    def plot(
        self,
        sample: dict[str, Tensor],
        show_titles: bool = True,
        suptitle: str | None = None,
    ) -> Figure:
        """Plot a sample: the IR-R-G orthophoto, the DSM, the ground truth and any prediction.

        The ground truth and the ``prediction`` (class indices, H x W), where present, are in
        the ISPRS colours.

        The orthophoto (all bands together, keeping its hues) and the DSM are stretched between
        their 2nd and 98th percentile.

        Args:
            sample: a sample returned by :meth:`__getitem__`
            show_titles: flag indicating whether to show titles above each panel
            suptitle: optional string to use as a suptitle

        Returns:
            a matplotlib Figure with the rendered sample
        """
        image = sample["image"].float().numpy().transpose(1, 2, 0)
        dsm = sample["dsm"][0].float().numpy()
        low, high = np.nanpercentile(dsm, (2, 98)) if np.isfinite(dsm).any() else (0.0, 1.0)
        classes = ListedColormap(np.array(self.colormap) / 255.0)
        panels: list[tuple[str, np.ndarray, dict[str, object]]] = [
            ("Orthophoto (IR-R-G)", percentile_normalization(image), {}),
            ("DSM", dsm, {"cmap": "terrain", "vmin": low, "vmax": high}),
        ]
        class_style = {
            "cmap": classes,
            "vmin": 0,
            "vmax": len(self.classes) - 1,
            "interpolation": "none",
        }
        if "mask" in sample:
            panels.append(("Ground truth", sample["mask"].numpy(), class_style))
        if "prediction" in sample:
            panels.append(("Prediction", sample["prediction"].numpy(), class_style))
        fig, images = panel_figure(panels, show_titles, suptitle)
        fig.colorbar(images[1], ax=fig.axes[1], fraction=0.046, label="m")  # the DSM
        return fig
