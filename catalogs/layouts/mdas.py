"""MDAS (multimodal data set over Augsburg): the on-disk layout of the sub-areas.

Under the data set's root (the extracted upload)::

    Augsburg_data_4_publication/sub_area_<N>/<modality>_sub_area<N>.tif

e.g. ``Augsburg_data_4_publication/sub_area_1/3K_RGB_sub_area1.tif``.
"""

from __future__ import annotations

from catalogs.layouts.numbered_names import parse_number

DATA_FOLDER = "Augsburg_data_4_publication"
SUB_AREA_FOLDER = "sub_area_{number}"
SUB_AREA_FILE = "{modality}_sub_area{number}.tif"


def sub_area_of(folder_name: str) -> int | None:
    """The number of a ``sub_area_<N>`` folder, or None if the name does not fit.

    Args:
        folder_name: the folder's name.

    Returns:
        The sub-area number, or None.
    """
    return parse_number(folder_name, SUB_AREA_FOLDER, "number")


def sub_area_file(modality: str, number: int | str) -> str:
    """The name of sub-area ``number``'s file of ``modality``.

    Args:
        modality: e.g. ``3K_RGB``.
        number: the sub-area number (or a placeholder, for messages).

    Returns:
        ``<modality>_sub_area<N>.tif``.
    """
    return SUB_AREA_FILE.format(modality=modality, number=number)


def modality_of(file_name: str, number: int) -> str | None:
    """The modality of a file of sub-area ``number``, or None if the name does not fit.

    Args:
        file_name: the file's name.
        number: the sub-area number.

    Returns:
        The modality (the name's prefix), or None.
    """
    suffix = sub_area_file("", number)
    modality = file_name.removesuffix(suffix)
    return None if modality == file_name else modality
