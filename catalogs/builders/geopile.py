"""GeoPile catalog builder."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Any

import pystac
from PIL import Image, UnidentifiedImageError

from catalogs.sensors import Sensor, get_sensor
from catalogs.stac import BuildResult, SourceFileError, picture_asset, picture_item


@dataclass(frozen=True)
class Constituent:
    """One dataset of GeoPile: its ground sample distance range and what its folders mean."""

    gsd_range_m: tuple[float, float]
    labelled: bool
    sensors: tuple[str, ...] = ("rgb",)

    @property
    def gsd_m(self) -> float | None:
        """The GSD of every image, where the constituent has a single one."""
        low, high = self.gsd_range_m
        return low if low == high else None


# The constituents of GeoPile and their GSDs: Mendieta et al., "Towards Geospatial Foundation
# Models via Continual Pretraining", ICCV 2023 (arXiv 2302.04476), Table 2. NAIP is unlabelled;
# its imagery is 4-band R, G, B, NIR, so a 4-channel NAIP picture is read as such.
CONSTITUENTS: dict[str, Constituent] = {
    "NAIP": Constituent((1.0, 1.0), labelled=False, sensors=("rgb", "rgb_nir")),
    "RSD46-WHU": Constituent((0.5, 2.0), labelled=True),
    "MLRSNet": Constituent((0.1, 10.0), labelled=True),
    "RESISC45": Constituent((0.2, 30.0), labelled=True),
    "PatternNet": Constituent((0.1, 0.8), labelled=True),
}
IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".tif", ".tiff"})
# GeoPile's images carry no acquisition dates. Upper bound: GeoPile's publication (arXiv
# 2302.04476, February 2023). Lower bound: none is documented; 1 January 1990 is a deliberately
# wide guess.
DATE_RANGE: tuple[datetime, datetime] = (
    datetime(1990, 1, 1, tzinfo=UTC),
    datetime(2023, 2, 28, 23, 59, 59, tzinfo=UTC),
)


def build(root: Path) -> BuildResult:
    """Catalog a local copy of GeoPile: one Item per image, without georeference.

    Layout under ``root``: one folder per constituent dataset, named exactly as the keys of
    ``CONSTITUENTS`` (NAIP, RSD46-WHU, MLRSNet, RESISC45, PatternNet), holding images at any
    depth::

        <constituent>/[<label>/[...]/]<name>.{jpg,jpeg,png,tif,tiff}

    For a labelled constituent the first folder below it is the image's class (torchvision
    ``ImageFolder`` style, as GeoPile is read); NAIP has no classes. The Item id is
    ``geopile_<constituent>_<path below the constituent, without suffix, '/' -> '_'>``;
    geometry and bbox are null; the one asset, ``image``, is RGB (3 bands) or, for NAIP only,
    R, G, B, NIR (4 bands). Items have no datetime, only the range ``DATE_RANGE``. Files
    directly under ``root`` are not part of the layout and are not read.

    Reported and skipped: a folder under ``root`` that is no constituent, a file with another
    suffix, an undecodable image or one with a band count its constituent does not allow, and
    a second image with an already used Item id.

    Args:
        root: the folder holding the constituent folders.

    Returns:
        The Items, by constituent folder then path, and the skipped files.
    """
    result = BuildResult()
    used_ids: set[str] = set()
    for folder in sorted(p for p in Path(root).iterdir() if p.is_dir()):
        if folder.name not in CONSTITUENTS:
            result.skip(SourceFileError(folder, f"not a GeoPile constituent {list(CONSTITUENTS)}"))
            continue
        for path in sorted(p for p in folder.rglob("*") if p.is_file()):
            result.add(partial(_image_item, folder, path, used_ids))
    return result


def _image_item(folder: Path, path: Path, used_ids: set[str]) -> pystac.Item:
    """The Item of one image of the constituent in ``folder``.

    Raises:
        SourceFileError: naming the file, when it is not a usable image.
    """
    constituent = CONSTITUENTS[folder.name]
    relative = path.relative_to(folder)
    item_id = f"geopile_{folder.name}_{relative.with_suffix('').as_posix().replace('/', '_')}"
    properties: dict[str, Any] = {
        "geopile:constituent": folder.name,
        "geopile:gsd_range_m": list(constituent.gsd_range_m),
    }
    if constituent.labelled and len(relative.parts) > 1:
        properties["geopile:label"] = relative.parts[0]
    if path.suffix.lower() not in IMAGE_SUFFIXES:
        raise SourceFileError(path, f"suffix {path.suffix!r} is not one of an image")
    return picture_item(
        item_id, path, partial(_image_asset, path, constituent), DATE_RANGE, properties, used_ids
    )


def _image_asset(path: Path, constituent: Constituent) -> pystac.Asset:
    """The picture's Asset, as the sensor of ``constituent`` with the picture's band count."""
    sensor = _sensor(path, [get_sensor(name) for name in constituent.sensors])
    return picture_asset(path, sensor, gsd_m=constituent.gsd_m)


def _sensor(path: Path, candidates: list[Sensor]) -> Sensor:
    """The candidate sensor whose band count the picture's header declares.

    Raises:
        SourceFileError: the header cannot be read, or no candidate has its band count.
    """
    try:
        with Image.open(path) as image:
            count = len(image.getbands())
    except (UnidentifiedImageError, OSError) as error:
        raise SourceFileError(path, f"undecodable image ({error})") from error
    for sensor in candidates:
        if sensor.num_bands == count:
            return sensor
    expected = " or ".join(f"{s.num_bands} ({s.name})" for s in candidates)
    raise SourceFileError(path, f"{count} bands, expected {expected}")
