"""One build at a time: a second ``python -m pipeline`` on the same work dir or store is
refused while the first runs, the first ends as a clean build, and a killed holder's lock is
free again."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pipeline.build_lock import BuildLockedError, build_lock, lock_paths
from pipeline.params import PipelineParams
from tests.pipeline_setup import (
    BUSY_BUILD,
    STORE,
    busy_reference,
    file_hashes,
    make_workspace,
    pipeline_command,
    run_pipeline,
    subprocess_env,
)

HOLD = """
import sys, time
from pathlib import Path
from pipeline.build_lock import build_lock
from pipeline.params import PipelineParams
with build_lock(PipelineParams(work_dir=Path(sys.argv[1]), store=Path(sys.argv[2]))):
    print("held", flush=True)
    time.sleep(60)
"""


def _wait_for_pid(path: Path, pid: int, timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not (path.exists() and path.read_text().strip() == str(pid)):
        assert time.monotonic() < deadline, f"{path} never named pid {pid}"
        time.sleep(0.01)


def test_a_second_build_is_refused_and_the_first_ends_as_a_clean_build(
    tmp_path_factory: pytest.TempPathFactory, sample_world: Path, tmp_path: Path
) -> None:
    reference = busy_reference(tmp_path_factory, sample_world)
    folder = make_workspace(tmp_path / "build", sample_world, BUSY_BUILD)
    with open(folder / "first.log", "w") as log:
        first = subprocess.Popen(
            pipeline_command("run"),
            cwd=folder,
            env=subprocess_env(),
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        try:
            _wait_for_pid(folder / f"{STORE}.lock", first.pid)
            # Paused while it holds the locks, so the second build surely meets it running
            # (the sample build takes a few seconds, less than a second one's start).
            first.send_signal(signal.SIGSTOP)
            second = run_pipeline(folder, "run")
            assert second.returncode == 1, second.stdout + second.stderr
            assert (
                f"another build (pid {first.pid}) is using this work dir or store" in second.stderr
            ), second.stderr
        finally:
            first.send_signal(signal.SIGCONT)
            assert first.wait(timeout=300) == 0, (folder / "first.log").read_text()
    assert file_hashes(folder / STORE) == file_hashes(reference.store)


def test_a_stage_is_refused_while_the_lock_is_held_and_free_once_its_holder_is_killed(
    tmp_path: Path, sample_world: Path
) -> None:
    folder = make_workspace(tmp_path, sample_world, BUSY_BUILD)
    params = PipelineParams(work_dir=tmp_path / "work", store=tmp_path / STORE)
    assert lock_paths(params) == [tmp_path / f"{STORE}.lock", tmp_path / "work.lock"]
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD, str(params.work_dir), str(params.store)],
        env=subprocess_env(),
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        with (
            pytest.raises(
                BuildLockedError,
                match=rf"{STORE}.lock: another build "
                rf"\(pid {holder.pid}\)",
            ),
            build_lock(params),
        ):
            pass
        refused = run_pipeline(folder, "shard")
        assert (refused.returncode, refused.stderr.strip()) == (
            1,
            (
                f"shard: {STORE}.lock: another build (pid {holder.pid}) is using this "
                "work dir or store; wait for it to end, or stop it, then run again"
            ),
        )
    finally:
        os.kill(holder.pid, signal.SIGKILL)
        holder.wait()
    with build_lock(params):  # the files are still there, the locks are gone with the holder
        assert (tmp_path / "work.lock").read_text() == f"{os.getpid()}\n"
