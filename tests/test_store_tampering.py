"""Silent corruption of a published store is detected: a bit flipped inside a chunk, and two
chunks swapped in a shard index (its checksum recomputed), are named by GeoPile2 with
verification on and by ``python -m pipeline validate`` (sensor, chip and shard file)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import google_crc32c
import numpy as np
import pytest
import torch

from catalogs.store_format import IMAGE
from catalogs.store_shards import index_nbytes
from model.datasets.chip_reader import ChipReadError
from model.datasets.geopile2 import GeoPile2
from pipeline.validate import verify_chips
from tests.pipeline_setup import STORE, busy_reference, pipeline_command, subprocess_env

PER_SHARD = 16  # BUSY_BUILD's chips_per_shard
FIRST_SHARD = Path(IMAGE, "c", "0", "0", "0", "0")
FLIPPED = ("sentinel1_grd", 3)
SWAPPED = ("dsm", 2, 5)
CLEAN_STORES: dict[Path, Path] = {}  # tampered workspace -> the store it was copied from


def _index(data: bytes) -> np.ndarray:
    return np.frombuffer(data[-index_nbytes(PER_SHARD) : -4], dtype="<u8").reshape(PER_SHARD, 2)


def flip_a_bit(store: Path, sensor: str, chip: int) -> Path:
    """One bit of chip ``chip``'s compressed bytes (in the first shard) flipped."""
    shard = store / sensor / FIRST_SHARD
    data = bytearray(shard.read_bytes())
    offset, length = (int(v) for v in _index(bytes(data))[chip])
    data[offset + length // 2] ^= 0x04
    shard.write_bytes(bytes(data))
    return shard


def swap_entries(store: Path, sensor: str, a: int, b: int) -> Path:
    """Index entries ``a`` and ``b`` of the first shard swapped, the index checksum redone."""
    shard = store / sensor / FIRST_SHARD
    data = shard.read_bytes()
    entries = _index(data).copy()
    entries[[a, b]] = entries[[b, a]]
    index = entries.tobytes()
    shard.write_bytes(
        data[: -index_nbytes(PER_SHARD)] + index + google_crc32c.value(index).to_bytes(4, "little")
    )
    return shard


@pytest.fixture(scope="module")
def tampered(tmp_path_factory: pytest.TempPathFactory, sample_world: Path) -> Path:
    """A copy of the busy build's workspace whose store has one chunk with a flipped bit and
    two chunks swapped."""
    reference = busy_reference(tmp_path_factory, sample_world)
    folder = tmp_path_factory.mktemp("tampered") / "build"
    shutil.copytree(reference.folder, folder, symlinks=True)
    flip_a_bit(folder / STORE, *FLIPPED)
    swap_entries(folder / STORE, *SWAPPED)
    CLEAN_STORES[folder] = reference.store
    return folder


def test_geopile2_names_a_flipped_bit_and_swapped_chunks(tampered: Path) -> None:
    store = tampered / STORE
    sensor, chip = FLIPPED
    s1 = GeoPile2(store, sensors=[sensor], split="all", partners=False)
    with pytest.raises(
        ChipReadError,
        match=rf"sample {chip}: {sensor} chip {chip}: "
        rf".*{sensor}/image/c/0/0/0/0: chunk checksum mismatch",
    ):
        s1[chip]
    sensor, a, b = SWAPPED
    dsm = GeoPile2(store, sensors=[sensor], split="all", partners=False)
    for chip in (a, b):
        with pytest.raises(
            ChipReadError,
            match=rf"{sensor} chip {chip}: .*{sensor}/image/c/0/0/0/0"
            r": chunk crc32c 0x[0-9a-f]{8} is not the chip's image_crc32c",
        ):
            dsm[chip]
    # Verification off: the swap goes unnoticed, chip a reads chip b's pixels.
    unchecked = GeoPile2(store, sensors=[sensor], split="all", partners=False, verify=False)
    clean = GeoPile2(CLEAN_STORES[tampered], sensors=[sensor], split="all", partners=False)
    torch.testing.assert_close(unchecked[a]["image"], clean[b]["image"], equal_nan=True)
    assert not torch.equal(clean[a]["image"], clean[b]["image"])


def test_validate_exits_non_zero_naming_sensor_chip_and_shard(tampered: Path) -> None:
    done = subprocess.run(
        pipeline_command("validate"),
        cwd=tampered,
        env=subprocess_env(),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 1, done.stdout + done.stderr
    lines = [line for line in done.stderr.splitlines() if " chip " in line]
    shard = Path(STORE, "{}", FIRST_SHARD)  # as params.yaml names the store
    sensor, a, b = SWAPPED
    for line, chip in zip(lines[:2], (a, b), strict=True):
        assert line.startswith(
            f"{sensor} chip {chip}: {str(shard).format(sensor)}: chunk crc32c"
        ), line
        assert line.endswith("(the chunk belongs to another chip)"), line
    sensor, chip = FLIPPED
    assert lines[2].startswith(
        f"{sensor} chip {chip}: {str(shard).format(sensor)}: chunk checksum mismatch"
    ), done.stderr
    assert len(lines) == 3
    assert "Traceback" not in done.stderr


def test_validate_names_every_chip_of_a_truncated_or_missing_shard(
    tampered: Path, tmp_path: Path
) -> None:
    store = tmp_path / STORE
    shutil.copytree(tampered / STORE, store)
    shard = store / "rgb" / FIRST_SHARD
    shard.write_bytes(shard.read_bytes()[:-7])
    problems = verify_chips(store, "rgb")
    assert problems[:PER_SHARD] == [
        f"rgb chip {chip}: {shard}: shard index checksum mismatch (the file is damaged)"
        for chip in range(PER_SHARD)
    ]
    assert len(problems) == PER_SHARD
    shard.unlink()
    assert verify_chips(store, "rgb")[PER_SHARD - 1] == (
        f"rgb chip {PER_SHARD - 1}: {shard}: No such file or directory"
    )
