"""The downstream data modules on tiny copies of the four benchmarks, for the tests.

The copies themselves are fixtures of ``tests/conftest.py`` (``roots``); this module holds the
test arguments of each data module and what checks where a crop came from.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch
from torch import Tensor

from model.datamodules import (
    BigEarthNetDataModule,
    DownstreamDataModule,
    SEN12MSCRDataModule,
    SpaceNet2DataModule,
    VaihingenDataModule,
)

TRAIN_ROWS = 40  # rows of the BigEarthNet train CSV (its two train patches, repeated)
SEN12MS_CR_PX = 8
SPACENET_PX = 16
VAIHINGEN_PX = 16
L2A_TRIPLET = ("ROIs1158_spring", 1, 31)  # 12 bands: not a SEN12MS-CR sample, removed
VAL_TRIPLET = ("ROIs2017_winter", 22, 4)
SPACENET_VAL = ("AOI_3_Paris", 18)
EXTRA_TRAIN_AREA = 3  # a copy of area 1, so that a training area can be held out

# Task -> arguments of its datamodule in the tests (BigEarthNet's train CSV repeats two
# patches: a few samples give the statistics).
ARGUMENTS: dict[str, dict[str, object]] = {
    "bigearthnet": {"input_px": 64, "statistics_samples": 4},
    "sen12ms_cr": {"input_px": SEN12MS_CR_PX},
    "spacenet2": {"input_px": SPACENET_PX},
    "vaihingen": {"input_px": VAIHINGEN_PX},
}
DATAMODULES: dict[str, Callable[..., DownstreamDataModule]] = {
    "bigearthnet": BigEarthNetDataModule,
    "sen12ms_cr": SEN12MSCRDataModule,
    "spacenet2": SpaceNet2DataModule,
    "vaihingen": VaihingenDataModule,
}


def make(task: str, roots: dict[str, Path], **kwargs: object) -> DownstreamDataModule:
    """The task's datamodule on its fixture, set up."""
    datamodule = DATAMODULES[task](roots[task], **{**ARGUMENTS[task], **kwargs})
    datamodule.setup("fit")
    return datamodule


def placements(crop: Tensor, full: Tensor) -> set[tuple[int, int, bool, bool]]:
    """Every (top, left, left-right flip, up-down flip) that cuts ``crop`` from ``full``."""
    size = crop.shape[-1]
    found = set()
    for top in range(full.shape[-2] - size + 1):
        for left in range(full.shape[-1] - size + 1):
            window = full[..., top : top + size, left : left + size]
            for fliplr in (False, True):
                for flipud in (False, True):
                    flipped = window.flip(-1) if fliplr else window
                    flipped = flipped.flip(-2) if flipud else flipped
                    if torch.allclose(flipped, crop):
                        found.add((top, left, fliplr, flipud))
    return found
