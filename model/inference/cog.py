"""A scene's prediction streamed into a Cloud-Optimized GeoTIFF, rows as they become final.

Rows go into a hidden, tiled, compressed GeoTIFF beside the output; when the scene is done, GDAL's
COG driver copies it into the final layout (overviews, tiles in the COG order) and the file is
renamed onto the output path, so a reader never sees a partial file. GDAL's block cache is capped
(:data:`GDAL_CACHE_MB`), so memory follows the cache and the rows handed in, not the scene. The
same prediction gives the same bytes: nothing of the clock or the machine goes into the file.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType

import numpy as np
import rasterio
from rasterio.shutil import copy as gdal_copy
from rasterio.windows import Window
from rio_cogeo.cogeo import cog_validate

from catalogs.atomic_files import replace_file
from catalogs.grid import Grid

GDAL_CACHE_MB = 64  # GDAL's block cache while writing (its default is 5 % of the RAM)
BLOCK_PX = 512  # tiles of the COG and of the staging file
COMPRESSION = {"COMPRESS": "DEFLATE", "PREDICTOR": "2"}  # integer bands: horizontal differencing


class CogError(RuntimeError):
    """A written file that GDAL's COG validator rejects; names the file and the errors."""


@dataclass(frozen=True)
class OutputBands:
    """What the output COG holds.

    Attributes:
        names: one description per band.
        dtype: the bands' dtype (an integer type).
        nodata: the value of pixels without data, or None for an internal mask instead.
        overview_resampling: GDAL's method for the overviews (``nearest`` for classes).
        colormap: a colour table for band 1 (``{value: (r, g, b, a)}``), for class maps.
        scale: the factor from stored values to the unit of the bands (1 when they are it).
        offset: added after ``scale``.
    """

    names: tuple[str, ...]
    dtype: str
    nodata: float | None
    overview_resampling: str = "average"
    colormap: Mapping[int, tuple[int, int, int, int]] | None = None
    scale: float = 1.0
    offset: float = 0.0
    tags: Mapping[str, str] = field(default_factory=dict)

    @property
    def count(self) -> int:
        """Number of bands."""
        return len(self.names)


def writing_env() -> rasterio.Env:
    """GDAL's settings for :class:`CogWriter`: a capped block cache, masks inside the file."""
    return rasterio.Env(GDAL_CACHEMAX=GDAL_CACHE_MB, GDAL_TIFF_INTERNAL_MASK=True)


class CogWriter:
    """Writes a scene's rows into ``path`` as a COG once :meth:`close` is called.

    Open, write and close it inside :func:`writing_env`. Use as a context manager: leaving it
    with an error removes the staging file and leaves any earlier file at ``path`` as it was.
    """

    def __init__(self, path: Path | str, grid: Grid, bands: OutputBands) -> None:
        """Open the staging GeoTIFF beside ``path``.

        Args:
            path: the COG to write.
            grid: the output's grid (CRS, transform, shape).
            bands: what the bands hold.
        """
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.grid = grid
        self.bands = bands
        self._staging = self.path.with_name(f".{self.path.name}.staging.tif")
        rows, cols = grid.shape
        self._dataset = rasterio.open(
            self._staging,
            "w",
            driver="GTiff",
            width=cols,
            height=rows,
            count=bands.count,
            dtype=bands.dtype,
            crs=grid.crs,
            transform=grid.transform,
            nodata=bands.nodata,
            tiled=True,
            blockxsize=BLOCK_PX,
            blockysize=BLOCK_PX,
            BIGTIFF="IF_SAFER",
            # The staging file is read once: fast compression keeps it small on disk.
            COMPRESS="ZSTD",
            ZSTD_LEVEL=1,
        )
        for band, name in enumerate(bands.names, start=1):
            self._dataset.set_band_description(band, name)
        if bands.colormap is not None:
            self._dataset.write_colormap(1, dict(bands.colormap))
        if bands.scale != 1.0 or bands.offset != 0.0:
            self._dataset.scales = [bands.scale] * bands.count
            self._dataset.offsets = [bands.offset] * bands.count
        if bands.tags:
            self._dataset.update_tags(**bands.tags)

    def write(self, row: int, values: np.ndarray, valid: np.ndarray) -> None:
        """Write final rows from ``row`` on.

        Args:
            row: the first row of the output.
            values: (bands, rows, cols) in the output's dtype; where ``valid`` is False they
                are set to the nodata value (when there is one).
            valid: (rows, cols) bool, True where the output has data.
        """
        window = Window(0, row, values.shape[2], values.shape[1])
        if self.bands.nodata is not None:
            values = np.where(valid, values, np.asarray(self.bands.nodata, values.dtype))
        self._dataset.write(values, window=window)
        if self.bands.nodata is None:
            self._dataset.write_mask(valid, window=window)

    def close(self) -> Path:
        """Copy the staging file into the COG at ``path`` and check it.

        Returns:
            ``path``.

        Raises:
            CogError: if GDAL's COG validator rejects the file (it is then not kept).
        """
        self._dataset.close()
        written = self.path.with_name(f".{self.path.name}.cog.tif")
        try:
            gdal_copy(
                self._staging,
                written,
                driver="COG",
                BLOCKSIZE=BLOCK_PX,
                OVERVIEWS="AUTO",
                OVERVIEW_RESAMPLING=self.bands.overview_resampling,
                BIGTIFF="IF_SAFER",
                **COMPRESSION,
            )
            valid, errors, _ = cog_validate(written, quiet=True)
            if not valid:
                raise CogError(f"{self.path}: not a valid COG: {'; '.join(errors)}")
            replace_file(written, self.path)
        finally:
            written.unlink(missing_ok=True)
            self._staging.unlink(missing_ok=True)
        return self.path

    def abort(self) -> None:
        """Drop what was written; ``path`` is left as it was."""
        if not self._dataset.closed:
            self._dataset.close()
        self._staging.unlink(missing_ok=True)

    def __enter__(self) -> CogWriter:
        """Return the writer."""
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        """Abort on an error (:meth:`close` is the caller's on success)."""
        if kind is not None:
            self.abort()
