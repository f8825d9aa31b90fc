"""The bytes of GeoPile-2 ``image`` chunks and shard files, as zarr's codecs lay them out.

An ``image`` array (see :mod:`catalogs.store_format`) uses zarr v3's ``sharding_indexed``
codec: a shard file holds its chunks' encoded bytes one after another, then an index of
``chips_per_shard`` (offset, length) pairs (little-endian uint64; both all ones for a chunk not
stored) and the CRC32C of that index. Each chunk is one chip, little-endian, compressed by
:data:`~catalogs.store_format.IMAGE_COMPRESSOR` and followed by the CRC32C of the compressed
bytes (little-endian uint32, zarr's ``crc32c`` codec): :func:`verify_chunk` checks a chunk
against it and against the chip's entry of ``image_crc32c``.

Why write these bytes here rather than through ``zarr.Array.__setitem__``: the pipeline
compresses each chip once, where it is cut (its pixels still in the CPU's caches), and the
shard stage then only concatenates compressed bytes. zarr-python takes arrays, not encoded
chunks, and its write path spent about 8x the codec's own time per chunk on this machine.
The bytes are the ones zarr writes (a test compares them), so zarr and xarray read the
store as any other.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import google_crc32c
import numpy as np
from numcodecs import Blosc

from catalogs.store_format import IMAGE_COMPRESSOR, IMAGE_CRC32C

NOT_STORED = np.iinfo(np.uint64).max  # offset and length of a chunk absent from a shard
CHECKSUM_NBYTES = 4  # the CRC32C ending every chunk and every shard index
_SHUFFLES = {"noshuffle": Blosc.NOSHUFFLE, "shuffle": Blosc.SHUFFLE, "bitshuffle": Blosc.BITSHUFFLE}


def chunk_codec(dtype: np.dtype | str) -> Blosc:
    """The Blosc codec zarr runs for ``image`` chunks of ``dtype`` (its type size set).

    The settings are read from the codec's JSON form, which holds plain strings in every zarr
    3 release; its attributes ``cname`` and ``shuffle`` are enums in zarr 3.1, strings in 3.4.

    Args:
        dtype: the chip's data type; its item size is Blosc's type size.

    Returns:
        A numcodecs Blosc codec that encodes chunks byte for byte as zarr does.
    """
    settings = IMAGE_COMPRESSOR.to_dict()["configuration"]
    return Blosc(
        cname=settings["cname"],
        clevel=settings["clevel"],
        shuffle=_SHUFFLES[settings["shuffle"]],
        blocksize=settings["blocksize"],
        typesize=np.dtype(dtype).itemsize,
    )


def encode_chunk(chip: np.ndarray, codec: Blosc | None = None) -> bytes:
    """One chip's chunk bytes, then their CRC32C.

    The bytes are little-endian, C order, compressed (``codec`` from :func:`chunk_codec` for the
    chip's dtype, made here when None).
    """
    little = np.ascontiguousarray(chip, dtype=chip.dtype.newbyteorder("<"))
    compressed = bytes((codec or chunk_codec(chip.dtype)).encode(little))
    return compressed + _checksum_bytes(compressed)


def chunk_checksum(data: bytes) -> int:
    """The CRC32C a chunk carries (its last four bytes): the chip's ``image_crc32c``."""
    return int.from_bytes(data[-CHECKSUM_NBYTES:], "little")


def verify_chunk(data: bytes, expected: int | None = None) -> memoryview:
    """The compressed bytes of a chunk, once its CRC32C is checked.

    The CRC32C, computed over the compressed bytes, must equal the one the chunk carries and
    ``expected`` (the chip's ``image_crc32c``) where given.

    Raises:
        ValueError: saying which checksum differs (the bytes are damaged, or belong to
            another chip).
    """
    if len(data) < CHECKSUM_NBYTES:
        raise ValueError(f"a chunk of {len(data)} bytes has no checksum")
    compressed = memoryview(data)[:-CHECKSUM_NBYTES]
    computed = google_crc32c.value(np.frombuffer(compressed, dtype=np.uint8))
    if computed != chunk_checksum(data):
        raise ValueError(
            f"chunk checksum mismatch: crc32c {computed:#010x} of its bytes, "
            f"{chunk_checksum(data):#010x} stored (the bytes are damaged)"
        )
    if expected is not None and computed != expected:
        raise ValueError(
            f"chunk crc32c {computed:#010x} is not the chip's {IMAGE_CRC32C} "
            f"{expected:#010x} (the chunk belongs to another chip)"
        )
    return compressed


def decode_chunk(
    data: bytes, shape: Sequence[int], dtype: np.dtype | str, codec: Blosc | None = None
) -> np.ndarray:
    """Inverse of :func:`encode_chunk`: a chip of ``shape`` in ``dtype`` (``codec`` as there).

    Raises:
        ValueError: when ``data`` fails :func:`verify_chunk` or is not a Blosc chunk of
            ``shape`` in ``dtype``.
    """
    dtype = np.dtype(dtype)
    little = dtype.newbyteorder("<")
    chip = np.empty(shape, dtype=little)
    compressed = verify_chunk(data)
    try:
        (codec or chunk_codec(dtype)).decode(compressed, out=chip)
    except (RuntimeError, ValueError) as error:  # Blosc reports a bad header or size so
        raise ValueError(f"not a chunk of {tuple(shape)} {dtype}: {error}") from error
    return chip if little == dtype else chip.astype(dtype)


def index_nbytes(chips_per_shard: int) -> int:
    """Size of a shard file's index, its checksum included."""
    return chips_per_shard * 16 + CHECKSUM_NBYTES


def read_shard_index(data: bytes, chips_per_shard: int) -> np.ndarray:
    """Inverse of :func:`shard_index`: (offset, length) per chunk.

    As uint64, shape (``chips_per_shard``, 2), :data:`NOT_STORED` for a chunk absent from the shard.

    Raises:
        ValueError: when ``data`` is not an index of that many chunks or its checksum differs.
    """
    if len(data) != index_nbytes(chips_per_shard):
        raise ValueError(
            f"shard index of {len(data)} bytes, expected "
            f"{index_nbytes(chips_per_shard)} for {chips_per_shard} chunks"
        )
    index = data[:-CHECKSUM_NBYTES]
    if google_crc32c.value(index) != chunk_checksum(data):
        raise ValueError("shard index checksum mismatch (the file is damaged)")
    return np.frombuffer(index, dtype="<u8").reshape(chips_per_shard, 2).astype(np.uint64)


def read_shard_file_index(fd: int, chips_per_shard: int) -> np.ndarray:
    """The index of the open shard file ``fd`` (as :func:`read_shard_index`).

    Checked to point inside the file.

    Raises:
        ValueError: when the file is shorter than its index, the index is damaged or points
            past the chunks.
    """
    size = os.fstat(fd).st_size
    nbytes = index_nbytes(chips_per_shard)
    if size < nbytes:
        raise ValueError(f"{size} bytes, shorter than its index")
    index = read_shard_index(os.pread(fd, nbytes, size - nbytes), chips_per_shard)
    stored = index[:, 0] != NOT_STORED
    if np.any(index[stored].sum(axis=1) > size - nbytes):
        raise ValueError("the index points past the end of the file")
    return index


def shard_index(chunk_lengths: Sequence[int], chips_per_shard: int) -> bytes:
    """The index (with its checksum) ending a shard file.

    The shard file's chunks 0, 1, ... have ``chunk_lengths`` bytes and follow one another from
    offset 0; the shard's remaining entries (past the end of the array, in its last shard) are
    marked not stored.

    Raises:
        ValueError: when there are more chunks than ``chips_per_shard``.
    """
    if len(chunk_lengths) > chips_per_shard:
        raise ValueError(f"{len(chunk_lengths)} chunks do not fit a shard of {chips_per_shard}")
    entries = np.full((chips_per_shard, 2), NOT_STORED, dtype="<u8")
    lengths = np.asarray(chunk_lengths, dtype=np.uint64)
    entries[: len(lengths), 1] = lengths
    entries[: len(lengths), 0] = np.cumsum(lengths) - lengths
    index = entries.tobytes()
    return index + _checksum_bytes(index)


def _checksum_bytes(data: bytes) -> bytes:
    """The CRC32C of ``data`` as zarr's ``crc32c`` codec appends it."""
    return google_crc32c.value(data).to_bytes(CHECKSUM_NBYTES, "little")
