"""ISPRS Vaihingen 2D semantic labelling: the on-disk layout and the split by area.

Under the data set's root (``ISPRS_semantic_labeling_Vaihingen.zip`` extracted, plus the
ground truth, as TorchGeo's ``Vaihingen2D`` reads it)::

    top/top_mosaic_09cm_area<N>.tif                    true orthophoto, IR-R-G
    dsm/dsm_09cm_matching_area<N>.tif                  DSM
    top_mosaic_09cm_area<N>.tif                        ground truth (COMPLETE zip), or
    gts_for_participants/top_mosaic_09cm_area<N>.tif   ground truth (training areas)
"""

from __future__ import annotations

from catalogs.layouts.numbered_names import parse_number

TOP_FOLDER = "top"
DSM_FOLDER = "dsm"
# Where the ground truth may lie, first found wins: at the root, as TorchGeo's Vaihingen2D
# reads it (ISPRS_semantic_labeling_Vaihingen_ground_truth_COMPLETE.zip, all 33 areas), or in
# the benchmark package's folder of the 16 training areas.
LABEL_FOLDERS = (".", "gts_for_participants")
# File name templates; the ground truth is named as the orthophoto.
TOP_FILE = "top_mosaic_09cm_area{area}.tif"
DSM_FILE = "dsm_09cm_matching_area{area}.tif"
# The 16 areas whose ground truth ISPRS released for training; the other 17 are its test set.
TRAIN_AREAS = frozenset({1, 3, 5, 7, 11, 13, 15, 17, 21, 23, 26, 28, 30, 32, 34, 37})
TEST_AREAS = frozenset({2, 4, 6, 8, 10, 12, 14, 16, 20, 22, 24, 27, 29, 31, 33, 35, 38})


def area_of(name: str, template: str = TOP_FILE) -> int | None:
    """The area number of a file named as ``template`` says, or None if the name does not fit.

    Args:
        name: a file name.
        template: :data:`TOP_FILE` (orthophoto and ground truth) or :data:`DSM_FILE`.

    Returns:
        The area number, or None.
    """
    return parse_number(name, template, "area")
