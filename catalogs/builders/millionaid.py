"""Million-AID catalog builder."""

from __future__ import annotations

from datetime import UTC, datetime
from functools import partial
from pathlib import Path

import pystac

from catalogs.layouts.millionaid import IMAGE_SUFFIX, SPLIT_LABEL_DEPTHS
from catalogs.sensors import get_sensor
from catalogs.stac import BuildResult, SourceFileError, picture_asset, picture_item

SENSOR = "rgb"
# Million-AID publishes no acquisition dates (Long et al., 2021, IEEE JSTARS 14, 4205-4230).
# Upper bound: the paper's first arXiv version (2006.12485, June 2020), after collection from
# Google Earth. Lower bound: none is documented; 1 January 1990 is a deliberately wide guess.
DATE_RANGE: tuple[datetime, datetime] = (
    datetime(1990, 1, 1, tzinfo=UTC),
    datetime(2020, 6, 30, 23, 59, 59, tzinfo=UTC),
)


def build(root: Path) -> BuildResult:
    """Catalog a local copy of Million-AID: one Item per image, without georeference.

    Layout under ``root``::

        train/<L1>/<L2>/<name>.jpg
        train/<L1>/<L2>/<L3>/<name>.jpg
        test/<name>.jpg

    The folders of a train image are its labels at levels 1 to 3 of the Million-AID category
    tree (8 / 28 / 51 classes; level 3 missing where level 2 is a leaf), e.g.
    ``train/agriculture_land/arable_land/dry_field/P0001.jpg``; test images carry no labels.
    The Item id is ``millionaid_<split>_<name>``; geometry and bbox are null; the one asset,
    ``image``, is an RGB JPEG. Items have no datetime, only the range ``DATE_RANGE``. Files
    directly under ``root`` are not part of the layout and are not read.

    Reported and skipped: a folder under ``root`` other than train/test, a file off the layout
    (wrong depth or suffix), a file that does not decode as a 3-band JPEG, and a second image
    with an already used Item id.

    Args:
        root: the folder holding ``train`` and ``test``.

    Returns:
        The Items, by split then path, and the skipped files.
    """
    result = BuildResult()
    used_ids: set[str] = set()
    root = Path(root)
    for folder in sorted(p for p in root.iterdir() if p.is_dir()):
        if folder.name not in SPLIT_LABEL_DEPTHS:
            result.skip(SourceFileError(folder, "not a Million-AID split folder (train, test)"))
    for split in SPLIT_LABEL_DEPTHS:
        for path in _files(root / split):
            result.add(partial(_image_item, root / split, path, used_ids))
    return result


def _files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file()) if folder.is_dir() else []


def _image_item(split_dir: Path, path: Path, used_ids: set[str]) -> pystac.Item:
    """The Item of one image.

    Raises:
        SourceFileError: naming the file, when it is not a usable JPEG of the layout.
    """
    properties = {
        "millionaid:split": split_dir.name,
        "millionaid:labels": _labels(split_dir, path),
    }
    item_id = f"millionaid_{split_dir.name}_{path.stem}"
    return picture_item(item_id, path, partial(_jpeg_asset, path), DATE_RANGE, properties, used_ids)


def _jpeg_asset(path: Path) -> pystac.Asset:
    """The picture's Asset, checked to be a JPEG."""
    asset = picture_asset(path, get_sensor(SENSOR))
    if asset.media_type != pystac.MediaType.JPEG:
        raise SourceFileError(
            path, f"not a JPEG (decodes as {asset.media_type or 'another format'})"
        )
    return asset


def _labels(split_dir: Path, path: Path) -> list[str]:
    """The labels the folders give an image: L1..L3 for train, none for test.

    Raises:
        SourceFileError: the image is not where the layout puts it, or is not a .jpg.
    """
    folders = list(path.relative_to(split_dir).parent.parts)
    depths = SPLIT_LABEL_DEPTHS[split_dir.name]
    if len(folders) not in depths:
        expected = " or ".join(map(str, depths))
        raise SourceFileError(
            path, f"under {len(folders)} label folders of {split_dir.name}/, expected {expected}"
        )
    if path.suffix != IMAGE_SUFFIX:
        raise SourceFileError(path, f"suffix {path.suffix!r} is not {IMAGE_SUFFIX}")
    return folders
