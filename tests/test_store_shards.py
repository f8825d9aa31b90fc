"""Image chunk and shard bytes written without zarr equal the bytes zarr writes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import zarr
from zarr.storage import LocalStore

from catalogs import store_format as fmt
from catalogs.store_shards import (
    chunk_checksum,
    decode_chunk,
    encode_chunk,
    index_nbytes,
    read_shard_index,
    shard_index,
    verify_chunk,
)


@pytest.mark.parametrize("dtype", ["uint8", "uint16", "float32", ">u2"])
def test_shard_files_are_the_bytes_zarr_writes(tmp_path: Path, dtype: str) -> None:
    rng = np.random.default_rng(1)
    chips = rng.integers(0, 3000, size=(7, 3, 16, 16)).astype(dtype)
    array = zarr.create_array(
        LocalStore(tmp_path),
        shape=chips.shape,
        dtype=chips.dtype.name,
        compressors=fmt.IMAGE_CODECS,
        fill_value=0,
        config={"write_empty_chunks": True},
        **fmt.image_layout((3, 16, 16), 4),
    )
    array[:] = chips
    for shard in range(2):  # a full shard, then the last one with 3 of its 4 chunks
        chunks = [encode_chunk(chip) for chip in chips[4 * shard : 4 * shard + 4]]
        ours = b"".join(chunks) + shard_index([len(c) for c in chunks], 4)
        key = array.metadata.encode_chunk_key((shard, 0, 0, 0))
        assert ours == (tmp_path / key).read_bytes()


def test_chunks_decode_to_the_chip() -> None:
    chip = np.random.default_rng(2).normal(size=(2, 8, 8)).astype(np.float32)
    chip[0, 0, 0] = np.nan
    decoded = decode_chunk(encode_chunk(chip), chip.shape, chip.dtype)
    np.testing.assert_array_equal(decoded, chip, strict=True)


def test_index_marks_entries_past_the_last_chunk_and_refuses_too_many_chunks() -> None:
    index = np.frombuffer(shard_index([10, 20], 3)[:-4], dtype="<u8").reshape(3, 2)
    assert index.tolist() == [[0, 10], [10, 20], [2**64 - 1, 2**64 - 1]]
    with pytest.raises(ValueError, match="3 chunks do not fit a shard of 2"):
        shard_index([1, 2, 3], 2)


def test_the_index_reads_back_and_a_damaged_one_is_refused() -> None:
    index = shard_index([10, 20], 3)
    entries = read_shard_index(index, 3)
    assert entries.tolist() == [[0, 10], [10, 20], [2**64 - 1, 2**64 - 1]]
    assert len(index) == index_nbytes(3) == 52
    damaged = bytes([index[0] ^ 1]) + index[1:]
    with pytest.raises(ValueError, match="checksum mismatch"):
        read_shard_index(damaged, 3)
    with pytest.raises(ValueError, match="shard index of 52 bytes, expected 36"):
        read_shard_index(index, 2)


def test_bytes_that_are_not_a_chunk_of_that_shape_are_refused() -> None:
    chip = np.arange(64, dtype=np.uint16).reshape(1, 8, 8)
    with pytest.raises(ValueError, match=r"not a chunk of \(1, 4, 4\) uint16"):
        decode_chunk(encode_chunk(chip), (1, 4, 4), np.uint16)
    with pytest.raises(ValueError, match="chunk checksum mismatch"):
        decode_chunk(bytes(64), (1, 8, 8), np.uint16)


def test_a_flipped_bit_or_another_chips_chunk_fails_the_checksum() -> None:
    chips = np.arange(2 * 64, dtype=np.uint16).reshape(2, 1, 8, 8)
    first, second = (encode_chunk(chip) for chip in chips)
    assert chunk_checksum(first) == int.from_bytes(first[-4:], "little")
    assert bytes(verify_chunk(first, chunk_checksum(first))) == first[:-4]
    for position in (0, len(first) // 2, len(first) - 1):  # header, payload, checksum
        flipped = bytearray(first)
        flipped[position] ^= 0x10
        with pytest.raises(ValueError, match="chunk checksum mismatch"):
            decode_chunk(bytes(flipped), (1, 8, 8), np.uint16)
    with pytest.raises(
        ValueError, match=f"is not the chip's image_crc32c {chunk_checksum(first):#010x}"
    ):
        verify_chunk(second, chunk_checksum(first))
