"""BigEarthNet v1.0 (BigEarthNet-MM): the on-disk layout of the patches and the split files.

Under the data set's root (the extracted archives and split files, as TorchGeo's
``BigEarthNet`` reads them)::

    BigEarthNet-v1.0/<s2>/<s2>_<band>.tif, <s2>_labels_metadata.json
    BigEarthNet-S1-v1.0/<s1>/<s1>_<band>.tif, <s1>_labels_metadata.json
    bigearthnet-{train,val,test}.csv
"""

from __future__ import annotations

import re

S2_FOLDER = "BigEarthNet-v1.0"
S1_FOLDER = "BigEarthNet-S1-v1.0"
SPLITS = ("train", "val", "test")
SPLIT_FILE = "bigearthnet-{split}.csv"
METADATA_SUFFIX = "_labels_metadata.json"
BAND_FILE = "{patch}_{band}.tif"
# The names of the patch folders.
S2_PATCH = re.compile(r"S2[AB]_MSIL2A_\d{8}T\d{6}_\d+_\d+")
S1_PATCH = re.compile(r"S1[AB]_IW_GRDH_1SDV_\d{8}T\d{6}_[0-9A-Z]{5}_\d+_\d+")


def band_file(patch: str, band: str) -> str:
    """The name of a patch's band file.

    Args:
        patch: the patch (its folder's name).
        band: the band name, e.g. ``B02`` or ``VV``.

    Returns:
        ``<patch>_<band>.tif``.
    """
    return BAND_FILE.format(patch=patch, band=band)


def metadata_file(patch: str) -> str:
    """The name of a patch's labels metadata file.

    Args:
        patch: the patch (its folder's name).

    Returns:
        ``<patch>_labels_metadata.json``.
    """
    return f"{patch}{METADATA_SUFFIX}"
