"""A build killed (SIGKILL) at random points and resumed ends identical to an uninterrupted one,
and the published store is never seen half-written."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from pipeline.shard import RETIRED_SUFFIX, STAGING_SUFFIX
from tests.pipeline_setup import (
    BUSY_BUILD,
    STORE,
    WORK,
    Build,
    assert_same_images,
    busy_reference,
    chip_counts,
    chip_hashes,
    file_hashes,
    images,
    make_workspace,
    pipeline_command,
    run_ok,
    stage_running,
    stages_done,
    subprocess_env,
)

SEED = 20240617
POLL_S = 0.002
RUN_TIMEOUT_S = 120.0
PROC = Path("/proc")  # Linux: where the processes of a group are counted


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory, sample_world: Path) -> Build:
    return busy_reference(tmp_path_factory, sample_world)


def _chip_files(folder: Path) -> int:
    """Chip files (one per batch of items) the coregister stage has completed (temporary
    files not counted)."""
    chips = folder / WORK / "chips"
    return (
        sum(1 for p in chips.rglob("*.npz") if not p.name.startswith(".")) if chips.exists() else 0
    )


def _shard_files(store: Path) -> int:
    """Complete shard files of every ``image`` array under ``store`` (zarr writes a shard to
    ``<key>.<uuid>.partial`` and renames it, so a name of digits is a whole shard)."""
    return sum(1 for p in store.glob("*/image/c/**/*") if p.is_file() and p.name.isdigit())


@dataclass(frozen=True)
class KillPoint:
    """When to kill a run: ``after_s`` seconds after its start, or as soon as ``stage`` is
    running (every stage before it reported done) and ``count`` of its outputs exist
    (coregister: chip files; shard: shard files in the staging store; validate: none), then
    ``delay_s`` later; the run must then be in one of the stages ``landing`` (default:
    ``stage``)."""

    label: str
    workers: int = 0
    after_s: float | None = None
    stage: str | None = None
    count: int = 0
    delay_s: float = 0.0
    landing: tuple[str, ...] = ()

    @property
    def expected_stages(self) -> tuple[str, ...]:
        return self.landing or ((self.stage,) if self.stage else ())


def _kill_plan(rng: random.Random, reference: Build) -> list[KillPoint]:
    """Eight kills spread over the build, each at a random point of its part: the start
    (discover, fetch), twice in coregister, three times in shard (once with two dask workers,
    once after its last shard file: finalizing and publishing), in validate, and anywhere in
    a rerun of the finished build."""
    batches = _chip_files(reference.folder)
    shards = _shard_files(reference.store)
    ends = reference.stage_end_s
    k1 = rng.randint(1, batches // 2)
    k2 = rng.randint(k1 + 1, batches - 2)
    s1 = rng.randint(1, shards // 2)
    s2 = rng.randint(s1 + 1, shards - 2)
    validate_s = ends["validate"] - ends["shard"]
    # A rerun of a finished build redoes discover, fetch and shard (coregister finds its files).
    rerun_s = ends["fetch"] + ends["shard"] - ends["coregister"]
    return [
        KillPoint("start", after_s=rng.uniform(0.1, ends["fetch"])),
        KillPoint(f"coregister after {k1} of {batches} batches", stage="coregister", count=k1),
        KillPoint(f"coregister after {k2} of {batches} batches", stage="coregister", count=k2),
        KillPoint(f"shard after {s1} of {shards} shards", stage="shard", count=s1),
        KillPoint(
            f"shard after {s2} of {shards} shards, 2 workers", workers=2, stage="shard", count=s2
        ),
        # Finalizing takes ~0.05-0.2 s (fsync): the kill may come just after it.
        KillPoint(
            "shard, finalizing",
            stage="shard",
            count=shards,
            delay_s=rng.uniform(0.0, 0.03),
            landing=("shard", "validate"),
        ),
        KillPoint("validate", stage="validate", delay_s=rng.uniform(0.0, validate_s * 0.5)),
        KillPoint("anywhere in a rerun", after_s=rng.uniform(0.1, rerun_s * 0.8)),
    ]


def _due(point: KillPoint, folder: Path, log: str, elapsed_s: float) -> bool:
    if point.after_s is not None:
        return elapsed_s >= point.after_s
    if stage_running(log) != point.stage:
        return False
    if point.stage == "coregister":
        return _chip_files(folder) >= point.count
    if point.stage == "shard":
        return _shard_files(folder / f"{STORE}{STAGING_SUFFIX}") >= point.count
    return True


def _run_and_kill(folder: Path, point: KillPoint) -> str:
    """Start ``python -m pipeline run`` in its own process group, SIGKILL the whole group at
    ``point``; returns the run's log."""
    log_path = folder / "killed.log"
    with open(log_path, "w") as log:
        process = subprocess.Popen(
            pipeline_command("run", point.workers),
            cwd=folder,
            env=subprocess_env(),
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        start = time.monotonic()
        try:
            while not _due(point, folder, log_path.read_text(), time.monotonic() - start):
                assert process.poll() is None, (
                    f"{point.label}: the run ended before the kill:\n{log_path.read_text()}"
                )
                assert time.monotonic() - start < RUN_TIMEOUT_S, f"{point.label}: timed out"
                time.sleep(POLL_S)
            time.sleep(point.delay_s)
            # --workers 2: a LocalCluster of worker processes (with their nannies) beside the
            # run; --workers 0: the run alone.
            if PROC.is_dir():
                processes = _group_processes(process.pid)
                assert processes >= 3 if point.workers else processes == 1, point.label
        finally:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
    _wait_until_group_is_gone(process.pid)
    return log_path.read_text()


def _group_processes(group: int) -> int:
    """Number of processes in a process group (Linux /proc)."""
    count = 0
    for stat in PROC.glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rpartition(")")[2].split()
        except OSError:  # the process has just ended
            continue
        count += fields[0] != "Z" and int(fields[2]) == group  # state, ppid, pgrp
    return count


def _wait_until_group_is_gone(group: int, timeout_s: float = 20.0) -> None:
    """Every process of the group (dask's worker processes included) has exited."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            os.killpg(group, 0)
        except ProcessLookupError:
            return
        time.sleep(0.02)
    raise AssertionError(f"processes of group {group} still alive {timeout_s} s after SIGKILL")


def test_killed_and_resumed_build_equals_an_uninterrupted_one(
    reference: Build, sample_world: Path, tmp_path: Path
) -> None:
    expected_files = file_hashes(reference.store)
    expected_counts = chip_counts(reference.store)
    folder = make_workspace(tmp_path / "killed", sample_world, BUSY_BUILD)
    store = folder / STORE
    landed = []
    for point in _kill_plan(random.Random(SEED), reference):
        log = _run_and_kill(folder, point)
        stage = stage_running(log)
        landed.append(stage)
        print(f"killed at {point.label}: in {stage}, store published: {store.exists()}")
        if point.expected_stages:
            assert stage in point.expected_stages, f"{point.label}: killed in {stage}\n{log}"
        # What is published is never half-written: no store, or the whole (final) store.
        if store.exists():
            assert chip_counts(store) == expected_counts, point.label
            assert file_hashes(store) == expected_files, point.label
        else:  # only a run that has not published yet, or is publishing again
            assert "shard" not in stages_done(log), point.label
    assert len(landed) >= 5 and {"coregister", "shard", "validate"} <= set(landed)

    run_ok(folder)
    assert file_hashes(store) == expected_files
    assert chip_hashes(store) == chip_hashes(reference.store)
    assert_same_images(images(store), images(reference.store))
    for name in (
        "work/coregister.json",
        "work/qa.csv",
        "work/failures/coregister.json",
        "reports/geopile2.json",
    ):
        assert (folder / name).read_bytes() == (reference.folder / name).read_bytes(), name
    assert not (folder / f"{STORE}{STAGING_SUFFIX}").exists()
    assert not (folder / f"{STORE}{RETIRED_SUFFIX}").exists()
    # One chip file per item, nothing a killed writer left (names carry a hash of the inputs,
    # whose absolute paths differ between the two workspaces).
    assert sorted(
        p.name.split(".")[0] for p in (folder / WORK / "chips").rglob("*") if p.is_file()
    ) == sorted(
        p.name.split(".")[0] for p in (reference.folder / WORK / "chips").rglob("*") if p.is_file()
    )
