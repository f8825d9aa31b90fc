"""SEN12MS-CR dataset."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import ClassVar

import numpy as np
from matplotlib.figure import Figure
from torch import Tensor
from torchgeo.datasets import DatasetNotFoundError, NonGeoDataset
from torchgeo.datasets.utils import percentile_normalization

from catalogs.layouts.sen12ms import Patch, patch_of, scene_of
from catalogs.layouts.sen12ms_cr import MODALITY_FOLDER, member_path, scene_folder
from catalogs.sensors import get_sensor
from model.datasets.display import panel_figure
from model.datasets.raster_files import read_physical


class SEN12MSCR(NonGeoDataset):
    """SEN12MS-CR cloud-removal dataset: Sentinel-1, cloudy and cloud-free Sentinel-2 triplets.

    `SEN12MS-CR <https://patricktum.github.io/cloud_removal/sen12mscr/>`__ (Ebel et al., 2020)
    holds 122,218 co-registered patch triplets over 169 scenes of SEN12MS, spread over the four
    meteorological seasons of December 2016 - November 2017. Each triplet is one 256 x 256 patch
    of 10 m pixels (2.56 km) on the scene's UTM grid:

    * Sentinel-1 GRD (IW, dual-pol): 2 bands VV, VH, sigma0 backscatter in dB (float32).
    * Sentinel-2 MSI Level-1C, cloud-free: 13 bands B01-B12 incl. B8A and B10 (uint16 DN,
      top-of-atmosphere reflectance x 10,000), all resampled to 10 m.
    * Sentinel-2 MSI Level-1C of the same ground, cloudy (another acquisition close in time).

    Official layout (the twelve extracted mediaTUM archives ``ROIs<id>_<season>_<modality>``,
    ``<season>`` one of ``ROIs1158_spring``, ``ROIs1868_summer``, ``ROIs1970_fall``,
    ``ROIs2017_winter``)::

        ROIs<id>_<season>_s1/s1_<scene>/ROIs<id>_<season>_s1_<scene>_p<patch>.tif
        ROIs<id>_<season>_s2/s2_<scene>/ROIs<id>_<season>_s2_<scene>_p<patch>.tif
        ROIs<id>_<season>_s2_cloudy/s2_cloudy_<scene>/ROIs<id>_<season>_s2_cloudy_<scene>_p<patch>.tif

    A sample is listed when all three files of the triplet exist (a triplet missing a member is
    left out); other folders and files are ignored. A member that cannot be read, or whose band
    count is not 2 (s1) or 13 (s2, s2_cloudy), raises a ``ValueError`` naming the file when the
    sample is loaded. Samples are sorted by season folder, scene and patch.

    Sample keys (all float32, C x 256 x 256 in the real data):

    * ``image_s1``: VV, VH in dB as stored (NaN where the file holds NaN, its nodata).
    * ``image_s2_cloudy``: the cloudy Sentinel-2, 13 bands, in reflectance (DN x 1e-4, the
      registry's ``sentinel2_l1c`` scale and offset; DN 0, the nodata, becomes 0.0).
    * ``target``: the cloud-free Sentinel-2, 13 bands, in reflectance as above.

    Splits (by scene, so the patches of one scene never straddle splits): ``val`` and ``test`` are
    the 10 + 10 scenes of the official SEN12MS-CR split (the ``SEN12MSCR`` loader of
    github.com/PatrickTUM/SEN12MS-CR-TS, ``data/dataLoader.py``), ``train`` is every other scene
    (the official loader's train list omits a few scenes, which land in ``train`` here).

    Download: https://mediatum.ub.tum.de/1554803 (about 110 GB).

    If you use this dataset in your research, please cite:

    * https://doi.org/10.1109/TGRS.2020.3024744
    """

    splits: ClassVar[tuple[str, ...]] = ("train", "val", "test")
    # (season folder, scene) of the official validation and test scenes.
    split_scenes: ClassVar[dict[str, frozenset[tuple[str, int]]]] = {
        "val": frozenset(
            {
                ("ROIs2017_winter", 22),
                ("ROIs1868_summer", 19),
                ("ROIs1970_fall", 65),
                ("ROIs1158_spring", 17),
                ("ROIs2017_winter", 107),
                ("ROIs1868_summer", 80),
                ("ROIs1868_summer", 127),
                ("ROIs2017_winter", 130),
                ("ROIs1868_summer", 17),
                ("ROIs2017_winter", 84),
            }
        ),
        "test": frozenset(
            {
                ("ROIs1158_spring", 106),
                ("ROIs1158_spring", 123),
                ("ROIs1158_spring", 140),
                ("ROIs1158_spring", 31),
                ("ROIs1158_spring", 44),
                ("ROIs1868_summer", 119),
                ("ROIs1868_summer", 73),
                ("ROIs1970_fall", 139),
                ("ROIs2017_winter", 108),
                ("ROIs2017_winter", 63),
            }
        ),
    }
    # Modality (folder and file name part) -> registry sensor of its files.
    modality_sensors: ClassVar[dict[str, str]] = {
        "s1": "sentinel1_grd",
        "s2": "sentinel2_l1c",
        "s2_cloudy": "sentinel2_l1c",
    }
    # Sample key -> modality it is read from.
    sample_modalities: ClassVar[dict[str, str]] = {
        "image_s1": "s1",
        "image_s2_cloudy": "s2_cloudy",
        "target": "s2",
    }
    s1_band_names: ClassVar[tuple[str, ...]] = get_sensor("sentinel1_grd").band_names
    s2_band_names: ClassVar[tuple[str, ...]] = get_sensor("sentinel2_l1c").band_names
    rgb_bands: ClassVar[tuple[str, ...]] = ("B04", "B03", "B02")
    # Reflectance shown as full brightness by :meth:`plot` (clouds saturate).
    plot_max_reflectance: ClassVar[float] = 0.3
    # The modality whose files list the triplets.
    listing_modality: ClassVar[str] = "s1"

    def __init__(
        self,
        root: str | os.PathLike[str] = "data",
        split: str = "train",
        transforms: Callable[[dict[str, Tensor]], dict[str, Tensor]] | None = None,
    ) -> None:
        """Initialise a new SEN12MS-CR dataset instance.

        Args:
            root: the folder holding the ``ROIs<id>_<season>_{s1,s2,s2_cloudy}`` folders.
            split: one of :attr:`splits`.
            transforms: a function/transform that takes a sample dict and returns a transformed
                version; applied last.

        Raises:
            ValueError: if ``split`` is not one of :attr:`splits`.
            DatasetNotFoundError: if ``root`` holds no complete triplet.
        """
        if split not in self.splits:
            raise ValueError(f"split {split!r} is not one of {self.splits}")
        self.root = root
        self.split = split
        self.transforms = transforms
        triplets = self._find_triplets(Path(root))
        if not triplets:
            raise DatasetNotFoundError(self)
        self.triplets = [t for t in triplets if self._split_of(t) == split]

    def __len__(self) -> int:
        """Return the number of triplets in the split.

        Returns:
            length of the dataset
        """
        return len(self.triplets)

    def __getitem__(self, index: int) -> dict[str, Tensor]:
        """Return the triplet at ``index``.

        Args:
            index: index to return

        Returns:
            ``image_s1``, ``image_s2_cloudy`` and ``target`` (see the class docstring)

        Raises:
            IndexError: if ``index`` is out of range.
            ValueError: if a file of the triplet is unreadable or has the wrong band count.
        """
        patch = self.triplets[index]
        sample = {
            key: self._load_raster(patch, modality)
            for key, modality in self.sample_modalities.items()
        }
        if self.transforms is not None:
            sample = self.transforms(sample)
        return sample

    def path(self, patch: Patch, modality: str) -> Path:
        """Where the official layout puts the ``modality`` file of ``patch``.

        Args:
            patch: the triplet's season folder, scene and patch number.
            modality: one of the keys of :attr:`modality_sensors`.

        Returns:
            the file's path under ``root``
        """
        return member_path(Path(self.root), patch, modality)

    def _split_of(self, patch: Patch) -> str:
        """The split of the scene of ``patch``."""
        scene = (patch.season_folder, patch.scene)
        for split, scenes in self.split_scenes.items():
            if scene in scenes:
                return split
        return "train"

    def _find_triplets(self, root: Path) -> list[Patch]:
        """Every patch under ``root`` with all three files, sorted."""
        triplets: list[Patch] = []
        listing = self.listing_modality
        for folder in sorted(root.iterdir()) if root.is_dir() else ():
            match = MODALITY_FOLDER.fullmatch(folder.name)
            if match is None or match["modality"] != listing or not folder.is_dir():
                continue
            season_folder = match["season_folder"]
            for scene_dir in sorted(folder.iterdir()):
                scene = scene_of(scene_dir.name, listing)
                if scene is None or not scene_dir.is_dir():
                    continue
                partners = {
                    modality: self._file_names(scene_folder(root, season_folder, modality, scene))
                    for modality in self.modality_sensors
                }
                for file_name in sorted(partners[listing]):
                    patch = patch_of(file_name, season_folder, listing, scene)
                    if patch is None:
                        continue
                    if all(patch.file_name(m) in names for m, names in partners.items()):
                        triplets.append(patch)
        return sorted(triplets)

    @staticmethod
    def _file_names(folder: Path) -> set[str]:
        """The names of the files in ``folder`` (empty where it does not exist)."""
        if not folder.is_dir():
            return set()
        return {entry.name for entry in os.scandir(folder) if entry.is_file()}

    def _load_raster(self, patch: Patch, modality: str) -> Tensor:
        """One file of a triplet in the sample's unit, as a float32 (bands, rows, cols) tensor.

        Args:
            patch: the triplet.
            modality: one of the keys of :attr:`modality_sensors`.

        Returns:
            the stored values times the registry's scale plus its offset

        Raises:
            ValueError: if the file is unreadable or its band count is not the sensor's.
        """
        return read_physical(
            self.path(patch, modality), get_sensor(self.modality_sensors[modality])
        )

    def plot(
        self,
        sample: dict[str, Tensor],
        show_titles: bool = True,
        suptitle: str | None = None,
    ) -> Figure:
        """Plot a sample: S1 VV, the cloudy S2, the cloud-free target and any ``prediction``.

        The ``prediction``, if present, is a 13-band S2 in reflectance.

        S1 VV is stretched between its 2nd and 98th percentile; the S2 images share one fixed
        stretch (0 to :attr:`plot_max_reflectance`), so they compare by brightness.

        Args:
            sample: a sample returned by :meth:`__getitem__`
            show_titles: flag indicating whether to show titles above each panel
            suptitle: optional string to use as a suptitle

        Returns:
            a matplotlib Figure with the rendered sample
        """
        vv = sample["image_s1"][self.s1_band_names.index("VV")].float().numpy()
        finite = np.isfinite(vv)
        vv = np.where(finite, vv, np.median(vv[finite]) if finite.any() else 0.0)
        panels = [("Sentinel-1 VV", percentile_normalization(vv), {"cmap": "gray"})]
        titles = {
            "image_s2_cloudy": "Cloudy Sentinel-2",
            "target": "Cloud-free Sentinel-2",
            "prediction": "Prediction",
        }
        for key, title in titles.items():
            if key in sample:
                panels.append((title, self._rgb(sample[key]), {}))
        return panel_figure(panels, show_titles, suptitle)[0]

    def _rgb(self, s2: Tensor) -> np.ndarray:
        """The true-colour bands of a 13-band S2 tensor as a (rows, cols, 3) picture in [0, 1]."""
        indices = [self.s2_band_names.index(band) for band in self.rgb_bands]
        rgb = s2[indices].float().numpy().transpose(1, 2, 0)
        return np.clip(np.nan_to_num(rgb) / self.plot_max_reflectance, 0.0, 1.0)
