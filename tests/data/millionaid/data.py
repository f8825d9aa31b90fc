"""Generate a tiny Million-AID copy in the official layout."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from tests.data.rasters import write_picture

SEED = 0
SIZE = (24, 16)  # width, height
# Valid images, relative to the root, in the order the builder yields them.
VALID_IMAGES = (
    "train/agriculture_land/arable_land/dry_field/P0001.jpg",
    "train/agriculture_land/arable_land/dry_field/P0002.jpg",
    "train/water_area/lake/P0100.jpg",
    "test/T0001.jpg",
    "test/T0002.jpg",
)
# Written only with ``broken=True``.
TRUNCATED = "train/agriculture_land/arable_land/dry_field/P0003.jpg"
GRAYSCALE = "train/agriculture_land/arable_land/dry_field/P0004.jpg"
PNG_AS_JPG = "train/agriculture_land/arable_land/dry_field/P0005.jpg"
TOO_SHALLOW = "train/agriculture_land/P0006.jpg"
DUPLICATE_ID = "train/water_area/lake/P0001.jpg"
NOT_AN_IMAGE = "test/notes.txt"
STRAY_FOLDER = "val"


def make_millionaid(root: Path, broken: bool = False) -> Path:
    """Write the valid images (and, with ``broken``, the damaged and stray files) under ``root``.

    Args:
        root: the folder to hold ``train`` and ``test``; created if missing.
        broken: also write the truncated, grayscale, PNG, misplaced, duplicate-id and non-image
            files and ``STRAY_FOLDER``.

    Returns:
        ``root``.
    """
    rng = np.random.default_rng(SEED)
    for relative in VALID_IMAGES:
        write_picture(root / relative, rng, SIZE)
    if broken:
        for relative in (TRUNCATED, TOO_SHALLOW, DUPLICATE_ID):
            write_picture(root / relative, rng, SIZE)
        truncated = root / TRUNCATED
        truncated.write_bytes(truncated.read_bytes()[: truncated.stat().st_size // 2])
        write_picture(root / GRAYSCALE, rng, SIZE, mode="L")
        write_picture(root / PNG_AS_JPG, rng, SIZE, image_format="PNG")
        (root / NOT_AN_IMAGE).write_text("not an image\n")
        write_picture(root / STRAY_FOLDER / "V0001.jpg", rng, SIZE)
    return root
