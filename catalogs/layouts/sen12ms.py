"""SEN12MS: the on-disk layout, its patch naming and the seasons.

Under the data set's root (the extracted mediaTUM archives)::

    ROIs<id>_<season>/<kind>_<scene>/ROIs<id>_<season>_<kind>_<scene>_p<patch>.tif

with ``<kind>`` s1 (Sentinel-1), s2 (Sentinel-2) or lc (land cover).

SEN12MS-CR (:mod:`catalogs.layouts.sen12ms_cr`) numbers its patches the same way.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from catalogs.layouts.numbered_names import parse_number

# SEN12MS covers the four meteorological seasons December 2016 - November 2017 (Schmitt et al.,
# 2019, ISPRS Annals IV-2/W7); a patch carries no acquisition time, only its season's interval.
SEASON_INTERVALS: dict[str, tuple[datetime, datetime]] = {
    "winter": (datetime(2016, 12, 1, tzinfo=UTC), datetime(2017, 2, 28, 23, 59, 59, tzinfo=UTC)),
    "spring": (datetime(2017, 3, 1, tzinfo=UTC), datetime(2017, 5, 31, 23, 59, 59, tzinfo=UTC)),
    "summer": (datetime(2017, 6, 1, tzinfo=UTC), datetime(2017, 8, 31, 23, 59, 59, tzinfo=UTC)),
    "fall": (datetime(2017, 9, 1, tzinfo=UTC), datetime(2017, 11, 30, 23, 59, 59, tzinfo=UTC)),
}
# The name of a season folder, ROIs<id>_<season>.
SEASON_FOLDER = re.compile(r"ROIs\d+_(?:" + "|".join(SEASON_INTERVALS) + ")")
SCENE_FOLDER = "{kind}_{scene}"
PATCH_FILE = "{season_folder}_{kind}_{scene}_p{patch}.tif"


@dataclass(frozen=True, order=True)
class Patch:
    """One SEN12MS location: a patch of a scene of a season folder."""

    season_folder: str
    scene: int
    patch: int

    @property
    def season(self) -> str:
        """The season of the season folder (spring, summer, fall or winter)."""
        return self.season_folder.split("_")[1]

    @property
    def item_id(self) -> str:
        """The catalog's Item id, ``ROIs<id>_<season>_<scene>_p<patch>``."""
        return f"{self.season_folder}_{self.scene}_p{self.patch}"

    def scene_folder(self, kind: str) -> str:
        """The name of the folder of this patch's scene files of ``kind``."""
        return SCENE_FOLDER.format(kind=kind, scene=self.scene)

    def file_name(self, kind: str) -> str:
        """The name the layout gives this patch's file of ``kind`` (s1, s2, lc, s2_cloudy)."""
        return PATCH_FILE.format(
            season_folder=self.season_folder, kind=kind, scene=self.scene, patch=self.patch
        )


def scene_of(folder_name: str, kind: str) -> int | None:
    """The scene number of a ``<kind>_<scene>`` folder, or None if the name does not fit.

    Args:
        folder_name: the folder's name.
        kind: the kind of file the folder should hold.

    Returns:
        The scene number, or None.
    """
    return parse_number(folder_name, SCENE_FOLDER.replace("{kind}", kind), "scene")


def patch_of(file_name: str, season_folder: str, kind: str, scene: int) -> Patch | None:
    """The patch whose ``kind`` file of ``scene`` is named ``file_name``, or None if none is.

    Args:
        file_name: the file's name.
        season_folder: the ``ROIs<id>_<season>`` the file belongs to.
        kind: the kind of file.
        scene: the scene number.

    Returns:
        The patch, or None if ``file_name`` is not a name of the layout.
    """
    template = PATCH_FILE.format(
        season_folder=season_folder, kind=kind, scene=scene, patch="{patch}"
    )
    number = parse_number(file_name, template, "patch")
    return None if number is None else Patch(season_folder, scene, number)


def patch_path(folder: Path, patch: Patch, kind: str) -> Path:
    """Where the layout puts the ``kind`` file of ``patch`` under its season folder.

    Args:
        folder: the season folder (SEN12MS) or the season folder of the modality (SEN12MS-CR).
        patch: the patch.
        kind: the kind of file.

    Returns:
        ``folder/<kind>_<scene>/<file name>``.
    """
    return folder / patch.scene_folder(kind) / patch.file_name(kind)
