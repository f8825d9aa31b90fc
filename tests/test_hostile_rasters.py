"""Hostile rasters: a few bytes declaring more pixels than any memory holds are quarantined from
their header, before any read; infinities in a float band are nodata, never data."""

from __future__ import annotations

import math
import struct
import zlib
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import rasterio

from catalogs.item_assets import Radiometry, to_storage
from catalogs.sensors import get_sensor
from pipeline.chips import ChipFile
from pipeline.coregister import coregister_item
from pipeline.failures import Failure, ItemError
from pipeline.params import CoregisterParams, PictureParams, PipelineParams, SourceGrid
from pipeline.stages import coregister_batch
from tests.data.coregister import data

REF = data.REFERENCE_TRANSFORM
HUGE_PX = 100_000  # 10^10 pixels a band: 74.5 GiB as float64, a few hundred KB on disk


def _params(
    tmp_path: Path, block_px: int = 2048, max_raster_px: int = 500_000_000, chip_px: int = 32
) -> PipelineParams:
    return PipelineParams(
        work_dir=tmp_path / "work",
        coregister=CoregisterParams(
            sources={"paired": SourceGrid("s2", chip_px, chip_px)},
            block_px=block_px,
            max_raster_px=max_raster_px,
        ),
        pictures=PictureParams(chip_px=16),
    )


def _huge_geotiff(path: Path, sensor: str, side_px: int = HUGE_PX) -> Path:
    """A GeoTIFF declaring ``side_px`` x ``side_px`` pixels of ``sensor``, no tile written."""
    spec = get_sensor(sensor)
    with rasterio.open(
        path,
        "w",
        driver="GTiff",
        width=side_px,
        height=side_px,
        count=spec.num_bands,
        dtype=spec.dtype,
        nodata=spec.nodata,
        crs=data.REFERENCE_CRS,
        transform=REF,
        tiled=True,
        blockxsize=512,
        blockysize=512,
        compress="deflate",
        sparse_ok=True,
    ):
        pass
    return path


def _item(tmp_path: Path, huge: str) -> dict[str, Any]:
    """Sentinel-2 and a DSM over the test square; the ``huge`` one declares 10^10 pixels."""
    s2 = (
        _huge_geotiff(tmp_path / "s2.tif", "sentinel2_l2a")
        if huge == "s2"
        else data.write_raster(
            tmp_path / "s2.tif", data.s2_square(data.square()), data.REFERENCE_CRS, REF, nodata=0
        )
    )
    dsm = (
        _huge_geotiff(tmp_path / "dsm.tif", "dsm")
        if huge == "dsm"
        else data.write_raster(
            tmp_path / "dsm.tif",
            data.dsm_square(
                data.square(), data.REFERENCE_CRS, REF, (data.REFERENCE_PX, data.REFERENCE_PX)
            ),
            data.REFERENCE_CRS,
            REF,
            nodata=-9999.0,
        )
    )
    return data.stac_item(
        "huge",
        "paired",
        {"s2": data.raster_asset(s2, "sentinel2_l2a"), "dsm": data.raster_asset(dsm, "dsm")},
    )


@pytest.mark.parametrize(("huge", "block_px"), [("dsm", 2048), ("s2", 0)])
def test_a_raster_declaring_too_many_pixels_is_quarantined_from_its_header(
    tmp_path: Path, huge: str, block_px: int
) -> None:
    # The reference read whole (block_px 0) would allocate 260 GB; a secondary in blocks
    # would be read window by window: both are refused before any pixel is read.
    item = _item(tmp_path, huge)
    params = _params(tmp_path, block_px=block_px)
    result = coregister_batch([item], params)
    assert result.failures == [
        Failure(
            "coregister",
            "huge",
            item["assets"][huge]["href"],
            "declares 100000 x 100000 px (10,000,000,000), more than "
            "pipeline.coregister.max_raster_px (500,000,000)",
        )
    ]
    assert result.locations == 0  # nothing of it written; the failure kept for a rerun
    assert ChipFile(result.path).failures == [asdict(f) for f in result.failures]
    assert ChipFile(result.path).locations == []


def test_a_stride_giving_millions_of_chips_is_refused_before_listing_them(tmp_path: Path) -> None:
    item = _item(tmp_path, "none")
    _huge_geotiff(Path(item["assets"]["s2"]["href"]), "sentinel2_l2a", side_px=3000)
    with pytest.raises(ItemError) as caught:
        coregister_item(item, _params(tmp_path, chip_px=1))
    assert (caught.value.path, caught.value.reason) == (
        item["assets"]["s2"]["href"],
        "grid of 3000x3000 px cut into 1 px chips every 1 px "
        "gives 9,000,000 chips, more than 1,000,000 per item",
    )


def _png_header(path: Path, width: int, height: int) -> Path:
    """A PNG declaring ``width`` x ``height`` RGB pixels, holding only a few."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return (
            struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
        )

    path.write_bytes(
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
        + chunk(b"IDAT", zlib.compress(b"\0" * 64))
        + chunk(b"IEND", b"")
    )
    return path


@pytest.mark.parametrize(
    ("size", "max_raster_px", "reason"),
    [
        (
            (HUGE_PX, HUGE_PX),
            500_000_000,
            "picture too large to decode (Image size (10000000000 pixels) exceeds limit of",
        ),
        (
            (64, 64),
            4_000,
            "declares 64 x 64 px (4,096), more than pipeline.coregister.max_raster_px (4,000)",
        ),
    ],
)
def test_a_picture_declaring_too_many_pixels_is_refused_before_decoding(
    tmp_path: Path, size: tuple[int, int], max_raster_px: int, reason: str
) -> None:
    path = _png_header(tmp_path / "picture.png", *size)
    item = data.stac_item("bomb", "pictures", {"image": data.raster_asset(path, "rgb")})
    with pytest.raises(ItemError) as caught:
        coregister_item(item, _params(tmp_path, max_raster_px=max_raster_px))
    assert (caught.value.item_id, caught.value.path) == ("bomb", str(path))
    assert caught.value.reason.startswith(reason)


def test_infinite_heights_are_nodata_in_the_chips_and_count_as_such(tmp_path: Path) -> None:
    # Four 32 px windows: window 0 holds 16 infinite pixels of 1024 (kept at a 5 % share),
    # window 3 a 20 x 20 block of them (dropped).
    heights = data.dsm_square(
        data.square(), data.REFERENCE_CRS, REF, (data.REFERENCE_PX, data.REFERENCE_PX)
    )
    heights[0, 4:8, 4:8] = np.inf
    heights[0, 36:56, 36:56] = -np.inf
    item = _item(tmp_path, "none")
    data.write_raster(
        Path(item["assets"]["dsm"]["href"]), heights, data.REFERENCE_CRS, REF, nodata=-9999.0
    )
    chips = coregister_item(item, _params(tmp_path))
    assert chips.dropped == {"nodata": 1}
    dsm = chips.sensors["dsm"]
    assert len(dsm) == 3 and np.isfinite(dsm).all()
    assert (dsm[0, 0, 4:8, 4:8] == -9999.0).all()
    assert np.count_nonzero(dsm == -9999.0) == 16


@pytest.mark.parametrize(
    ("sensor", "radiometry", "values", "stored"),
    [
        ("dsm", None, [1.0, np.inf, -np.inf, np.nan], [1.0, -9999.0, -9999.0, -9999.0]),
        ("sentinel1_grd", None, [-10.0, np.inf, -np.inf, np.nan], [-10.0, np.nan, np.nan, np.nan]),
        (
            "sentinel1_rtc",
            Radiometry(1.0, 0.0, -32768.0, linear_power=True),
            [0.1, np.inf, -32768.0, 0.0],
            [-10.0, np.nan, np.nan, np.nan],
        ),
        (
            "dsm",
            Radiometry(1e30, 0.0, None),
            [1.0, 1e10, -1e10, 0.0],
            [1e30, -9999.0, -9999.0, 0.0],
        ),
    ],
)
def test_non_finite_values_reach_storage_as_nodata(
    sensor: str, radiometry: Radiometry | None, values: list[float], stored: list[float]
) -> None:
    spec = get_sensor(sensor)
    bands = np.array([[values]] * spec.num_bands, dtype=np.float32)
    result, invalid = to_storage(bands, radiometry, spec)
    expected = np.array(stored, dtype=np.float32)
    np.testing.assert_array_equal(result[0, 0], expected)  # NaN == NaN here
    assert invalid[0].tolist() == [not math.isfinite(v) or v == -9999.0 for v in stored]
