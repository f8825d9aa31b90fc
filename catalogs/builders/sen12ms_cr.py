"""SEN12MS-CR catalog builder."""

from __future__ import annotations

from pathlib import Path

from catalogs.builders.sen12ms import PatchFiles, build_patches
from catalogs.layouts.sen12ms import patch_of, scene_of
from catalogs.layouts.sen12ms_cr import (
    MODALITIES,
    MODALITY_FOLDER,
    MODALITY_FOLDER_NAMES,
    member_path,
)
from catalogs.stac import BuildResult, SourceFileError

# Asset key (the layout's modality) -> candidate registry sensors, chosen by band count. Every
# asset is required: a triplet is cloud-free s2, cloudy s2 and s1.
ASSET_SENSORS: dict[str, tuple[str, ...]] = {
    "s1": ("sentinel1_grd",),
    "s2": ("sentinel2_l1c", "sentinel2_l2a"),
    "s2_cloudy": ("sentinel2_l1c", "sentinel2_l2a"),
}


def build(root: Path) -> BuildResult:
    """Catalog a local copy of SEN12MS-CR: one Item per cloud-free/cloudy/SAR triplet.

    Layout under ``root`` (the twelve extracted mediaTUM archives, Ebel et al., 2020)::

        ROIs<id>_<season>_s1/s1_<scene>/ROIs<id>_<season>_s1_<scene>_p<patch>.tif
        ROIs<id>_<season>_s2/s2_<scene>/ROIs<id>_<season>_s2_<scene>_p<patch>.tif
        ROIs<id>_<season>_s2_cloudy/s2_cloudy_<scene>/ROIs<id>_<season>_s2_cloudy_<scene>_p<patch>.tif

    with ``ROIs<id>_<season>`` one of ``ROIs1158_spring``, ``ROIs1868_summer``,
    ``ROIs1970_fall``, ``ROIs2017_winter`` in the real data (any ``ROIs<digits>_<season>`` is
    accepted), ``<scene>``/``<patch>`` integers, e.g.
    ``ROIs1158_spring_s2_cloudy/s2_cloudy_1/ROIs1158_spring_s2_cloudy_1_p30.tif``. s1 is
    Sentinel-1 GRD (2 bands VV, VH, float32 dB); s2 (cloud-free) and s2_cloudy are Sentinel-2
    on the same 256 x 256 10 m grid, 13 Level-1C bands uint16 in the real data (12 L2A bands
    are accepted too). The three files of a triplet share ``ROIs<id>_<season>``, ``<scene>``
    and ``<patch>`` (the SEN12MS patch numbering); the Item id is
    ``ROIs<id>_<season>_<scene>_p<patch>``; ``start_datetime``/``end_datetime`` are the
    season's interval (SEN12MS's: winter 2016-12-01..2017-02-28, spring 2017-03-01..05-31,
    summer 06-01..08-31, fall 09-01..11-30); footprint from s2. Files directly under ``root``
    (archives) are not part of the layout and are not read.

    Reported and skipped: a folder or file whose name does not fit the layout; an unreadable
    raster or one with the wrong band count; and the other files of a triplet that lacks a
    member or has an unusable one (each named with the partner it lacks).

    Args:
        root: the folder holding the ``ROIs<id>_<season>_<modality>`` folders.

    Returns:
        The Items, sorted by season folder, scene and patch, and the skipped files.
    """
    return build_patches(Path(root), _find_triplets, ASSET_SENSORS, list(MODALITIES), member_path)


def _find_triplets(root: Path, result: BuildResult) -> PatchFiles:
    """Every patch's files by modality, reporting folders and files outside the layout."""
    patches: PatchFiles = {}
    for modality_dir in sorted(p for p in root.iterdir() if p.is_dir()):
        match = MODALITY_FOLDER.fullmatch(modality_dir.name)
        if match is None:
            result.skip(
                SourceFileError(modality_dir, f"folder name is not {MODALITY_FOLDER_NAMES}")
            )
            continue
        season_folder, modality = match["season_folder"], match["modality"]
        for scene_dir in sorted(modality_dir.iterdir()):
            scene = scene_of(scene_dir.name, modality)
            if not scene_dir.is_dir() or scene is None:
                result.skip(SourceFileError(scene_dir, f"not a {modality}_<scene> folder"))
                continue
            for path in sorted(scene_dir.iterdir()):
                patch = patch_of(path.name, season_folder, modality, scene)
                if not path.is_file() or patch is None:
                    result.skip(
                        SourceFileError(
                            path, f"name is not {season_folder}_{modality}_{scene}_p<patch>.tif"
                        )
                    )
                    continue
                patches.setdefault(patch, {})[modality] = path
    return patches
