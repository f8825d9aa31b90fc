"""SEN12MS catalog builder."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from functools import partial
from pathlib import Path

from catalogs.layouts.sen12ms import (
    SEASON_FOLDER,
    SEASON_INTERVALS,
    Patch,
    patch_of,
    patch_path,
    scene_of,
)
from catalogs.sensors import get_sensor
from catalogs.stac import (
    BuildResult,
    SourceFileError,
    assemble_assets,
    datetime_range,
    make_item,
    raster_asset,
)

# Asset key (the layout's file kind) -> candidate registry sensors, chosen by band count.
ASSET_SENSORS: dict[str, tuple[str, ...]] = {
    "s1": ("sentinel1_grd",),
    "s2": ("sentinel2_l1c", "sentinel2_l2a"),
    "lc": ("modis_landcover",),
}
REQUIRED_ASSETS = ("s1", "s2")
FOOTPRINT_ASSET = "s2"

# Every patch's files by asset key.
PatchFiles = dict[Patch, dict[str, Path]]


def build(root: Path) -> BuildResult:
    """Catalog a local copy of SEN12MS: one Item per patch, assets ``s1``, ``s2`` and ``lc``.

    Layout under ``root`` (the extracted mediaTUM archives)::

        ROIs<id>_<season>/<kind>_<scene>/ROIs<id>_<season>_<kind>_<scene>_p<patch>.tif

    with ``<season>`` one of spring, summer, fall, winter, ``<kind>`` one of s1 (Sentinel-1 GRD,
    2 bands VV/VH, float32 dB), s2 (Sentinel-2, 13 L1C bands in the real data, 12 L2A bands in
    the sample world) and lc (MODIS land cover, 4 bands), and ``<scene>``/``<patch>`` integers,
    e.g. ``ROIs1158_spring/s1_1/ROIs1158_spring_s1_1_p30.tif``. The files of one patch share
    ``ROIs<id>_<season>``, ``<scene>`` and ``<patch>``; the Item id is
    ``ROIs<id>_<season>_<scene>_p<patch>``. s1 and s2 are required, lc is optional; s1 and s2
    may lie on different grids and CRSs. Files directly under ``root`` (archives, split lists)
    are not part of the layout and are not read.

    Reported and skipped: a folder or file whose name does not fit the layout, an unreadable
    raster or one with the wrong band count (the real ``ROIs1868_summer_s1_146_p202`` is damaged),
    and the files of a patch that lacks a usable s1 or s2 partner.

    Args:
        root: the folder holding the ``ROIs<id>_<season>`` folders.

    Returns:
        The Items, sorted by season folder, scene and patch, and the skipped files.
    """
    return build_patches(Path(root), _find_patches, ASSET_SENSORS, REQUIRED_ASSETS, _patch_path)


def build_patches(
    root: Path,
    find_patches: Callable[[Path, BuildResult], PatchFiles],
    asset_sensors: Mapping[str, Sequence[str]],
    required: Sequence[str],
    patch_path: Callable[[Path, Patch, str], Path],
) -> BuildResult:
    """Catalog a layout of SEN12MS patches (SEN12MS's own, SEN12MS-CR's): one Item per patch.

    Args:
        root: the folder holding the layout.
        find_patches: every patch's files by asset key under ``root``, the files outside the
            layout reported.
        asset_sensors: asset key -> candidate registry sensors, as :data:`ASSET_SENSORS`.
        required: the asset keys a patch cannot do without; the files of a patch that lacks a
            usable one are reported (:func:`~catalogs.stac.assemble_assets`).
        patch_path: where the layout under ``root`` puts the file of a patch's asset key.

    Returns:
        The Items, sorted by season folder, scene and patch, footprint from s2, with
        :func:`season_properties`; and the skipped files.
    """
    result = BuildResult()
    makers = {
        key: partial(raster_asset, sensor=[get_sensor(name) for name in names])
        for key, names in asset_sensors.items()
    }
    for patch, files in sorted(find_patches(root, result).items()):
        assets = assemble_assets(files, makers, required, result, partial(patch_path, root, patch))
        if assets is not None:
            result.items.append(
                make_item(
                    patch.item_id,
                    assets,
                    None,
                    season_properties(patch),
                    footprint_asset=FOOTPRINT_ASSET,
                )
            )
    return result


def _find_patches(root: Path, result: BuildResult) -> PatchFiles:
    """Every patch's files by kind, reporting folders and files outside the layout."""
    patches: PatchFiles = {}
    for season_dir in sorted(p for p in root.iterdir() if p.is_dir()):
        if not SEASON_FOLDER.fullmatch(season_dir.name):
            result.skip(SourceFileError(season_dir, "folder name is not ROIs<id>_<season>"))
            continue
        for scene_dir in sorted(season_dir.iterdir()):
            kind, scene = _scene_folder(scene_dir.name)
            if not scene_dir.is_dir() or scene is None:
                result.skip(SourceFileError(scene_dir, "not a <kind>_<scene> folder"))
                continue
            for path in sorted(scene_dir.iterdir()):
                patch = patch_of(path.name, season_dir.name, kind, scene)
                if not path.is_file() or patch is None:
                    result.skip(
                        SourceFileError(
                            path, f"name is not {season_dir.name}_{kind}_{scene}_p<patch>.tif"
                        )
                    )
                    continue
                patches.setdefault(patch, {})[kind] = path
    return patches


def _scene_folder(name: str) -> tuple[str, int | None]:
    """The kind and scene number of a ``<kind>_<scene>`` folder (scene None if it is not one)."""
    for kind in ASSET_SENSORS:
        scene = scene_of(name, kind)
        if scene is not None:
            return kind, scene
    return "", None


def _patch_path(root: Path, patch: Patch, kind: str) -> Path:
    """Where the layout puts the ``kind`` file of ``patch``."""
    return patch_path(root / patch.season_folder, patch, kind)


def season_properties(patch: Patch) -> dict[str, str | int]:
    """A SEN12MS patch's season interval, season, scene and patch number as Item properties."""
    return {
        **datetime_range(*SEASON_INTERVALS[patch.season]),
        "sen12ms:season": patch.season,
        "sen12ms:scene": patch.scene,
        "sen12ms:patch": patch.patch,
    }
