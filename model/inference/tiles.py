"""Overlapping tiles over a scene and their blending, row of tiles by row of tiles.

A scene of ``rows x cols`` reference pixels is cut into ``tile_px`` windows every
``tile_px - overlap_px`` pixels; the last row and column of tiles are shifted inward to end at the
scene's border, and a scene smaller than one tile is one tile (its inputs padded, its output
cropped). Each tile's prediction is weighted by :func:`tile_weights`: 1 inside, a raised-cosine
ramp across the overlap with a neighbour, and 0 within ``margin_px`` of a side that has a
neighbour (so a pixel's output never comes from near a tile's inner edge, where the network sees
padding instead of the scene); sides on the scene's border keep full weight. Weights are
normalised where tiles overlap, so a constant prediction stays exactly constant: no seams.

:class:`StripBlender` holds one row of tiles (``tile_px`` rows of the scene) at a time: when a
row of tiles is done, the scene rows no later tile touches are final and handed out, and the
rest moves up. Memory follows ``tile_px x cols``, never the scene's height.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cached_property

import numpy as np


def tile_starts(length: int, tile_px: int, stride_px: int) -> list[int]:
    """Where tiles start along one axis of ``length`` pixels.

    Every ``stride_px`` from 0; the last one shifted to end at the border (no start repeated);
    ``[0]`` when the axis is shorter than a tile.

    Raises:
        ValueError: if ``stride_px`` is not in [1, ``tile_px``].
    """
    if not 1 <= stride_px <= tile_px:
        raise ValueError(f"stride {stride_px} px must be in [1, {tile_px}] (the tile size)")
    if length <= tile_px:
        return [0]
    starts = list(range(0, length - tile_px, stride_px))
    return [*starts, length - tile_px]


@dataclass(frozen=True)
class TileLayout:
    """The tiles of a scene: ``tile_px`` windows overlapping by at least ``overlap_px``.

    Attributes:
        shape: the scene's (rows, cols) on the reference grid.
        tile_px: side of a tile (the network's input).
        overlap_px: least overlap of neighbouring tiles.
        margin_px: pixels next to a tile's inner side that get no weight.

    Raises:
        ValueError: for an empty scene, an overlap outside [0, tile_px), or a margin that leaves
            no ramp (``2 * margin_px`` must be below ``overlap_px``, or both 0).
    """

    shape: tuple[int, int]
    tile_px: int
    overlap_px: int
    margin_px: int

    def __post_init__(self) -> None:
        """Check the arguments."""
        if min(self.shape) < 1:
            raise ValueError(f"a scene of {self.shape[0]} x {self.shape[1]} px has no pixel")
        if not 0 <= self.overlap_px < self.tile_px:
            raise ValueError(f"overlap {self.overlap_px} px must be in [0, {self.tile_px})")
        if self.margin_px < 0 or (self.overlap_px and 2 * self.margin_px >= self.overlap_px):
            raise ValueError(
                f"margin {self.margin_px} px: twice the margin must be below the overlap "
                f"({self.overlap_px} px), so that the weights can ramp"
            )

    @cached_property
    def row_starts(self) -> list[int]:
        """First scene row of each row of tiles."""
        return tile_starts(self.shape[0], self.tile_px, self.tile_px - self.overlap_px)

    @cached_property
    def col_starts(self) -> list[int]:
        """First scene column of each column of tiles."""
        return tile_starts(self.shape[1], self.tile_px, self.tile_px - self.overlap_px)

    def __len__(self) -> int:
        """Number of tiles."""
        return len(self.row_starts) * len(self.col_starts)

    def windows(self) -> Iterator[tuple[int, int, int, int]]:
        """``(row, col, rows, cols)`` of each tile in the scene, row-major, clipped to it."""
        for row in self.row_starts:
            for col in self.col_starts:
                yield (
                    row,
                    col,
                    min(self.tile_px, self.shape[0] - row),
                    min(self.tile_px, self.shape[1] - col),
                )

    def weights(self, row: int, col: int) -> np.ndarray:
        """The (rows, cols) blending weights of the tile at ``(row, col)``, clipped to the scene."""
        along_rows, along_cols = (
            _axis_weights(
                min(self.tile_px, length - start),
                start > 0,
                start < starts[-1],
                self.overlap_px,
                self.margin_px,
            )
            for start, starts, length in (
                (row, self.row_starts, self.shape[0]),
                (col, self.col_starts, self.shape[1]),
            )
        )
        return np.outer(along_rows, along_cols).astype(np.float32)


def _axis_weights(
    length: int, before: bool, after: bool, overlap_px: int, margin_px: int
) -> np.ndarray:
    """Weights along one axis of a tile: ramps on the sides that have a neighbour."""
    weights = np.ones(length, dtype=np.float64)
    if overlap_px == 0:
        return weights
    ramp_px = overlap_px - 2 * margin_px
    # Raised cosine from 0 (first pixel after the margin, excluded) to 1, at pixel centres.
    ramp = np.sin(0.5 * math.pi * (np.arange(ramp_px) + 0.5) / ramp_px) ** 2
    rising = np.concatenate([np.zeros(margin_px), ramp])
    if before:
        weights[: len(rising)] = rising
    if after:
        weights[length - len(rising) :] = np.minimum(weights[length - len(rising) :], rising[::-1])
    return weights


@dataclass
class FinalRows:
    """Rows of the scene no later tile touches: the blended values and where they hold data.

    Attributes:
        row: the first scene row.
        values: (channels, rows, cols) float32, the weighted mean of the tiles' predictions.
        valid: (rows, cols) bool, False where the inputs lack data.
    """

    row: int
    values: np.ndarray
    valid: np.ndarray


class StripBlender:
    """Blends tile predictions of one row of tiles at a time and hands out final rows.

    Tiles must come in the order of :meth:`TileLayout.windows`.
    """

    def __init__(self, layout: TileLayout, channels: int) -> None:
        """Allocate the strip: ``channels + 2`` float32 planes of ``tile_px x cols``.

        Args:
            layout: the scene's tiles.
            channels: channels of each prediction.
        """
        self.layout = layout
        cols = layout.shape[1]
        height = min(layout.tile_px, layout.shape[0])
        self._sums = np.zeros((channels, height, cols), dtype=np.float32)
        self._weights = np.zeros((height, cols), dtype=np.float32)
        self._valid = np.zeros((height, cols), dtype=np.float32)
        self._row_starts = layout.row_starts
        self._top = 0  # scene row of the strip's first row
        self._tiles_left = len(layout.col_starts)
        self._row_index = 0

    def add(
        self, window: tuple[int, int, int, int], prediction: np.ndarray, valid: np.ndarray
    ) -> FinalRows | None:
        """Add one tile's prediction; the rows it makes final, when it ends a row of tiles.

        Args:
            window: the tile's ``(row, col, rows, cols)`` (from :meth:`TileLayout.windows`).
            prediction: (channels, >= rows, >= cols) prediction (padding beyond is cropped).
            valid: (>= rows, >= cols) bool, True where every input sensor has data.

        Returns:
            The final rows, or None while the row of tiles goes on.
        """
        row, col, rows, cols = window
        weights = self.layout.weights(row, col)
        top = row - self._top
        target = (slice(top, top + rows), slice(col, col + cols))
        self._sums[(slice(None), *target)] += prediction[:, :rows, :cols] * weights
        self._weights[target] += weights
        self._valid[target] += valid[:rows, :cols] * weights
        self._tiles_left -= 1
        if self._tiles_left:
            return None
        return self._finish_row()

    def _finish_row(self) -> FinalRows:
        self._row_index += 1
        last = self._row_index == len(self._row_starts)
        end = self.layout.shape[0] if last else self._row_starts[self._row_index]
        count = end - self._top
        weights = self._weights[:count]
        values = self._sums[:, :count] / weights
        valid = self._valid[:count] >= 0.5 * weights
        final = FinalRows(self._top, values, valid)
        if not last:  # the overlap moves to the strip's top; the rest starts empty
            for plane in (*self._sums, self._weights, self._valid):
                plane[: plane.shape[0] - count] = plane[count:].copy()
                plane[plane.shape[0] - count :] = 0.0
            self._top = end
            self._tiles_left = len(self.layout.col_starts)
        return final


@dataclass(frozen=True)
class CellLayout:
    """One tile per cell of ``cell_px`` pixels: a coarse map from a per-tile prediction.

    The tile of a cell is centred on it, shifted inward to stay in the scene (a scene smaller
    than a tile has one window for every cell). Cells at the scene's right and bottom edges may
    stick out of it.

    Attributes:
        shape: the scene's (rows, cols) on the reference grid.
        tile_px: side of a tile.
        cell_px: side of a cell, in reference pixels.

    Raises:
        ValueError: for an empty scene or a cell outside [1, tile_px].
    """

    shape: tuple[int, int]
    tile_px: int
    cell_px: int

    def __post_init__(self) -> None:
        """Check the arguments."""
        if min(self.shape) < 1:
            raise ValueError(f"a scene of {self.shape[0]} x {self.shape[1]} px has no pixel")
        if not 1 <= self.cell_px <= self.tile_px:
            raise ValueError(f"cell {self.cell_px} px must be in [1, {self.tile_px}]")

    @property
    def cells(self) -> tuple[int, int]:
        """(rows, cols) of cells."""
        return (math.ceil(self.shape[0] / self.cell_px), math.ceil(self.shape[1] / self.cell_px))

    def __len__(self) -> int:
        """Number of tiles (one per cell)."""
        return self.cells[0] * self.cells[1]

    def _start(self, cell: int, length: int) -> int:
        centre = cell * self.cell_px + self.cell_px // 2
        return min(max(centre - self.tile_px // 2, 0), max(length - self.tile_px, 0))

    def windows(self) -> Iterator[tuple[int, int, int, int]]:
        """``(row, col, rows, cols)`` of each cell's tile, row-major, clipped to the scene."""
        for i in range(self.cells[0]):
            row = self._start(i, self.shape[0])
            for j in range(self.cells[1]):
                col = self._start(j, self.shape[1])
                yield (
                    row,
                    col,
                    min(self.tile_px, self.shape[0] - row),
                    min(self.tile_px, self.shape[1] - col),
                )

    def cell_in_tile(self, index: int) -> tuple[slice, slice]:
        """Where cell ``index`` (row-major) lies in its tile, clipped to the scene."""
        i, j = divmod(index, self.cells[1])
        row, col = self._start(i, self.shape[0]), self._start(j, self.shape[1])
        top, left = i * self.cell_px, j * self.cell_px
        return (
            slice(top - row, min(top + self.cell_px, self.shape[0]) - row),
            slice(left - col, min(left + self.cell_px, self.shape[1]) - col),
        )


class CellRows:
    """Collects one prediction per cell and hands out each row of cells once it is complete.

    A cell holds data when at least half of its pixels (inside the scene) do.
    """

    def __init__(self, layout: CellLayout, channels: int) -> None:
        """Allocate one row of cells.

        Args:
            layout: the scene's cells.
            channels: channels of each prediction.
        """
        self.layout = layout
        self._values = np.zeros((channels, 1, layout.cells[1]), dtype=np.float32)
        self._valid = np.zeros((1, layout.cells[1]), dtype=bool)
        self._index = 0

    def add(
        self, window: tuple[int, int, int, int], prediction: np.ndarray, valid: np.ndarray
    ) -> FinalRows | None:
        """Add the next cell's prediction; its row of cells when it is the row's last.

        Args:
            window: the cell's tile (unused: cells come in row-major order).
            prediction: (channels,) the tile's prediction.
            valid: (tile_px, tile_px) bool, True where every input sensor has data.

        Returns:
            The row of cells, or None while the row goes on.
        """
        row, col = divmod(self._index, self.layout.cells[1])
        self._values[:, 0, col] = prediction
        self._valid[0, col] = valid[self.layout.cell_in_tile(self._index)].mean() >= 0.5
        self._index += 1
        if col < self.layout.cells[1] - 1:
            return None
        return FinalRows(row, self._values.copy(), self._valid.copy())
