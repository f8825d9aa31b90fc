"""Generate a tiny SpaceNet 2 training copy in the official layout."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from affine import Affine

from tests.data.rasters import write_geotiff

SEED = 0
CRS = "EPSG:4326"  # as distributed
PAN_PX, MS_PX = 40, 10  # the real chips are 650 and 163 pixels over 200 m
PAN_DEG = 2.7e-6  # square pixels in degrees, ~0.3 m of latitude
MS_DEG = PAN_DEG * PAN_PX / MS_PX
# AOI folder -> (north-west corner lon, lat of image 1; image numbers). Images lie eastwards.
AOIS: dict[str, tuple[tuple[float, float], tuple[int, ...]]] = {
    "AOI_2_Vegas": ((-115.30, 36.26), (1, 2, 3)),
    "AOI_3_Paris": ((2.35, 48.85), (5,)),
}
# AOI folder -> image numbers east of the AOIS images, written only with ``split_images=True``
# (from their own random stream): image 18 falls in the validation split (k % 10 == 8) and
# image 29 in the test split (k % 10 == 9) of ``model.datasets.spacenet2``.
SPLIT_IMAGES: dict[str, tuple[int, ...]] = {"AOI_3_Paris": (18, 29)}
BUILDINGS = {  # image -> building polygons as (column, row) PAN pixel corners
    1: [[(4, 4), (14, 4), (14, 12), (4, 12)], [(20, 22), (30, 22), (30, 36), (20, 36)]],
    2: [],
    3: [[(10, 10), (20, 10), (20, 20), (10, 20)]],
    5: [[(0, 0), (8, 0), (8, 8), (0, 8)]],
    18: [[(2, 30), (12, 30), (12, 38), (2, 38)]],
    29: [],
}
# What ``damage`` does, in the order the builder reports it.
TEST_FOLDER = "AOI_2_Vegas_Test_public"
MISNAMED = "AOI_2_Vegas_Train/PAN/PAN_AOI_3_Paris_img9.tif"
BAD_GEOJSON = "AOI_2_Vegas_Train/geojson/buildings/buildings_AOI_2_Vegas_img1.geojson"
TRUNCATED = "AOI_2_Vegas_Train/PAN/PAN_AOI_2_Vegas_img2.tif"
WRONG_BAND_COUNT = "AOI_3_Paris_Train/MUL/MUL_AOI_3_Paris_img5.tif"  # 4 bands


def chip_path(root: Path, aoi: str, image: int, product: str) -> Path:
    """Where the layout puts a chip's ``PAN``, ``MUL`` or ``buildings`` file."""
    if product == "buildings":
        return root / f"{aoi}_Train" / "geojson" / product / f"{product}_{aoi}_img{image}.geojson"
    return root / f"{aoi}_Train" / product / f"{product}_{aoi}_img{image}.tif"


def pan_transform(aoi: str, image: int) -> list[float]:
    """The PAN grid's affine transform (6 coefficients) of an image."""
    (west, north), images = AOIS[aoi]
    images += SPLIT_IMAGES.get(aoi, ())
    return [PAN_DEG, 0.0, west + images.index(image) * PAN_DEG * PAN_PX, 0.0, -PAN_DEG, north]


def ms_transform(aoi: str, image: int) -> list[float]:
    _, _, west, _, _, north = pan_transform(aoi, image)
    return [MS_DEG, 0.0, west, 0.0, -MS_DEG, north]


def _values(rng: np.random.Generator, count: int, size: int) -> np.ndarray:
    return rng.integers(1, 2048, (count, size, size)).astype("uint16")  # 11-bit counts


def _buildings(aoi: str, image: int) -> dict[str, object]:
    transform = Affine(*pan_transform(aoi, image))
    features = [
        {
            "type": "Feature",
            "properties": {"BuildingId": number},
            "geometry": {
                "type": "Polygon",
                "coordinates": [[list(transform @ corner) for corner in [*polygon, polygon[0]]]],
            },
        }
        for number, polygon in enumerate(BUILDINGS[image], start=1)
    ]
    return {"type": "FeatureCollection", "features": features}


def chip_values(split_images: bool = False) -> dict[tuple[str, int], dict[str, np.ndarray]]:
    """The pixels :func:`make_spacenet2` writes: ``{(aoi, image): {"PAN": (1, PAN_PX, PAN_PX),
    "MUL": (8, MS_PX, MS_PX)}}`` for the images of :data:`AOIS` (and, with ``split_images``,
    of :data:`SPLIT_IMAGES`), plus ``"RGB-PanSharpen"`` for the first image of each AOI."""
    rng = np.random.default_rng(SEED)
    values: dict[tuple[str, int], dict[str, np.ndarray]] = {}
    for aoi, (_, images) in AOIS.items():
        for image in images:
            values[aoi, image] = {"PAN": _values(rng, 1, PAN_PX), "MUL": _values(rng, 8, MS_PX)}
        values[aoi, images[0]]["RGB-PanSharpen"] = _values(rng, 3, PAN_PX)
    if split_images:
        rng = np.random.default_rng([SEED, 1])
        for aoi, images in SPLIT_IMAGES.items():
            for image in images:
                values[aoi, image] = {"PAN": _values(rng, 1, PAN_PX), "MUL": _values(rng, 8, MS_PX)}
    return values


def make_spacenet2(root: Path, split_images: bool = False) -> Path:
    """Write the chips of :data:`AOIS` under ``root``, plus an uncataloged product per AOI.

    Args:
        root: the folder to hold the ``AOI_<n>_<City>_Train`` folders.
        split_images: also write the chips of :data:`SPLIT_IMAGES`.

    Returns:
        ``root``.
    """
    transforms = {"PAN": pan_transform, "MUL": ms_transform, "RGB-PanSharpen": pan_transform}
    for (aoi, image), products in chip_values(split_images).items():
        for product, pixels in products.items():
            write_geotiff(
                chip_path(root, aoi, image, product),
                pixels,
                CRS,
                Affine(*transforms[product](aoi, image)),
            )
        if "RGB-PanSharpen" in products:
            (root / f"{aoi}_Train" / "summaryData").mkdir()
        labels = chip_path(root, aoi, image, "buildings")
        labels.parent.mkdir(parents=True, exist_ok=True)
        labels.write_text(json.dumps(_buildings(aoi, image)))
    return root


def damage(root: Path) -> None:
    """Damage a copy made by :func:`make_spacenet2` in the ways the module constants name."""
    rng = np.random.default_rng(SEED + 1)
    (root / TEST_FOLDER / "PAN").mkdir(parents=True)
    write_geotiff(
        root / MISNAMED, _values(rng, 1, PAN_PX), CRS, Affine(*pan_transform("AOI_3_Paris", 5))
    )
    (root / BAD_GEOJSON).write_text('{"type": "FeatureCollection", "features": [')
    truncated = root / TRUNCATED
    truncated.write_bytes(truncated.read_bytes()[: truncated.stat().st_size // 2])
    write_geotiff(
        root / WRONG_BAND_COUNT,
        _values(rng, 4, MS_PX),
        CRS,
        Affine(*ms_transform("AOI_3_Paris", 5)),
    )
