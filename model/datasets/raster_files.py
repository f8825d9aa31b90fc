"""Reading the downstream datasets' GeoTIFFs: every band of one registry sensor per file."""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import rasterio
import rasterio.errors
import torch
from torch import Tensor

from catalogs.sensors import Sensor


@contextmanager
def opened_raster(path: Path) -> Iterator[rasterio.DatasetReader]:
    """``path`` opened with rasterio, georeferenced or not (some official files carry no CRS).

    Raises:
        ValueError: naming the file, when GDAL cannot open or read it.
    """
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", rasterio.errors.NotGeoreferencedWarning)
            with rasterio.open(path) as src:
                yield src
    except (rasterio.errors.RasterioError, OSError) as error:
        raise ValueError(f"{path}: unreadable raster ({error})") from error


def read_sensor_file(path: Path, sensor: Sensor) -> np.ndarray:
    """The stored values (bands, rows, cols) of a file holding every band of ``sensor``.

    Georeferenced or not: some official files carry no CRS.

    Raises:
        ValueError: naming the file, when it is unreadable or its band count is not the
            sensor's.
    """
    with opened_raster(path) as src:
        values = src.read()
    if values.shape[0] != sensor.num_bands:
        raise ValueError(
            f"{path}: {values.shape[0]} bands, expected {sensor.num_bands} "
            f"({sensor.name}: {', '.join(sensor.band_names)})"
        )
    return values


def read_physical(path: Path, sensor: Sensor) -> Tensor:
    """:func:`read_sensor_file` as float32 in the sensor's physical unit.

    Stored values times its scale plus its offset; nodata values are scaled like any other.
    """
    values = read_sensor_file(path, sensor).astype(np.float32)
    if sensor.scale != 1.0 or sensor.offset != 0.0:
        values = values * np.float32(sensor.scale) + np.float32(sensor.offset)
    return torch.from_numpy(values)
