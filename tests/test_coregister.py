"""Co-registration: sensors warped onto the reference grid, chips cut, bad input reported."""

from __future__ import annotations

import json
import math
import pickle
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import rasterio
from affine import Affine
from PIL import Image
from rasterio.warp import transform_bounds
from rasterio.windows import Window
from rasterio.windows import bounds as window_bounds

from catalogs.sensors import get_sensor
from pipeline import coregister
from pipeline.chips import LocationChips
from pipeline.coregister import coregister_item
from pipeline.failures import ItemError
from pipeline.params import CoregisterParams, PictureParams, PipelineParams, SourceGrid
from tests.data.coregister import data

REF = data.REFERENCE_TRANSFORM
REF_SHAPE = (data.REFERENCE_PX, data.REFERENCE_PX)
# The square's edges in reference pixel coordinates (see data.SQUARE).
SQUARE_COLS = (17.3, 44.6)
SQUARE_ROWS = (15.8, 47.2)


def make_params(
    reference: str = "s2",
    chip_px: int = 64,
    stride_px: int = 64,
    max_nodata_share: float = 0.05,
    picture_px: int = 64,
) -> PipelineParams:
    """Parameters with one paired source, ``paired``, and every other source a picture."""
    return PipelineParams(
        coregister=CoregisterParams(
            sources={"paired": SourceGrid(reference, chip_px, stride_px)},
            max_nodata_share=max_nodata_share,
            shift_flag_px=0.5,
        ),
        pictures=PictureParams(chip_px=picture_px),
    )


def write_s2(folder: Path, transform: Affine = REF, shape: tuple[int, int] = REF_SHAPE) -> Path:
    """The square seen by Sentinel-2 on the reference CRS."""
    return data.write_raster(
        folder / "s2.tif",
        data.s2_square(data.square(), transform, shape),
        data.REFERENCE_CRS,
        transform,
        nodata=0,
    )


def write_secondary(
    folder: Path, sensor: str, inside: data.Inside, crs: str = data.SECONDARY_CRS
) -> Path:
    """``inside`` seen by a DSM (7.5 m) or Sentinel-1 (10 m) on its own grid in ``crs``."""
    if sensor == "dsm":
        transform, shape = data.covering_transform(crs, 7.5, 30.0, (2.1, 3.7))
        values = data.dsm_square(inside, crs, transform, shape)
    else:
        transform, shape = data.covering_transform(crs, 10.0, 30.0, (3.0, 7.0))
        values = data.s1_square(inside, crs, transform, shape)
    nodata = get_sensor({"dsm": "dsm", "s1": "sentinel1_grd"}[sensor]).nodata
    return data.write_raster(folder / f"{sensor}.tif", values, crs, transform, nodata=nodata)


def square_item(
    folder: Path, secondary: str = "s1", secondary_inside: data.Inside | None = None
) -> dict[str, Any]:
    """A location with Sentinel-2 (reference) and one secondary over the square (or over
    ``secondary_inside``)."""
    sensor = {"dsm": "dsm", "s1": "sentinel1_grd"}[secondary]
    inside = secondary_inside or data.square()
    return data.stac_item(
        "square",
        "paired",
        {
            "s2": data.raster_asset(write_s2(folder), "sentinel2_l2a"),
            secondary: data.raster_asset(write_secondary(folder, secondary, inside), sensor),
        },
    )


def crossing(profile: np.ndarray, rising: bool) -> float:
    """Where a 0..1 profile first crosses 0.5 upwards (or downwards), in pixel coordinates
    (pixel ``i`` spans i..i+1), interpolating linearly between pixel centres."""
    above = profile >= 0.5
    steps = ~above[:-1] & above[1:] if rising else above[:-1] & ~above[1:]
    i = int(np.flatnonzero(steps)[0])
    return i + 0.5 + (0.5 - profile[i]) / (profile[i + 1] - profile[i])


def square_edges(image: np.ndarray) -> list[np.ndarray]:
    """Left, right, top and bottom edge positions of the square in a 0..1 image, one per row
    (or column) well inside the square, in pixel coordinates."""
    rows = range(math.ceil(SQUARE_ROWS[0]) + 2, math.floor(SQUARE_ROWS[1]) - 2)
    cols = range(math.ceil(SQUARE_COLS[0]) + 2, math.floor(SQUARE_COLS[1]) - 2)
    return [
        np.array([crossing(image[r], True) for r in rows]),
        np.array([crossing(image[r], False) for r in rows]),
        np.array([crossing(image[:, c], True) for c in cols]),
        np.array([crossing(image[:, c], False) for c in cols]),
    ]


def normalised(chips: LocationChips, sensor: str) -> np.ndarray:
    """The first chip's first band of ``sensor`` scaled to 0 (off the square) .. 1 (on it);
    SAR in linear power, where the square's share of a pixel is linear."""
    image = chips.sensors[sensor][0, 0].astype(np.float64)
    if sensor == "sentinel1_grd":
        image = 10 ** (image / 10)
    low, high = {
        "sentinel2_l2a": (1000, 4000),
        "dsm": (50, 80),
        "sentinel1_grd": (10**-2.0, 10**-0.5),
    }[sensor]
    return (image - low) / (high - low)


# --- alignment --------------------------------------------------------------------------------


@pytest.mark.parametrize(("secondary", "sensor"), [("dsm", "dsm"), ("s1", "sentinel1_grd")])
def test_secondary_edges_coincide_with_reference(
    tmp_path: Path, secondary: str, sensor: str
) -> None:
    chips = coregister_item(square_item(tmp_path, secondary), make_params())
    truth = [SQUARE_COLS[0], SQUARE_COLS[1], SQUARE_ROWS[0], SQUARE_ROWS[1]]
    reference_edges = square_edges(normalised(chips, "sentinel2_l2a"))
    secondary_edges = square_edges(normalised(chips, sensor))
    for true, reference, secondary in zip(truth, reference_edges, secondary_edges, strict=True):
        assert np.abs(reference - true).max() < 0.15
        assert np.abs(secondary - reference).max() < 0.5
        assert np.abs(secondary - true).max() < 0.5


@pytest.mark.parametrize("secondary", ["dsm", "s1"])
def test_qa_of_aligned_pair_is_small(tmp_path: Path, secondary: str) -> None:
    (shift,) = coregister_item(square_item(tmp_path, secondary), make_params()).shifts
    assert shift["shift_px"] < 0.15
    assert shift["flagged"] is False


def test_qa_measures_and_flags_a_misregistered_secondary(tmp_path: Path) -> None:
    # The DSM sees the square 15 m further east and 12 m further south: (+1.2, +1.5) px.
    item = square_item(tmp_path, "dsm", data.square(shift_m=(15.0, -12.0)))
    (shift,) = coregister_item(item, make_params()).shifts
    assert shift["reference"] == "sentinel2_l2a" and shift["secondary"] == "dsm"
    assert (shift["dy_px"], shift["dx_px"]) == pytest.approx((1.2, 1.5), abs=0.1)
    assert shift["shift_px"] == pytest.approx(math.hypot(shift["dy_px"], shift["dx_px"]))
    assert shift["flagged"] is True


# --- chips ------------------------------------------------------------------------------------


def test_chip_transforms_are_the_reference_grid_shifted_by_whole_windows(tmp_path: Path) -> None:
    chips = coregister_item(square_item(tmp_path), make_params(chip_px=32, stride_px=16))
    offsets = [(row, col) for row in (0, 16, 32) for col in (0, 16, 32)]
    assert chips.count == 9
    assert chips.crs == "EPSG:32632"
    expected = [
        (10.0, 0.0, 730000.0 + 10.0 * col, 0.0, -10.0, 5363000.0 - 10.0 * row)
        for row, col in offsets
    ]
    np.testing.assert_array_equal(chips.transforms, np.array(expected))
    expected_bounds = [
        transform_bounds(
            data.REFERENCE_CRS, "EPSG:4326", *window_bounds(Window(col, row, 32, 32), REF)
        )
        for row, col in offsets
    ]
    np.testing.assert_array_equal(chips.bounds_lonlat, np.array(expected_bounds))
    with rasterio.open(tmp_path / "s2.tif") as src:  # the reference is cut, not resampled
        reference = src.read()
    for k, (row, col) in enumerate(offsets):
        np.testing.assert_array_equal(
            chips.sensors["sentinel2_l2a"][k], reference[:, row : row + 32, col : col + 32]
        )


def test_chips_are_in_storage_dtypes_reference_first_masks_left_out(tmp_path: Path) -> None:
    item = square_item(tmp_path, "s1")
    lc = data.write_raster(
        tmp_path / "lc.tif", np.ones((1, *REF_SHAPE), np.uint8), data.REFERENCE_CRS, REF, nodata=255
    )
    item["assets"] = {
        "lc": data.raster_asset(lc, "landcover"),
        "s1": item["assets"]["s1"],
        "s2": item["assets"]["s2"],
    }
    chips = coregister_item(item, make_params(chip_px=32, stride_px=32))
    assert list(chips.sensors) == ["sentinel2_l2a", "sentinel1_grd"]
    assert chips.sensors["sentinel2_l2a"].shape == (4, 12, 32, 32)
    assert chips.sensors["sentinel2_l2a"].dtype == np.uint16
    assert chips.sensors["sentinel1_grd"].shape == (4, 2, 32, 32)
    assert chips.sensors["sentinel1_grd"].dtype == np.float32
    assert chips.transforms.shape == (4, 6) and chips.bounds_lonlat.shape == (4, 4)
    assert chips.source == "paired" and chips.item_id == "square"


def test_window_grid_fits_inside_the_reference(tmp_path: Path) -> None:
    # 64 px, chips of 30 every 20: windows at 0 and 20 only (40 + 30 > 64).
    chips = coregister_item(square_item(tmp_path), make_params(chip_px=30, stride_px=20))
    assert chips.count == 4
    assert sorted({(t[2] - REF.c) / 10 for t in chips.transforms}) == [0.0, 20.0]
    assert chips.dropped == {"nodata": 0}


def test_sar_is_averaged_in_linear_power(tmp_path: Path) -> None:
    # Sentinel-1 at 10 m, a checkerboard of -10 and -20 dB, onto a 20 m Sentinel-2 grid.
    ref = Affine(20.0, 0.0, REF.c, 0.0, -20.0, REF.f)
    item = data.stac_item(
        "sar",
        "paired",
        {
            "s2": data.raster_asset(write_s2(tmp_path, ref, (16, 16)), "sentinel2_l2a"),
            "s1": data.raster_asset(
                data.write_raster(
                    tmp_path / "s1.tif",
                    data.checkerboard_db((32, 32), -20.0, -10.0),
                    data.REFERENCE_CRS,
                    REF,
                ),
                "sentinel1_grd",
            ),
        },
    )
    chips = coregister_item(item, make_params(chip_px=16, stride_px=16))
    expected_db = 10 * math.log10((0.1 + 0.01) / 2)  # -12.596 dB, not the dB mean -15
    np.testing.assert_allclose(chips.sensors["sentinel1_grd"], expected_db, atol=1e-4)


def test_linear_sar_is_averaged_as_stored(tmp_path: Path) -> None:
    ref = Affine(20.0, 0.0, REF.c, 0.0, -20.0, REF.f)
    power = 10 ** (data.checkerboard_db((32, 32), -20.0, -10.0) / 10)
    item = data.stac_item(
        "sar",
        "paired",
        {
            "s2": data.raster_asset(write_s2(tmp_path, ref, (16, 16)), "sentinel2_l2a"),
            "s1": data.raster_asset(
                data.write_raster(tmp_path / "s1.tif", power, data.REFERENCE_CRS, REF),
                "sentinel1_grd_linear",
            ),
        },
    )
    chips = coregister_item(item, make_params(chip_px=16, stride_px=16))
    np.testing.assert_allclose(chips.sensors["sentinel1_grd_linear"], 0.055, rtol=1e-5)


def write_nodata_world(folder: Path) -> dict[str, Any]:
    """Four 32 px windows: 0 has 11.8 % Sentinel-2 nodata in one band, 1 has 2.9 %,
    2 has a DSM nodata patch over ~28 % of it, 3 is clean."""
    s2 = data.s2_square(data.square())
    s2[3, 2:13, 2:13] = 0  # window 0: 121 / 1024
    s2[:, 5:10, 40:46] = 0  # window 1: 30 / 1024
    s2_path = data.write_raster(folder / "s2.tif", s2, data.REFERENCE_CRS, REF, nodata=0)
    dsm = data.dsm_square(data.square(), data.REFERENCE_CRS, REF, REF_SHAPE)
    dsm[0, 38:56, 6:24] = -9999.0  # window 2: about 17 x 17 of its 32 x 32 pixels
    dsm_path = data.write_raster(
        folder / "dsm.tif",
        dsm,
        data.REFERENCE_CRS,
        REF @ Affine.translation(0.5, 0.25),
        nodata=-9999.0,
    )
    return data.stac_item(
        "nodata",
        "paired",
        {
            "s2": data.raster_asset(s2_path, "sentinel2_l2a"),
            "dsm": data.raster_asset(dsm_path, "dsm"),
        },
    )


@pytest.mark.parametrize(
    ("max_share", "kept_windows"),
    [(0.05, [(0, 32), (32, 32)]), (0.15, [(0, 0), (0, 32), (32, 32)]), (0.0, [(32, 32)])],
)
def test_chips_with_too_much_nodata_are_dropped_and_counted(
    tmp_path: Path, max_share: float, kept_windows: list[tuple[int, int]]
) -> None:
    chips = coregister_item(
        write_nodata_world(tmp_path),
        make_params(chip_px=32, stride_px=32, max_nodata_share=max_share),
    )
    assert chips.dropped == {"nodata": 4 - len(kept_windows)}
    assert [((REF.f - t[5]) / 10, (t[2] - REF.c) / 10) for t in chips.transforms] == kept_windows
    assert len(chips.sensors["sentinel2_l2a"]) == len(chips.sensors["dsm"]) == len(kept_windows)


@pytest.mark.parametrize("sensor", ["rgb", "dsm", "sentinel1_grd"])
def test_ground_the_secondary_does_not_cover_is_nodata(tmp_path: Path, sensor: str) -> None:
    # The secondary covers the left 40 of 64 reference columns: the right windows lack
    # 24 / 32 of their pixels, whatever the secondary's nodata (none: rgb; -9999; NaN).
    spec = get_sensor(sensor)
    values = np.full((spec.num_bands, 128, 80), 100, dtype=spec.dtype)
    secondary = data.write_raster(
        tmp_path / "secondary.tif",
        values,
        data.REFERENCE_CRS,
        Affine(5.0, 0.0, REF.c, 0.0, -5.0, REF.f + 0.0),
        nodata=spec.nodata,
    )
    item = data.stac_item(
        "partial",
        "paired",
        {
            "s2": data.raster_asset(write_s2(tmp_path), "sentinel2_l2a"),
            "secondary": data.raster_asset(secondary, sensor),
        },
    )
    chips = coregister_item(item, make_params(chip_px=32, stride_px=32))
    assert chips.dropped == {"nodata": 2}
    assert sorted((t[2] - REF.c) / 10 for t in chips.transforms) == [0.0, 0.0]


def test_multiresolution_bands_stack_on_the_finest_grid(tmp_path: Path) -> None:
    # BigEarthNet-like: one file per band at its native 10, 20 or 60 m; Sentinel-1 per
    # polarisation on a rotated grid; the reference asset is a 60 m band.
    s2 = get_sensor("sentinel2_l2a")
    assets = {}
    for i, band in reversed(list(enumerate(s2.bands))):
        gsd = band.gsd_m or 10.0
        size = round(1920 / gsd)  # 1920 m on a side: 192 px at 10 m, 32 px at 60 m
        transform = Affine(gsd, 0.0, REF.c, 0.0, -gsd, REF.f)
        values = np.full((1, size, size), 100 * (i + 1), dtype=np.uint16)
        path = data.write_raster(
            tmp_path / f"{band.name}.tif", values, data.REFERENCE_CRS, transform, nodata=0
        )
        assets[f"s2_{band.name}"] = data.raster_asset(path, "sentinel2_l2a", (band.name,))
    s1_transform, s1_shape = data.covering_transform(
        data.SECONDARY_CRS, 10.0, 30.0, (3.0, 7.0), extent_px=192
    )
    for name, db in (("VH", -20.0), ("VV", -10.0)):
        path = data.write_raster(
            tmp_path / f"{name}.tif",
            np.full((1, *s1_shape), db, dtype=np.float32),
            data.SECONDARY_CRS,
            s1_transform,
        )
        assets[f"s1_{name}"] = data.raster_asset(path, "sentinel1_grd", (name,))
    item = data.stac_item("bigearthnet_like", "paired", assets)
    chips = coregister_item(item, make_params(reference="s2_B01", chip_px=96, stride_px=96))
    assert list(chips.sensors) == ["sentinel2_l2a", "sentinel1_grd"]
    assert chips.count == 4 and chips.dropped == {"nodata": 0}
    assert tuple(chips.transforms[0]) == (10.0, 0.0, REF.c, 0.0, -10.0, REF.f)
    stacked = chips.sensors["sentinel2_l2a"]
    assert stacked.shape == (4, 12, 96, 96)
    for i in range(12):
        assert np.unique(stacked[:, i]).tolist() == [100 * (i + 1)]
    np.testing.assert_allclose(chips.sensors["sentinel1_grd"][:, 0], -10.0, atol=1e-4)
    np.testing.assert_allclose(chips.sensors["sentinel1_grd"][:, 1], -20.0, atol=1e-4)


def test_bands_of_one_file_are_put_in_registry_order(tmp_path: Path) -> None:
    s2 = get_sensor("sentinel2_l2a")
    file_order = s2.band_names[::-1]
    values = np.stack(
        [np.full(REF_SHAPE, 100 * (s2.band_names.index(b) + 1), np.uint16) for b in file_order]
    )
    path = data.write_raster(tmp_path / "s2.tif", values, data.REFERENCE_CRS, REF, nodata=0)
    item = data.stac_item(
        "reordered", "paired", {"s2": data.raster_asset(path, "sentinel2_l2a", file_order)}
    )
    chips = coregister_item(item, make_params())
    assert [int(band[0, 0]) for band in chips.sensors["sentinel2_l2a"][0]] == [
        100 * (i + 1) for i in range(12)
    ]
    assert chips.shifts == []


def test_datetimes_come_from_asset_then_item_then_start(tmp_path: Path) -> None:
    item = square_item(tmp_path)
    item["assets"]["s2"]["datetime"] = "2020-06-02T10:20:30Z"
    item["properties"] = {"datetime": None, "start_datetime": "2020-06-01T00:00:00Z"}
    assert coregister_item(item, make_params()).datetimes == {
        "sentinel2_l2a": "2020-06-02T10:20:30Z",
        "sentinel1_grd": "2020-06-01T00:00:00Z",
    }
    item["properties"] = {"datetime": "2020-06-05T00:00:00Z"}
    assert coregister_item(item, make_params()).datetimes["sentinel1_grd"] == "2020-06-05T00:00:00Z"
    item["properties"] = {"datetime": None}
    assert coregister_item(item, make_params()).datetimes["sentinel1_grd"] is None


def test_result_survives_save_and_load_and_the_function_pickles(tmp_path: Path) -> None:
    chips = coregister_item(square_item(tmp_path), make_params(chip_px=32, stride_px=32))
    loaded = LocationChips.load(chips.save(tmp_path / "chips.npz"))
    assert loaded.shifts == chips.shifts and loaded.dropped == chips.dropped
    np.testing.assert_array_equal(loaded.sensors["sentinel1_grd"], chips.sensors["sentinel1_grd"])
    assert pickle.loads(pickle.dumps(coregister_item)) is coregister_item


# --- bad input --------------------------------------------------------------------------------


def _garbage(path: Path) -> None:
    path.write_bytes(b"II*\x00" + bytes(range(256)) * 4)


def _truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def _rewrite(**changes: Any) -> Callable[[Path], None]:
    """Rewrite a raster with its data, CRS or transform changed (None: left out)."""

    def rewrite(path: Path) -> None:
        with rasterio.open(path) as src:
            fields = {
                "data": src.read(),
                "crs": src.crs.to_string(),
                "transform": src.transform,
                "nodata": src.nodata,
            }
        fields.update({k: v(fields["data"]) if callable(v) else v for k, v in changes.items()})
        path.unlink()
        data.write_raster(
            path, fields["data"], fields["crs"], fields["transform"], fields["nodata"]
        )

    return rewrite


BAD_INPUTS = {
    "corrupt": ("s1", _garbage, "unreadable GeoTIFF ("),
    "truncated": ("s2", _truncate, "unreadable GeoTIFF ("),
    "missing": ("s1", Path.unlink, "unreadable GeoTIFF ("),
    "no CRS": ("s1", _rewrite(crs=None), "no CRS"),
    "no transform": ("s1", _rewrite(transform=None), "no geotransform"),
    "extra band": (
        "s1",
        _rewrite(data=lambda d: np.concatenate([d, d[:1]])),
        "3 bands, the registry's sentinel1_grd has 2",
    ),
    "dtype": (
        "s2",
        _rewrite(data=lambda d: d.astype(np.int16)),
        "dtype int16, the registry's sentinel2_l2a stores uint16",
    ),
    "all nodata reference": (
        "s2",
        _rewrite(data=lambda d: np.zeros_like(d)),
        "all pixels are nodata",
    ),
    "all nodata secondary": (
        "s1",
        _rewrite(data=lambda d: np.full_like(d, np.nan)),
        "all pixels are nodata",
    ),
    "elsewhere": (
        "s1",
        _rewrite(transform=Affine(10.0, 0.0, 500000.0, 0.0, -10.0, 5000000.0)),
        "no data on the reference grid",
    ),
}


@pytest.mark.parametrize("case", list(BAD_INPUTS))
def test_bad_raster_is_reported_with_item_path_and_reason(tmp_path: Path, case: str) -> None:
    asset, breaks, reason = BAD_INPUTS[case]
    item = square_item(tmp_path)
    path = Path(item["assets"][asset]["href"])
    breaks(path)
    with pytest.raises(ItemError) as caught:
        coregister_item(item, make_params())
    error = caught.value
    assert (error.item_id, error.path) == ("square", str(path))
    assert error.reason.startswith(reason)
    assert str(error) == f"square: {path}: {error.reason}"


def test_truncated_file_reason_says_what_failed(tmp_path: Path) -> None:
    item = square_item(tmp_path)
    _truncate(Path(item["assets"]["s2"]["href"]))
    with pytest.raises(ItemError, match=r"unreadable GeoTIFF \(.*IReadBlock failed"):
        coregister_item(item, make_params())


@pytest.mark.parametrize(
    ("change", "path_of", "reason"),
    [
        (
            lambda item: item["assets"]["s1"].update({"msgfm:sensor": "sentinel9"}),
            "s1",
            "sensor 'sentinel9' is not in the registry",
        ),
        (
            lambda item: item["assets"].pop("s2"),
            None,
            "no reference asset 's2' (nor a sensor of that name: the item holds "
            "['sentinel1_grd'] in assets ['s1'])",
        ),
        (
            lambda item: item["assets"]["s2"].update({"msgfm:sensor": "landcover"}),
            "s2",
            "reference asset 's2' is a mask",
        ),
        (
            lambda item: item["assets"]["s1"].update({"bands": [{"name": "HH"}]}),
            "s1",
            "bands ['HH'] are not in the registry's sentinel1_grd",
        ),
        (
            lambda item: item["assets"]["s1"].update({"bands": [{"name": "VV"}]}),
            None,
            "the sentinel1_grd assets hold bands ['VV'], the registry has ['VH', 'VV']",
        ),
    ],
)
def test_bad_item_is_reported(
    tmp_path: Path, change: Callable[[dict], object], path_of: str | None, reason: str
) -> None:
    item = square_item(tmp_path)
    path = item["assets"][path_of]["href"] if path_of else None
    change(item)
    with pytest.raises(ItemError) as caught:
        coregister_item(item, make_params())
    assert (caught.value.item_id, caught.value.path, caught.value.reason) == (
        "square",
        path,
        reason,
    )


def test_file_with_other_bands_than_its_asset_names_is_reported(tmp_path: Path) -> None:
    item = square_item(tmp_path)
    s1 = item["assets"].pop("s1")
    item["assets"]["s1_VV"] = {**s1, "bands": [{"name": "VV"}]}  # the file holds VV and VH
    item["assets"]["s1_VH"] = {**s1, "bands": [{"name": "VH"}]}
    with pytest.raises(ItemError) as caught:
        coregister_item(item, make_params())
    assert (caught.value.path, caught.value.reason) == (
        s1["href"],
        "2 bands, the asset names 1 of the registry's sentinel1_grd",
    )


def test_grid_smaller_than_a_chip_is_reported(tmp_path: Path) -> None:
    item = square_item(tmp_path)
    with pytest.raises(ItemError) as caught:
        coregister_item(item, make_params(chip_px=65))
    assert (caught.value.path, caught.value.reason) == (
        item["assets"]["s2"]["href"],
        "grid of 64x64 px is smaller than one 65 px chip",
    )


# --- pictures ---------------------------------------------------------------------------------

GREEN = (10, 200, 30)


@pytest.mark.parametrize("size", [(120, 80), (80, 120)])
def test_picture_is_centre_cropped_and_resized(tmp_path: Path, size: tuple[int, int]) -> None:
    width, height = size
    pixels = np.zeros((height, width, 3), dtype=np.uint8)
    pixels[:] = (255, 0, 0)  # the margins cropped away
    side = min(size)
    top, left = (height - side) // 2, (width - side) // 2
    pixels[top : top + side, left : left + side] = GREEN
    path = data.write_picture(tmp_path / "picture.png", pixels)
    item = data.stac_item(
        "picture",
        "pictures",
        {"image": data.raster_asset(path, "rgb")},
        datetime=None,
        start_datetime="1990-01-01T00:00:00Z",
    )
    chips = coregister_item(item, make_params(picture_px=48))
    assert list(chips.sensors) == ["rgb"]
    chip = chips.sensors["rgb"]
    assert chip.shape == (1, 3, 48, 48) and chip.dtype == np.uint8
    assert [np.unique(band).tolist() for band in chip[0]] == [[g] for g in GREEN]
    assert chips.crs is None and chips.count == 1
    assert chips.transforms.shape == (1, 6) and np.isnan(chips.transforms).all()
    assert chips.bounds_lonlat.shape == (1, 4) and np.isnan(chips.bounds_lonlat).all()
    assert chips.datetimes == {"rgb": "1990-01-01T00:00:00Z"}
    assert chips.shifts == [] and chips.source == "pictures"


@pytest.mark.parametrize(("bands", "sensor"), [(3, "rgb"), (4, "rgb_nir")])
def test_square_picture_of_the_chip_size_is_the_chip(
    tmp_path: Path, bands: int, sensor: str
) -> None:
    # Neither cropped nor resized (Pillow's resize to the same size is a copy): the pixels.
    pixels = np.random.default_rng(0).integers(0, 256, (48, 48, bands), dtype=np.uint8)
    path = data.write_picture(tmp_path / "square.png", pixels)
    item = data.stac_item("square", "pictures", {"image": data.raster_asset(path, sensor)})
    chip = coregister_item(item, make_params(picture_px=48)).sensors[sensor]
    np.testing.assert_array_equal(chip[0], pixels.transpose(2, 0, 1))
    assert chip.flags.c_contiguous


def test_picture_resize_keeps_detail_of_a_larger_picture(tmp_path: Path) -> None:
    rows, cols = np.indices((128, 128))
    pixels = np.stack([np.where(cols < 64, 0, 255)] * 3, axis=-1).astype(np.uint8)
    path = data.write_picture(tmp_path / "halves.png", pixels)
    item = data.stac_item("halves", "pictures", {"image": data.raster_asset(path, "rgb")})
    chip = coregister_item(item, make_params(picture_px=64)).sensors["rgb"][0, 0]
    assert (chip[:, :28] == 0).all() and (chip[:, 37:] == 255).all()  # beyond the ringing


@pytest.mark.parametrize(
    ("size", "decoded"),
    [
        ((1024, 768), (128, 96)),  # 1/8: the short side still >= 64
        ((300, 200), (150, 100)),  # 1/2
        ((100, 90), (100, 90)),  # less than twice the chip: decoded whole
    ],
)
def test_a_jpeg_is_decoded_at_the_smallest_size_still_larger_than_the_chip(
    tmp_path: Path, size: tuple[int, int], decoded: tuple[int, int]
) -> None:
    # A smooth picture: the reduced decode (DCT scaling), centre-cropped and resized, is
    # within a few DN of the full decode resized with Lanczos.
    width, height = size
    rows, cols = np.indices((height, width))
    pixels = np.stack(
        [cols * 255 // width, rows * 255 // height, (rows + cols) * 127 // (width + height)],
        axis=-1,
    ).astype(np.uint8)
    path = data.write_picture(tmp_path / "picture.jpg", pixels)
    item = data.stac_item("picture", "pictures", {"image": data.raster_asset(path, "rgb")})
    asset = coregister._picture_asset(item)
    assert coregister._read_picture("picture", asset, 10**9, 64).size == decoded
    chip = coregister_item(item, make_params(picture_px=64)).sensors["rgb"][0]
    with Image.open(path) as full:
        side = min(size)
        box = ((width - side) // 2, (height - side) // 2, (width + side) // 2, (height + side) // 2)
        expected = np.asarray(full.crop(box).resize((64, 64), Image.Resampling.LANCZOS))
    difference = np.abs(chip.astype(int) - expected.transpose(2, 0, 1).astype(int))
    assert difference.mean() < 1.5 and difference.max() <= 12
    if decoded == size:
        assert difference.max() == 0


def test_four_band_picture_keeps_its_fourth_band(tmp_path: Path) -> None:
    # A NAIP-like R, G, B, NIR PNG: PIL would take the 4th band for alpha.
    pixels = np.full((64, 64, 4), 200, dtype=np.uint8)
    pixels[:, :32, 3] = 0
    path = data.write_picture(tmp_path / "naip.png", pixels)
    item = data.stac_item("naip", "pictures", {"image": data.raster_asset(path, "rgb_nir")})
    chip = coregister_item(item, make_params(picture_px=32)).sensors["rgb_nir"][0]
    assert (chip[:3] == 200).all()
    assert (chip[3, :, :12] == 0).all() and (chip[3, :, 21:] == 200).all()


def test_palette_picture_is_decoded_to_colours(tmp_path: Path) -> None:
    path = tmp_path / "palette.png"
    image = Image.fromarray(np.full((40, 40, 3), GREEN, dtype=np.uint8)).convert(
        "P", palette=Image.Palette.ADAPTIVE, colors=4
    )
    image.save(path)
    item = data.stac_item("palette", "pictures", {"image": data.raster_asset(path, "rgb")})
    chip = coregister_item(item, make_params(picture_px=20)).sensors["rgb"][0]
    assert [np.unique(band).tolist() for band in chip] == [[g] for g in GREEN]


def _jpeg(path: Path) -> None:
    data.write_picture(path, np.full((64, 64, 3), 100, dtype=np.uint8))


@pytest.mark.parametrize(
    ("write", "sensor", "reason"),
    [
        (lambda p: p.write_bytes(b"\xff\xd8 not really a JPEG"), "rgb", "unreadable picture ("),
        (lambda p: (_jpeg(p), p.write_bytes(p.read_bytes()[:300])), "rgb", "unreadable picture ("),
        (lambda p: None, "rgb", "unreadable picture ("),
        (
            lambda p: data.write_picture(p, np.zeros((64, 64), dtype=np.uint8)),
            "rgb",
            "1 bands, the registry's rgb has 3",
        ),
        (_jpeg, "rgb_nir", "3 bands, the registry's rgb_nir has 4"),
    ],
)
def test_bad_picture_is_reported(
    tmp_path: Path, write: Callable[[Path], object], sensor: str, reason: str
) -> None:
    path = tmp_path / "picture.jpg"
    write(path)
    item = data.stac_item("bad", "pictures", {"image": data.raster_asset(path, sensor)})
    with pytest.raises(ItemError) as caught:
        coregister_item(item, make_params())
    assert (caught.value.item_id, caught.value.path) == ("bad", str(path))
    assert caught.value.reason.startswith(reason)


def test_item_with_two_pictures_is_reported(tmp_path: Path) -> None:
    path = tmp_path / "picture.jpg"
    _jpeg(path)
    item = data.stac_item(
        "two",
        "pictures",
        {"a": data.raster_asset(path, "rgb"), "b": data.raster_asset(path, "rgb")},
    )
    with pytest.raises(ItemError, match=r"2 picture assets \['a', 'b'\], expected 1"):
        coregister_item(item, make_params())


# --- the sample world -------------------------------------------------------------------------

SAMPLE_PARAMS = PipelineParams(
    coregister=CoregisterParams(
        sources={
            "sen12ms": SourceGrid("s2", 256, 256),
            "mdas": SourceGrid("rgb", 256, 128),
            "bigearthnet": SourceGrid("s2_B02", 120, 120),
        },
        max_nodata_share=0.05,
        shift_flag_px=0.5,
    ),
    pictures=PictureParams(chip_px=256),
)


def sample_items(world: Path, collection: str) -> list[dict[str, Any]]:
    """The sample world's items of ``collection``, asset hrefs made absolute."""
    items = []
    for path in sorted((world / collection).glob("*/*.json")):
        item = json.loads(path.read_text())
        for asset in item["assets"].values():
            asset["href"] = str((path.parent / asset["href"]).resolve())
        items.append(item)
    return items


@pytest.fixture(scope="module")
def sample_chips(sample_world: Path) -> dict[str, list[tuple[dict, LocationChips]]]:
    """Every paired sample item with its chips, by collection."""
    return {
        collection: [
            (item, coregister_item(item, SAMPLE_PARAMS))
            for item in sample_items(sample_world, collection)
        ]
        for collection in ("sen12ms", "mdas", "bigearthnet")
    }


def test_sample_pairs_have_tiny_residual_shifts(sample_chips: dict) -> None:
    shifts = [
        shift
        for collection in ("sen12ms", "mdas")
        for _, chips in sample_chips[collection]
        for shift in chips.shifts
    ]
    assert len(shifts) == 6
    assert [s["secondary"] for s in shifts] == ["sentinel1_grd"] * 4 + ["dsm"] * 2
    # The sample world is georeferenced exactly: what remains is the QA's own noise.
    assert max(s["shift_px"] for s in shifts) < 0.3
    assert not any(s["flagged"] for s in shifts)


@pytest.mark.parametrize(
    ("collection", "reference", "per_item", "sensors"),
    [
        ("sen12ms", "s2", 1, {"sentinel2_l2a": (12, np.uint16), "sentinel1_grd": (2, np.float32)}),
        ("mdas", "rgb", 4, {"rgb": (3, np.uint8), "dsm": (1, np.float32)}),
    ],
)
def test_sample_chip_counts_and_grids(
    sample_chips: dict, collection: str, reference: str, per_item: int, sensors: dict
) -> None:
    grid = SAMPLE_PARAMS.coregister.sources[collection]
    for item, chips in sample_chips[collection]:
        rows, cols = item["assets"][reference]["proj:shape"]
        windows = [
            ((rows - grid.chip_px) // grid.stride_px + 1),
            ((cols - grid.chip_px) // grid.stride_px + 1),
        ]
        assert chips.count == windows[0] * windows[1] == per_item
        assert chips.dropped == {"nodata": 0}
        assert {
            name: (array.shape[1], array.dtype) for name, array in chips.sensors.items()
        } == sensors
        assert list(chips.sensors)[0] == item["assets"][reference]["msgfm:sensor"]
        assert chips.crs == item["assets"][reference]["proj:code"]
        ref = Affine(*item["assets"][reference]["proj:transform"])
        offsets = [
            (r * grid.stride_px, c * grid.stride_px)
            for r in range(windows[0])
            for c in range(windows[1])
        ]
        np.testing.assert_array_equal(
            chips.transforms,
            np.array([tuple(ref @ Affine.translation(col, row))[:6] for row, col in offsets]),
        )
        west, south, east, north = item["bbox"]
        assert (chips.bounds_lonlat[:, 0] >= west - 1e-6).all()
        assert (chips.bounds_lonlat[:, 3] <= north + 1e-6).all()
        assert set(chips.datetimes.values()) == {item["properties"]["start_datetime"]}


def test_sample_bigearthnet_bands_stack_on_the_10m_grid(sample_chips: dict) -> None:
    assert sample_chips["bigearthnet"]
    for item, chips in sample_chips["bigearthnet"]:
        assert {name: array.shape for name, array in chips.sensors.items()} == {
            "sentinel2_l2a": (1, 12, 120, 120),
            "sentinel1_grd": (1, 2, 120, 120),
        }
        assert tuple(chips.transforms[0]) == tuple(item["assets"]["s2_B02"]["proj:transform"])
        assert chips.dropped == {"nodata": 0}


def test_sample_pictures_become_one_chip(sample_world: Path) -> None:
    for collection in ("millionaid", "geopile"):
        for item in sample_items(sample_world, collection)[:3]:
            chips = coregister_item(item, SAMPLE_PARAMS)
            assert {k: v.shape for k, v in chips.sensors.items()} == {"rgb": (1, 3, 256, 256)}
            assert chips.crs is None
