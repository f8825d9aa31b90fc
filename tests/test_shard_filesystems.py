"""The shard stage across filesystems and on a full disk: a plain copy where the kernel cannot
copy, the real (write-side) error named, no temporary file left."""

from __future__ import annotations

import errno
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from pipeline.shard import plan_store, staging_path, write_store
from tests.pipeline_setup import file_hashes
from tests.test_shard import make_chip_files

SHM = Path("/dev/shm")  # a tmpfs on Linux: another filesystem than the test's tmp_path


@pytest.fixture
def chips_on_tmpfs(tmp_path: Path) -> Iterator[list[Path]]:
    if not SHM.is_dir() or SHM.stat().st_dev == tmp_path.stat().st_dev:
        pytest.skip("needs /dev/shm on another filesystem than the temporary folder")
    with tempfile.TemporaryDirectory(dir=SHM) as folder:
        yield make_chip_files(Path(folder), locations=3, chips=5, pictures=2)


def test_chips_on_another_filesystem_than_the_store_are_copied(
    tmp_path: Path, chips_on_tmpfs: list[Path]
) -> None:
    local = make_chip_files(tmp_path / "chips", locations=3, chips=5, pictures=2)
    # The kernel's copy_file_range refuses tmpfs -> disk (EXDEV): the copy goes through memory.
    across = write_store(plan_store(chips_on_tmpfs, chips_per_shard=4), tmp_path / "a.zarr")
    same = write_store(plan_store(local, chips_per_shard=4), tmp_path / "b.zarr")
    assert file_hashes(across) == file_hashes(same)


def test_a_full_disk_names_the_shard_file_and_leaves_no_temporary_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    chip_files = make_chip_files(tmp_path / "chips", locations=2, chips=3, pictures=1)
    store = tmp_path / "geopile2.zarr"

    def disk_full(*args: object) -> int:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "copy_file_range", disk_full)
    with pytest.raises(
        OSError, match="cannot write the shard file: No space left on device"
    ) as caught:
        write_store(plan_store(chip_files, chips_per_shard=4), store)
    assert caught.value.errno == errno.ENOSPC
    assert caught.value.filename.startswith(str(staging_path(store) / "rgb" / "image" / "c"))
    assert not [p for p in staging_path(store).rglob("*") if ".tmp" in p.name]
    assert not store.exists()
