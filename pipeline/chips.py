"""Co-registered chips of one location: what the coregister stage writes and the shard stage reads.

One ``LocationChips`` per catalog item, saved as one ``.npz`` file (written to a temporary name
and renamed, so a file that exists is complete). Chip ``k`` of every sensor of a location covers
the same ground (the reference sensor's grid), which is what makes them pairs.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np


@dataclass
class LocationChips:
    """The chips cut from one location (catalog item), all sensors on one reference grid.

    Attributes:
        source: collection id (e.g. ``sen12ms``).
        item_id: the catalog item the chips come from.
        sensors: sensor registry name -> (K, C, H, W) array in the sensor's storage dtype.
        crs: the reference grid's CRS (``EPSG:<code>``), None without georeference.
        transforms: (K, 6) affine coefficients (a, b, c, d, e, f) of each chip, NaN without
            georeference.
        bounds_lonlat: (K, 4) west, south, east, north in degrees, NaN without georeference.
        datetimes: sensor -> ISO 8601 acquisition time (or start of the range), None if unknown.
        dropped: reason -> number of chips dropped at this location (e.g. ``nodata``).
        shifts: QA records of residual shift between the reference and each secondary sensor.
    """

    source: str
    item_id: str
    sensors: dict[str, np.ndarray]
    crs: str | None
    transforms: np.ndarray
    bounds_lonlat: np.ndarray
    datetimes: dict[str, str | None] = field(default_factory=dict)
    dropped: dict[str, int] = field(default_factory=dict)
    shifts: list[dict[str, object]] = field(default_factory=list)

    @property
    def count(self) -> int:
        """Number of chips (K) at this location."""
        return len(self.transforms)

    @property
    def paired(self) -> bool:
        """Whether the location has more than one sensor (its chips are pairs)."""
        return len(self.sensors) > 1

    def save(self, path: Path) -> Path:
        """Write to ``path`` atomically (temporary file in the same folder, then rename)."""
        path.parent.mkdir(parents=True, exist_ok=True)
        header = {"source": self.source, "item_id": self.item_id, "crs": self.crs,
                  "datetimes": self.datetimes, "dropped": self.dropped, "shifts": self.shifts,
                  "sensors": list(self.sensors)}
        arrays = {sensor_array_name(i): array for i, array in enumerate(self.sensors.values())}
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        with open(tmp, "wb") as f:
            np.savez(f, header=np.array(json.dumps(header)), transforms=self.transforms,
                     bounds_lonlat=self.bounds_lonlat, **arrays)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        return path

    @classmethod
    def load_header(cls, path: Path) -> LocationChips:
        """What :meth:`load` reads but the pixels: ``sensors`` holds a (K, 0, 0, 0) array per
        sensor (chip counts without the chips), the rest as saved. For summaries."""
        return cls._read(path, pixels=False)

    @classmethod
    def load(cls, path: Path) -> LocationChips:
        """Read a file written by :meth:`save`."""
        return cls._read(path, pixels=True)

    @classmethod
    def _read(cls, path: Path, pixels: bool) -> LocationChips:
        with np.load(path, allow_pickle=False) as data:
            header = read_header(data)
            transforms = data["transforms"]
            sensors = {name: (data[sensor_array_name(i)] if pixels else
                              np.empty((len(transforms), 0, 0, 0), dtype=np.uint8))
                       for i, name in enumerate(header["sensors"])}
            return cls(source=header["source"], item_id=header["item_id"], sensors=sensors,
                       crs=header["crs"], transforms=transforms,
                       bounds_lonlat=data["bounds_lonlat"], datetimes=header["datetimes"],
                       dropped=header["dropped"], shifts=header["shifts"])


def sensor_array_name(index: int) -> str:
    """The ``.npz`` member holding the chips of the ``index``-th sensor of the header."""
    return f"sensor_{index}"


def read_header(data: np.lib.npyio.NpzFile) -> dict[str, Any]:
    """The JSON header of an open chip file: source, item_id, crs, datetimes, dropped,
    shifts and the sensor names in member order."""
    return json.loads(str(data["header"]))
