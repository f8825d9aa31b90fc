"""Seeded value noise that can be evaluated at any coordinate (resolution-independent).

The sample world is a set of functions of map position, so every sensor can look at the same
ground on its own grid. numpy has no coordinate-addressable noise (its generators are
sequential streams), and the small noise libraries on PyPI are not vectorised, so we keep our own:
a 64-bit integer hash of the lattice corner, smooth interpolation, octaves summed (fBm).
"""

from __future__ import annotations

import numpy as np

_MIX1 = np.uint64(0xBF58476D1CE4E5B9)
_MIX2 = np.uint64(0x94D049BB133111EB)
_PRIME_X = np.uint64(0x9E3779B97F4A7C15)
_PRIME_Y = np.uint64(0xC2B2AE3D27D4EB4F)


def hash_uniform(ix: np.ndarray, iy: np.ndarray, seed: int) -> np.ndarray:
    """Uniform [0, 1) value per integer lattice point (ix, iy), fixed by ``seed`` (splitmix64)."""
    with np.errstate(over="ignore"):
        h = (ix.astype(np.int64).view(np.uint64) * _PRIME_X) ^ (
            iy.astype(np.int64).view(np.uint64) * _PRIME_Y
        )
        h ^= np.uint64(seed & 0xFFFFFFFFFFFFFFFF) * _MIX2
        h ^= h >> np.uint64(30)
        h *= _MIX1
        h ^= h >> np.uint64(27)
        h *= _MIX2
        h ^= h >> np.uint64(31)
    return (h >> np.uint64(11)).astype(np.float64) * (1.0 / (1 << 53))


def value_noise(x: np.ndarray, y: np.ndarray, seed: int) -> np.ndarray:
    """Smooth noise in [0, 1) with one feature per unit of (x, y)."""
    x0 = np.floor(x)
    y0 = np.floor(y)
    fx = x - x0
    fy = y - y0
    ix = x0.astype(np.int64)
    iy = y0.astype(np.int64)
    sx = fx * fx * (3.0 - 2.0 * fx)
    sy = fy * fy * (3.0 - 2.0 * fy)
    v00 = hash_uniform(ix, iy, seed)
    v10 = hash_uniform(ix + 1, iy, seed)
    v01 = hash_uniform(ix, iy + 1, seed)
    v11 = hash_uniform(ix + 1, iy + 1, seed)
    top = v00 + sx * (v10 - v00)
    bottom = v01 + sx * (v11 - v01)
    return top + sy * (bottom - top)


def fbm(
    x: np.ndarray,
    y: np.ndarray,
    scale_m: float,
    seed: int,
    octaves: int = 4,
    persistence: float = 0.5,
) -> np.ndarray:
    """Fractal noise in [0, 1]: ``octaves`` of value noise.

    The coarsest with features ``scale_m`` metres across, each finer octave half the size and
    ``persistence`` times the weight.
    """
    total = np.zeros(np.broadcast(x, y).shape)
    weight, norm, frequency = 1.0, 0.0, 1.0 / scale_m
    for octave in range(octaves):
        total += weight * value_noise(x * frequency, y * frequency, seed + 7919 * octave)
        norm += weight
        weight *= persistence
        frequency *= 2.0
    return total / norm


def cell_uniform(x: np.ndarray, y: np.ndarray, cell_m: float, seed: int) -> tuple[np.ndarray, ...]:
    """For points (x, y): the uniform hash of the ``cell_m`` lattice cell each falls in.

    Also the point's offset from that cell's centre (metres). Used to scatter objects (buildings,
    cars).
    """
    cx = np.floor(x / cell_m)
    cy = np.floor(y / cell_m)
    u = hash_uniform(cx.astype(np.int64), cy.astype(np.int64), seed)
    return u, x - (cx + 0.5) * cell_m, y - (cy + 0.5) * cell_m
