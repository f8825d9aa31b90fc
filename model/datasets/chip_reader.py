"""Reading GeoPile-2 chips straight from their shard files, one chip at a time.

Why not ``zarr.Array.__getitem__``: a training loader reads single chips in random order, and
zarr-python's single-chunk reads from a sharded array reached about 45 % of the codec's own
decode rate on this kind of machine (it re-reads and re-parses the shard index and goes through
its async machinery for every chip). Here each shard file is mapped into memory and its index
read and checked once; each chip is then one CRC32C check (against the chip's
``image_crc32c``; optional) and one Blosc decode, straight from the mapped pages into a buffer
the caller owns. Mapping instead of ``pread``: no copy of the compressed bytes, which cost
about 0.12 ms of a 1.0 ms Sentinel-2 + Sentinel-1 pair on our test machine. The bytes are
the ones :mod:`catalogs.store_shards` describes (zarr's ``sharding_indexed`` codec), so the
store stays an ordinary Zarr v3 store for every other reader.
"""

from __future__ import annotations

import math
import mmap
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import zarr

from catalogs import store_format as fmt
from catalogs.store_shards import (
    CHECKSUM_NBYTES,
    NOT_STORED,
    chunk_codec,
    read_shard_file_index,
    verify_chunk,
)


class ChipReadError(OSError):
    """A chip could not be read: its shard file is missing or damaged; names both."""


@dataclass(frozen=True)
class ImageLayout:
    """Where and how one sensor's ``image`` chips are stored.

    Attributes:
        sensor: sensor group name.
        folder: the ``image`` array's folder in the store.
        shard_keys: shard file of each shard, relative to ``folder``.
        chips_per_shard: chips (chunks) per shard file.
        chip_count: chips of the sensor.
        chip_shape: (band, y, x) of one chip.
        dtype: stored dtype.
    """

    sensor: str
    folder: Path
    shard_keys: tuple[str, ...]
    chips_per_shard: int
    chip_count: int
    chip_shape: tuple[int, int, int]
    dtype: str

    @classmethod
    def of(cls, store: Path, image: zarr.Array, sensor: str) -> ImageLayout:
        """The layout of ``image``, the ``image`` array of ``sensor`` in ``store``."""
        chips_per_shard = image.shards[0]
        shard_count = math.ceil(image.shape[0] / chips_per_shard)
        keys = tuple(fmt.shard_key(image, shard) for shard in range(shard_count))
        return cls(
            sensor=sensor,
            folder=store / sensor / fmt.IMAGE,
            shard_keys=keys,
            chips_per_shard=chips_per_shard,
            chip_count=image.shape[0],
            chip_shape=tuple(image.shape[1:]),
            dtype=str(image.dtype),
        )


class ShardedChipReader:
    """Reads chips of one sensor: one decode per chip, from the shard file's mapped pages.

    Mapped files and shard indices are cached per process, so a reader copied into
    ``DataLoader`` workers (fork or spawn) maps its own files there. A published store is
    never modified in place; a shard file truncated while it is mapped would end the process
    (SIGBUS) on the next read of its lost pages.
    """

    def __init__(self, layout: ImageLayout, checksums: np.ndarray | None = None) -> None:
        """Initialize a new ShardedChipReader instance.

        Args:
            layout: the sensor's image layout.
            checksums: the sensor's ``image_crc32c``: each chip's chunk is checked against
                it before decoding (a flipped bit, or another chip's chunk, is an error);
                None reads without checking.
        """
        self.layout = layout
        self.checksums = None if checksums is None else checksums.tolist()
        self._pid = -1
        self._maps: dict[int, memoryview] = {}
        self._indices: dict[int, np.ndarray] = {}
        self._buffer: np.ndarray | None = None
        self._codec = chunk_codec(layout.dtype)
        self._stored = np.dtype(layout.dtype).newbyteorder("<")

    def __getstate__(self) -> dict[str, object]:
        """The state to pickle: the layout and checksums only (no mapped files)."""
        return {"layout": self.layout, "checksums": self.checksums}

    def __setstate__(self, state: dict[str, object]) -> None:
        """A fresh reader of the pickled layout and checksums (nothing mapped yet)."""
        checksums = state["checksums"]
        self.__init__(
            state["layout"],  # type: ignore[misc]
            None if checksums is None else np.asarray(checksums, dtype=np.uint32),
        )

    def __del__(self) -> None:
        """Unmap the shard files this process mapped (:meth:`close`)."""
        self.close()

    def close(self) -> None:
        """Unmap the shard files this process mapped.

        A file whose chunk a caller still holds is unmapped once that chunk is freed.
        """
        if self._pid == os.getpid():
            for view in self._maps.values():
                mapped = view.obj
                view.release()
                try:
                    mapped.close()  # type: ignore[union-attr]
                except BufferError:
                    pass
        self._maps, self._indices = {}, {}

    def empty(self, count: int = 1) -> np.ndarray:
        """A buffer for ``count`` chips in the stored dtype (little-endian)."""
        return np.empty((count, *self.layout.chip_shape), dtype=self._stored)

    def buffer(self) -> np.ndarray:
        """This reader's own one-chip buffer (reused: read into it, use the values, repeat)."""
        if self._buffer is None:
            self._buffer = self.empty()[0]
        return self._buffer

    def read(self, chip: int, out: np.ndarray | None = None) -> np.ndarray:
        """Chip ``chip`` in the stored dtype, decoded into ``out`` when given.

        Raises:
            IndexError: when ``chip`` is out of range.
            ChipReadError: naming the sensor, chip and shard file, when the chip is not in
                the store, its checksum differs (when checked) or its bytes do not decode.
        """
        data = self.chunk(chip)
        out = self.empty()[0] if out is None else out
        try:
            compressed = (
                memoryview(data)[:-CHECKSUM_NBYTES]
                if self.checksums is None
                else verify_chunk(data, self.checksums[chip])
            )
            self._codec.decode(compressed, out=out)
        except (ValueError, RuntimeError) as error:  # Blosc: RuntimeError
            raise self._error(chip, error) from error
        return out

    def chunk(self, chip: int) -> memoryview:
        """The compressed bytes of chip ``chip``, as its shard stores them.

        A view of the mapped shard file: no copy.

        Raises:
            IndexError, ChipReadError: as :meth:`read`.
        """
        if not 0 <= chip < self.layout.chip_count:
            raise IndexError(
                f"{self.layout.sensor}: chip {chip} out of range 0..{self.layout.chip_count - 1}"
            )
        shard, slot = divmod(chip, self.layout.chips_per_shard)
        try:
            mapped, index = self._shard(shard)
            offset, length = (int(v) for v in index[slot])
            if offset == NOT_STORED:
                raise ValueError("the chunk is not stored in its shard")
        except (OSError, ValueError) as error:
            raise self._error(chip, error) from error
        return mapped[offset : offset + length]

    def _error(self, chip: int, error: Exception) -> ChipReadError:
        shard = chip // self.layout.chips_per_shard
        path = self.layout.folder / self.layout.shard_keys[shard]
        return ChipReadError(f"{self.layout.sensor} chip {chip}: {path}: {error}")

    def _shard(self, shard: int) -> tuple[memoryview, np.ndarray]:
        if self._pid != os.getpid():  # first use, or a worker process after fork
            self._maps, self._indices, self._pid = {}, {}, os.getpid()
        if shard not in self._maps:
            path = self.layout.folder / self.layout.shard_keys[shard]
            fd = os.open(path, os.O_RDONLY)
            try:  # the index first: it checks the file (an empty one cannot be mapped)
                index = read_shard_file_index(fd, self.layout.chips_per_shard)
                mapped = mmap.mmap(fd, 0, prot=mmap.PROT_READ)
            finally:
                os.close(fd)  # the mapping keeps the file
            self._maps[shard], self._indices[shard] = memoryview(mapped), index
        return self._maps[shard], self._indices[shard]
