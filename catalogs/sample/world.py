"""The latent sample world: land cover, terrain, buildings, trees, cars and clouds.

As functions of map position in one world CRS, from one seed.

Every sensor of the sample renders this same ground (``catalogs.sample.render``), so
cross-sensor reconstruction is learnable and downstream labels are consistent with the imagery.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from catalogs.sample.noise import cell_uniform, fbm, hash_uniform

WORLD_CRS = "EPSG:32632"
# 40 km x 30 km of UTM 32N around 12 deg E, 48.3 deg N: it straddles the UTM 32/33 boundary, so
# sensors delivered in zone 33 see it rotated by about 2 degrees.
WORLD_BOUNDS = (700_000.0, 5_340_000.0, 740_000.0, 5_370_000.0)

LANDCOVER_CLASSES = (
    "water",
    "tree_cover",
    "shrubland",
    "grassland",
    "cropland",
    "built_up",
    "bare",
    "wetland",
)
MATERIALS = (
    "water",
    "tree",
    "shrub",
    "grass",
    "crop",
    "impervious",
    "roof",
    "bare_soil",
    "wetland",
    "car",
)
LC = {name: i for i, name in enumerate(LANDCOVER_CLASSES)}
MAT = {name: i for i, name in enumerate(MATERIALS)}

# Land-cover class -> material where no object (building, tree, car) stands.
_GROUND_MATERIAL = np.array(
    [
        MAT["water"],
        MAT["tree"],
        MAT["shrub"],
        MAT["grass"],
        MAT["crop"],
        MAT["impervious"],
        MAT["bare_soil"],
        MAT["wetland"],
    ],
    dtype=np.uint8,
)

# Field names for the seeds of the independent noise fields.
_FIELDS = {
    "moisture": 1,
    "urban": 2,
    "forest": 3,
    "elevation": 4,
    "rock": 5,
    "canopy": 6,
    "texture": 7,
    "parcel": 8,
    "building": 9,
    "street_tree": 10,
    "car": 11,
    "clouds": 12,
}


@dataclass(frozen=True)
class Ground:
    """What the world holds at a set of points (all arrays share the points' shape)."""

    landcover: np.ndarray  # uint8 index into LANDCOVER_CLASSES
    material: np.ndarray  # uint8 index into MATERIALS
    terrain_m: np.ndarray  # bare-earth elevation above sea level
    object_height_m: np.ndarray  # height of buildings, trees and cars above the terrain
    albedo: np.ndarray  # multiplicative brightness (texture, field phenology, car paint)
    building: np.ndarray  # bool: a building roof


@dataclass(frozen=True)
class World:
    """One procedural world; ``World(seed).ground(x, y)`` is deterministic for a seed."""

    seed: int = 0

    def _seed(self, field: str) -> int:
        return self.seed * 1_000_003 + _FIELDS[field]

    def terrain(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        """Bare-earth elevation in metres."""
        return 450.0 + 400.0 * (fbm(x, y, 6000.0, self._seed("elevation"), octaves=5) - 0.5)

    def landcover(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        """Land-cover class index at each point."""
        moisture = fbm(x, y, 1800.0, self._seed("moisture"))
        urban = fbm(x, y, 3000.0, self._seed("urban"), octaves=3)
        forest = fbm(x, y, 1500.0, self._seed("forest"))
        rock = fbm(x, y, 700.0, self._seed("rock"), octaves=3)
        parcel, _, _ = cell_uniform(x, y, 220.0, self._seed("parcel"))
        classes = np.where(parcel < 0.6, LC["cropland"], LC["grassland"]).astype(np.uint8)
        # Later rules win: the order is the precedence.
        classes[(forest > 0.52) & (forest <= 0.57)] = LC["shrubland"]
        classes[forest > 0.57] = LC["tree_cover"]
        classes[rock > 0.70] = LC["bare"]
        classes[urban > 0.60] = LC["built_up"]
        classes[(moisture > 0.62) & (moisture <= 0.665)] = LC["wetland"]
        classes[moisture > 0.665] = LC["water"]
        return classes

    def _buildings(self, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Rectangular buildings scattered on a 24 m lattice: (roof mask, height in m)."""
        seed = self._seed("building")
        u, dx, dy = cell_uniform(x, y, 24.0, seed)
        cx = np.floor(x / 24.0).astype(np.int64)
        cy = np.floor(y / 24.0).astype(np.int64)
        half_w = 4.0 + 5.0 * hash_uniform(cx, cy, seed + 1)
        half_h = 4.0 + 5.0 * hash_uniform(cx, cy, seed + 2)
        height = 6.0 + 20.0 * hash_uniform(cx, cy, seed + 3)
        inside = (u < 0.75) & (np.abs(dx) < half_w) & (np.abs(dy) < half_h)
        return inside, height

    def _street_trees(self, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Round tree crowns on a 15 m lattice: (crown mask, height in m)."""
        seed = self._seed("street_tree")
        u, dx, dy = cell_uniform(x, y, 15.0, seed)
        radius = 2.5 + 2.0 * u / 0.15
        inside = (u < 0.15) & (dx * dx + dy * dy < radius * radius)
        return inside, 8.0 + 40.0 * u

    def _cars(self, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """4.5 m x 1.9 m cars on a 7 m lattice, either orientation: (car mask, paint albedo)."""
        seed = self._seed("car")
        u, dx, dy = cell_uniform(x, y, 7.0, seed)
        along_x = u < 0.05
        half_x = np.where(along_x, 2.25, 0.95)
        half_y = np.where(along_x, 0.95, 2.25)
        inside = (u < 0.10) & (np.abs(dx) < half_x) & (np.abs(dy) < half_y)
        return inside, 0.4 + 26.0 * u  # u < 0.1 here, so paint albedo spans 0.4 .. 3.0

    def ground(self, x: np.ndarray, y: np.ndarray) -> Ground:
        """Everything a sensor needs at points (x, y) in ``WORLD_CRS`` metres."""
        x = np.asarray(x, dtype=np.float64)
        y = np.asarray(y, dtype=np.float64)
        landcover = self.landcover(x, y)
        material = _GROUND_MATERIAL[landcover]
        height = np.zeros(x.shape)
        texture = fbm(x, y, 80.0, self._seed("texture"), octaves=3)
        albedo = 0.85 + 0.3 * texture
        parcel, _, _ = cell_uniform(x, y, 220.0, self._seed("parcel") + 1)
        farmed = landcover == LC["cropland"]
        albedo[farmed] *= 0.75 + 0.5 * parcel[farmed]

        forest = landcover == LC["tree_cover"]
        canopy = fbm(x, y, 12.0, self._seed("canopy"), octaves=2)
        height[forest] = 12.0 + 16.0 * canopy[forest]

        urban = landcover == LC["built_up"]
        roof, roof_height = self._buildings(x, y)
        building = urban & roof
        crown, crown_height = self._street_trees(x, y)
        street_tree = urban & ~building & crown
        car, paint = self._cars(x, y)
        parked = urban & ~building & ~street_tree & car
        material[building] = MAT["roof"]
        height[building] = roof_height[building]
        material[street_tree] = MAT["tree"]
        height[street_tree] = crown_height[street_tree]
        material[parked] = MAT["car"]
        height[parked] = 1.5
        albedo[parked] = paint[parked]
        return Ground(
            landcover=landcover,
            material=material,
            terrain_m=self.terrain(x, y),
            object_height_m=height,
            albedo=albedo,
            building=building,
        )

    def cloud_opacity(self, x: np.ndarray, y: np.ndarray, scene: int) -> np.ndarray:
        """Cloud opacity in [0, 1] of acquisition ``scene`` (a different sky per scene)."""
        cover = fbm(
            np.asarray(x, float),
            np.asarray(y, float),
            1000.0,
            self._seed("clouds") + 104_729 * scene,
            octaves=5,
        )
        return np.clip((cover - 0.50) / 0.08, 0.0, 1.0)
