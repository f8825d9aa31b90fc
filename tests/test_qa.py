"""Residual shift between co-registered images: known synthetic shifts are measured back."""

from __future__ import annotations

import math

import numpy as np
import pytest

from pipeline.qa import edge_map, residual_shift
from tests.data.coregister import data

SHAPE = (128, 128)
SHIFTS = [(0.0, 0.0), (0.5, 0.0), (0.0, 1.25), (3.0, -3.0), (1.25, 0.5), (-0.3, 2.2)]
TOLERANCE_PX = 0.1


@pytest.fixture(scope="module")
def reference() -> np.ndarray:
    return data.shapes(SHAPE, 0.0, 0.0)


@pytest.mark.parametrize(("dy", "dx"), SHIFTS)
def test_known_shift_is_measured(reference: np.ndarray, dy: float, dx: float) -> None:
    measured = residual_shift(reference, data.shapes(SHAPE, dy, dx))
    assert measured == pytest.approx((dy, dx), abs=TOLERANCE_PX)


@pytest.mark.parametrize(("dy", "dx"), SHIFTS)
def test_shift_between_unlike_sensors(reference: np.ndarray, dy: float, dx: float) -> None:
    # Another sensor: inverted contrast, other scale and offset, noise; the edges are shared.
    rng = np.random.default_rng(1)
    secondary = 5.0 - 40.0 * data.shapes(SHAPE, dy, dx) + rng.normal(0.0, 1.0, SHAPE)
    assert residual_shift(reference, secondary) == pytest.approx((dy, dx), abs=TOLERANCE_PX)


def test_pixels_without_data_are_not_edges(reference: np.ndarray) -> None:
    secondary = data.shapes(SHAPE, 1.25, -0.5)
    secondary[:, :20] = np.nan  # a coverage gap along the left side
    assert residual_shift(reference, secondary) == pytest.approx((1.25, -0.5), abs=TOLERANCE_PX)


def test_sign_convention_feature_moves_down_right() -> None:
    reference = np.zeros((64, 64))
    reference[20:30, 24:34] = 1.0
    secondary = np.zeros((64, 64))
    secondary[23:33, 26:36] = 1.0  # the same square, 3 rows down and 2 columns right
    assert residual_shift(reference, secondary) == pytest.approx((3.0, 2.0), abs=0.05)


def test_odd_shapes() -> None:
    image = data.shapes((97, 131), 0.0, 0.0)
    moved = data.shapes((97, 131), -0.75, 1.5)
    assert residual_shift(image, moved) == pytest.approx((-0.75, 1.5), abs=TOLERANCE_PX)


@pytest.mark.parametrize("blank", [np.full((32, 32), 7.0), np.full((32, 32), np.nan)])
def test_image_without_edges_has_no_shift(blank: np.ndarray) -> None:
    dy, dx = residual_shift(blank, data.shapes((32, 32), 0.0, 0.0))
    assert math.isnan(dy) and math.isnan(dx)


def test_images_of_unlike_shapes_are_refused() -> None:
    with pytest.raises(ValueError, match=r"\(32, 32\) and \(32, 31\)"):
        residual_shift(np.zeros((32, 32)), np.zeros((32, 31)))


def test_edge_map_is_tapered_and_ignores_gap_borders() -> None:
    image = np.zeros((64, 64), dtype=np.float32)
    image[:, 32:] = 1.0  # a vertical edge between columns 31 and 32
    edges = edge_map(image)
    assert edges.dtype == np.float32
    assert edges[0].max() == 0.0 and edges[:, 0].max() == 0.0
    assert np.argmax(edges[32]) in (31, 32)
    image[10:20, 10:20] = np.nan
    gap_edges = edge_map(image)
    assert gap_edges[5:25, 5:25].max() == 0.0
    assert gap_edges[32, 31:33].max() > 0.0
