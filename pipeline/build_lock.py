"""One build at a time: a command holds an exclusive lock on its work dir and store.

A command of ``python -m pipeline`` holds the lock on its work dir and on its store for as long as
it runs; a second command on either is refused at once, naming the lock file and the process holding
it.

The locks are ``flock`` locks on the files ``<work_dir>.lock`` and ``<store>.lock``, beside the
folders they guard (not inside: the store is replaced by a rename when it is published, and DVC
tracks both). The kernel releases a lock when its holder's file descriptor closes, however the
process ends (``kill -9`` included), so a lock file left behind never blocks the next build;
the descriptor is not inherited by the processes the build starts (dask's worker processes
are spawned), so only the build itself holds the lock. The files hold the holder's pid, for the
message; they are never removed (removing one while another process opens it would let two
builds lock two different files).
"""

from __future__ import annotations

import fcntl
import os
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

from pipeline.params import PipelineParams

LOCK_SUFFIX = ".lock"


class BuildLockedError(RuntimeError):
    """Another build holds the lock of the work dir or the store; names the file and its pid."""


def lock_paths(params: PipelineParams) -> list[Path]:
    """The lock files of a build, in the order they are taken."""
    return sorted(
        {folder.with_name(folder.name + LOCK_SUFFIX) for folder in (params.work_dir, params.store)}
    )


@contextmanager
def build_lock(params: PipelineParams) -> Iterator[None]:
    """Hold the locks of ``params``' work dir and store for the block.

    Raises:
        BuildLockedError: when another process holds one of them.
    """
    with ExitStack() as held:
        for path in lock_paths(params):
            held.enter_context(_exclusive(path))
        yield


@contextmanager
def _exclusive(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode("ascii", "replace").strip() or "unknown"
            raise BuildLockedError(
                f"{path}: another build (pid {holder}) is using this work dir or store; "
                "wait for it to end, or stop it, then run again"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        yield
    finally:
        os.close(fd)
