"""SpaceNet 2 (building detection v2): the on-disk layout of the training chips.

Under the data set's root (the extracted ``SN2_buildings_train_AOI_<n>_<City>.tar.gz``
tarballs; TorchGeo's ``SpaceNet2`` reads them from ``<its root>/SN2_buildings/train``)::

    AOI_<n>_<City>_Train/PAN/PAN_AOI_<n>_<City>_img<k>.tif
    AOI_<n>_<City>_Train/MUL/MUL_AOI_<n>_<City>_img<k>.tif
    AOI_<n>_<City>_Train/geojson/buildings/buildings_AOI_<n>_<City>_img<k>.geojson
    AOI_<n>_<City>_Train/{MUL-PanSharpen,RGB-PanSharpen,summaryData}/
"""

from __future__ import annotations

import re
from pathlib import Path

from catalogs.layouts.numbered_names import parse_number

# The folder of an AOI: ``aoi`` its name (AOI_<n>_<City>), ``number`` its n.
AOI_FOLDER = re.compile(r"(?P<aoi>AOI_(?P<number>\d+)_[A-Za-z]+)_Train")
AOI_FOLDER_NAME = "{aoi}_Train"
# Asset key -> (product folder, registry sensor); the product folder is also the file prefix.
RASTER_PRODUCTS: dict[str, tuple[str, str]] = {
    "pan": ("PAN", "worldview3_pan"),
    "ms": ("MUL", "worldview3_ms"),
}
RASTER_SUFFIX = ".tif"
# The building polygons: the product name (the file prefix), its folder and suffix.
LABEL_PRODUCT = "buildings"
LABEL_FOLDER = Path("geojson") / "buildings"
LABEL_SUFFIX = ".geojson"
# Products of the training tarballs that are derived from PAN and MUL, and the challenge's
# summary CSVs: part of the layout, read by nobody here.
UNREAD_FOLDERS = ("MUL-PanSharpen", "RGB-PanSharpen", "summaryData")
CHIP_FILE = "{product}_{aoi}_img{image}{suffix}"


def product_folder(product: str) -> Path:
    """The folder of ``product``'s files under an AOI folder.

    Args:
        product: ``PAN``, ``MUL`` or :data:`LABEL_PRODUCT`.

    Returns:
        The folder, relative to the AOI folder.
    """
    return LABEL_FOLDER if product == LABEL_PRODUCT else Path(product)


def chip_file(product: str, aoi: str, image: int | str) -> str:
    """The name of chip ``image``'s ``product`` file in ``aoi``.

    Args:
        product: ``PAN``, ``MUL`` or :data:`LABEL_PRODUCT`.
        aoi: the AOI, e.g. ``AOI_2_Vegas``.
        image: the image number ``k`` (or a placeholder, for messages).

    Returns:
        The file name.
    """
    suffix = LABEL_SUFFIX if product == LABEL_PRODUCT else RASTER_SUFFIX
    return CHIP_FILE.format(product=product, aoi=aoi, image=image, suffix=suffix)


def chip_path(aoi_folder: Path, product: str, aoi: str, image: int) -> Path:
    """Where the layout puts chip ``image``'s ``product`` file.

    Args:
        aoi_folder: the AOI's folder.
        product: ``PAN``, ``MUL`` or :data:`LABEL_PRODUCT`.
        aoi: the AOI.
        image: the image number.

    Returns:
        The file's path.
    """
    return aoi_folder / product_folder(product) / chip_file(product, aoi, image)


def image_of(file_name: str, product: str, aoi: str) -> int | None:
    """The image number of a ``product`` file of ``aoi``, or None if the name does not fit.

    Args:
        file_name: the file's name.
        product: ``PAN``, ``MUL`` or :data:`LABEL_PRODUCT`.
        aoi: the AOI.

    Returns:
        The image number, or None.
    """
    return parse_number(file_name, chip_file(product, aoi, "{image}"), "image")
