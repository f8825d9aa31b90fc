"""SEN12MS-CR: the on-disk layout of the cloud-removal triplets.

Under the data set's root (the twelve extracted mediaTUM archives, Ebel et al., 2020)::

    ROIs<id>_<season>_s1/s1_<scene>/ROIs<id>_<season>_s1_<scene>_p<patch>.tif
    ROIs<id>_<season>_s2/s2_<scene>/ROIs<id>_<season>_s2_<scene>_p<patch>.tif
    ROIs<id>_<season>_s2_cloudy/s2_cloudy_<scene>/ROIs<id>_<season>_s2_cloudy_<scene>_p<patch>.tif

Patches are numbered and named as SEN12MS's (:class:`catalogs.layouts.sen12ms.Patch`).
"""

from __future__ import annotations

import re
from pathlib import Path

from catalogs.layouts.sen12ms import SCENE_FOLDER, SEASON_FOLDER, Patch

# The modalities (folder and file name parts): SAR, cloud-free and cloudy Sentinel-2.
MODALITIES = ("s1", "s2", "s2_cloudy")
# The name of a modality folder, ROIs<id>_<season>_<modality>.
MODALITY_FOLDER = re.compile(
    rf"(?P<season_folder>{SEASON_FOLDER.pattern})_(?P<modality>{'|'.join(MODALITIES)})"
)
MODALITY_FOLDER_NAMES = "ROIs<id>_<season>_{" + ",".join(MODALITIES) + "}"


def scene_folder(root: Path, season_folder: str, modality: str, scene: int) -> Path:
    """The folder of a scene's ``modality`` files.

    Args:
        root: the data set's root.
        season_folder: the scene's ``ROIs<id>_<season>``.
        modality: one of :data:`MODALITIES`.
        scene: the scene number.

    Returns:
        ``root/<season folder>_<modality>/<modality>_<scene>``.
    """
    return root / f"{season_folder}_{modality}" / SCENE_FOLDER.format(kind=modality, scene=scene)


def member_path(root: Path, patch: Patch, modality: str) -> Path:
    """Where the layout puts the ``modality`` file of ``patch``.

    Args:
        root: the data set's root.
        patch: the triplet's patch.
        modality: one of :data:`MODALITIES`.

    Returns:
        ``root/<season folder>_<modality>/<modality>_<scene>/<file name>``.
    """
    folder = scene_folder(root, patch.season_folder, modality, patch.scene)
    return folder / patch.file_name(modality)
