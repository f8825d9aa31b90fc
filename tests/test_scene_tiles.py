"""Tiles over a scene and their blending (model/inference/tiles.py)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from model.inference.tiles import CellLayout, CellRows, StripBlender, TileLayout, tile_starts


def test_tile_starts_cover_the_axis_and_shift_the_last_inward() -> None:
    assert tile_starts(500, 192, 144) == [0, 144, 288, 308]
    assert tile_starts(192, 192, 144) == [0]
    assert tile_starts(100, 192, 144) == [0]  # smaller than a tile: one, padded
    assert tile_starts(432, 192, 144) == [0, 144, 240]
    with pytest.raises(ValueError, match="stride 0 px must be in"):
        tile_starts(500, 192, 0)


def test_layout_refuses_a_margin_that_leaves_no_ramp() -> None:
    with pytest.raises(ValueError, match="twice the margin must be below the overlap"):
        TileLayout((500, 500), 192, 48, 24)
    with pytest.raises(ValueError, match="overlap 192 px must be in"):
        TileLayout((500, 500), 192, 192, 0)


@pytest.mark.parametrize("shape", [(500, 437), (192, 600), (100, 90)])
def test_weights_partition_unity_and_cover_every_pixel(shape: tuple[int, int]) -> None:
    layout = TileLayout(shape, 64, 24, 4)
    total = np.zeros(shape)
    for row, col, rows, cols in layout.windows():
        weights = layout.weights(row, col)
        assert weights.shape == (rows, cols)
        total[row : row + rows, col : col + cols] += weights
    assert total.min() > 0
    # Where only regularly spaced tiles reach, the weights sum to exactly 1; the shifted last
    # tiles overlap more, and the blend divides by the sum.
    rows = layout.row_starts[-1] if len(layout.row_starts) > 1 else shape[0]
    cols = layout.col_starts[-1] if len(layout.col_starts) > 1 else shape[1]
    assert np.abs(total[:rows, :cols] - 1.0).max() < 1e-6


def test_no_weight_within_the_margin_of_an_inner_side() -> None:
    layout = TileLayout((300, 300), 64, 24, 5)
    weights = layout.weights(layout.row_starts[1], layout.col_starts[1])  # inner tile
    assert (weights[:5] == 0).all() and (weights[:, :5] == 0).all()
    assert (weights[-5:] == 0).all() and (weights[:, -5:] == 0).all()
    assert weights[24:-24, 24:-24].min() == 1.0
    corner = layout.weights(0, 0)  # the scene's borders keep full weight
    assert corner[0, 0] == 1.0 and (corner[:, -5:] == 0).all()


def conv_net(in_channels: int = 2, out_channels: int = 3) -> nn.Module:
    """Receptive field radius 3 (three 3x3 convolutions), zero padding; seeded weights."""
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(in_channels, 8, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(8, 8, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(8, out_channels, 3, padding=1),
    ).eval()


def _tiled(net: nn.Module, image: torch.Tensor, layout: TileLayout) -> tuple[np.ndarray, int]:
    """Blend the net's predictions of every tile; (blended image, rows handed out)."""
    blender = StripBlender(layout, 3)
    out = np.full((3, *layout.shape), np.nan, dtype=np.float32)
    handed = 0
    for row, col, rows, cols in layout.windows():
        tile = image[:, :, row : row + rows, col : col + cols]
        with torch.no_grad():
            prediction = net(tile)[0].numpy()
        final = blender.add((row, col, rows, cols), prediction, np.ones((rows, cols), dtype=bool))
        if final is not None:
            assert final.row == handed  # rows come in order, each once
            out[:, final.row : final.row + final.values.shape[1]] = final.values
            handed += final.values.shape[1]
    return out, handed


def test_tiled_equals_whole_image_where_the_receptive_field_stays_inside() -> None:
    net = conv_net()
    image = torch.randn(1, 2, 301, 257, generator=torch.Generator().manual_seed(1))
    layout = TileLayout((301, 257), 64, 16, 3)  # margin 3 = the receptive field radius
    tiled, handed = _tiled(net, image, layout)
    assert handed == 301
    with torch.no_grad():
        whole = net(image)[0].numpy()
    assert np.abs(tiled - whole).max() < 1e-5


def test_a_margin_below_the_receptive_field_shows_the_tile_edges() -> None:
    """The test above can fail: without the margin, the tiles' padding leaks in."""
    net = conv_net()
    image = torch.randn(1, 2, 301, 257, generator=torch.Generator().manual_seed(1))
    tiled, _ = _tiled(net, image, TileLayout((301, 257), 64, 16, 0))
    with torch.no_grad():
        whole = net(image)[0].numpy()
    assert np.abs(tiled - whole).max() > 1e-3


def test_constant_predictions_blend_without_seams() -> None:
    layout = TileLayout((700, 650), 192, 48, 12)
    blender = StripBlender(layout, 2)
    values = np.array([0.3, 1234.5], dtype=np.float32)[:, None, None]
    pieces = []
    for window in layout.windows():
        prediction = np.broadcast_to(values, (2, 192, 192))
        final = blender.add(window, prediction, np.ones((192, 192), dtype=bool))
        if final is not None:
            pieces.append(final.values)
    blended = np.concatenate(pieces, axis=1)
    assert blended.shape == (2, 700, 650)
    assert np.abs(blended - values).max() <= 1e-6 * np.abs(values).max()


def test_validity_follows_the_tiles_masks() -> None:
    layout = TileLayout((200, 200), 64, 16, 2)
    blender = StripBlender(layout, 1)
    truth = np.ones((200, 200), dtype=bool)
    truth[50:90, 120:170] = False
    valid = np.zeros((200, 200), dtype=bool)
    for row, col, rows, cols in layout.windows():
        tile_valid = truth[row : row + rows, col : col + cols]
        final = blender.add(
            (row, col, rows, cols), np.zeros((1, rows, cols), np.float32), tile_valid
        )
        if final is not None:
            valid[final.row : final.row + final.valid.shape[0]] = final.valid
    assert (valid == truth).all()


def test_cells_centre_their_tiles_and_come_row_by_row() -> None:
    layout = CellLayout((250, 130), 64, 32)
    assert layout.cells == (8, 5)
    windows = list(layout.windows())
    assert windows[0] == (0, 0, 64, 64)
    assert windows[5 * 3 + 2] == (80, 48, 64, 64)  # cell (3, 2): centre (112, 80)
    assert windows[-1] == (186, 66, 64, 64)  # shifted inward at the far edges
    rows, cols = layout.cell_in_tile(5 * 3 + 2)
    assert (rows.start, rows.stop, cols.start, cols.stop) == (16, 48, 16, 48)
    rows, cols = layout.cell_in_tile(len(layout) - 1)  # cell (7, 4) sticks out of the scene
    assert (rows.start, rows.stop, cols.start, cols.stop) == (38, 64, 62, 64)
    sink = CellRows(layout, 2)
    handed = []
    for index, window in enumerate(windows):
        valid = np.ones((64, 64), dtype=bool)
        if index == 1:
            valid[:] = False
        final = sink.add(window, np.array([index, -index], dtype=np.float32), valid)
        if final is not None:
            handed.append(final)
    assert [f.row for f in handed] == list(range(8))
    assert handed[0].values[0, 0].tolist() == [0, 1, 2, 3, 4]
    assert handed[0].valid[0].tolist() == [True, False, True, True, True]
