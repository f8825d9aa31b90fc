"""Generate a tiny GeoPile copy in the official layout."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from tests.data.rasters import write_picture

SEED = 0
SIZE = (20, 12)  # width, height
# Valid images, relative to the root, in the order the builder yields them -> PIL mode.
VALID_IMAGES: dict[str, str] = {
    "MLRSNet/bridge/bridge_00001.jpg": "RGB",
    "MLRSNet/loose_0001.jpg": "RGB",  # no class folder: no label
    "NAIP/images/m_3807504_ne_18_1_0001.png": "RGBA",  # R, G, B, NIR
    "NAIP/images/m_3807504_ne_18_1_0002.png": "RGB",
    "PatternNet/beach/beach001.jpg": "RGB",
    "RESISC45/church/church_001.jpg": "RGB",
    "RESISC45/church/church_002.tif": "RGB",
    "RSD46-WHU/airport/airport_0001.jpg": "RGB",
}
# Written only with ``broken=True``.
TRUNCATED = "RESISC45/church/church_003.jpg"
RGBA_OUTSIDE_NAIP = "PatternNet/beach/beach002.png"
GRAYSCALE_NAIP = "NAIP/images/m_3807504_ne_18_1_0003.png"
NOT_AN_IMAGE = "MLRSNet/bridge/readme.txt"
DUPLICATE_ID = "RSD46-WHU/airport/airport_0001.png"
STRAY_FOLDER = "UCMerced"


def make_geopile(root: Path, broken: bool = False) -> Path:
    """Write the valid images (and, with ``broken``, the damaged and stray files) under ``root``.

    Args:
        root: the folder to hold the constituent folders; created if missing.
        broken: also write the truncated, wrong-band, non-image and duplicate-id files and
            ``STRAY_FOLDER``.

    Returns:
        ``root``.
    """
    rng = np.random.default_rng(SEED)
    for relative, mode in VALID_IMAGES.items():
        write_picture(root / relative, rng, SIZE, mode)
    if broken:
        for relative, mode in (
            (TRUNCATED, "RGB"),
            (RGBA_OUTSIDE_NAIP, "RGBA"),
            (GRAYSCALE_NAIP, "L"),
            (DUPLICATE_ID, "RGB"),
            (f"{STRAY_FOLDER}/agricultural/agricultural00.tif", "RGB"),
        ):
            write_picture(root / relative, rng, SIZE, mode)
        truncated = root / TRUNCATED
        truncated.write_bytes(truncated.read_bytes()[: truncated.stat().st_size // 2])
        (root / NOT_AN_IMAGE).write_text("not an image\n")
    return root
