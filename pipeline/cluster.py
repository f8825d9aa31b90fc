"""Where the work runs: a dask.distributed cluster, or this process alone.

The cluster is local worker processes, or an existing one. Stages only see
``Executor.map_unordered``.

Worker processes get :data:`ALLOCATOR_ENVIRON`: glibc keeps the memory a task frees and hands
it to the next task, where by default (and with dask's ``MALLOC_TRIM_THRESHOLD_=65536``) every
scene-sized array is a fresh ``mmap`` returned to the kernel when freed, so each task pays the
page faults of its whole working set again. On the bench's virtual machines (memory the guest
frees goes back to the host within seconds, and is slow to touch again) that cost more than
compressing the chips: ``python -m pipeline.benchmarks`` built 12.5 chips/s on 1 worker with dask's
setting and 20 with this one, 22 and 37 on 2 workers. A worker keeps its largest task's
working set, not more: the memory it holds does not grow with the number of items.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import dask
from dask.distributed import Client, LocalCluster, as_completed

# Set before a worker process starts (glibc reads them once): allocations up to 1 GiB come from
# the heap (not one mmap each), one arena for all threads (a task thread's large arrays would
# otherwise be mmapped outside the 64 MiB thread heaps), and freed memory kept up to 1 GiB.
ALLOCATOR_ENVIRON = {
    "MALLOC_MMAP_THRESHOLD_": str(1 << 30),
    "MALLOC_TRIM_THRESHOLD_": str(1 << 30),
    "MALLOC_ARENA_MAX": "1",
}
# The same through mallopt(3), for a process already running (glibc caps the mmap threshold
# it takes at run time at 32 MiB): option number -> value.
_MALLOPT = {-1: 1 << 30, -3: 32 << 20, -8: 1}  # M_TRIM_THRESHOLD, M_MMAP_THRESHOLD, M_ARENA_MAX


def keep_freed_memory() -> bool:
    """Give this process the allocator behaviour worker processes get.

    Worker processes get it from :data:`ALLOCATOR_ENVIRON`; this process gets it as far as glibc
    allows at run time (arrays above 32 MiB stay mmapped). Returns False, changing nothing, where
    the C library is not glibc.
    """
    try:
        mallopt = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").mallopt
    except (OSError, AttributeError):
        return False
    return all(mallopt(option, value) == 1 for option, value in _MALLOPT.items())


@dataclass
class Executor:
    """Runs ``fn`` over inputs on a dask cluster, or in-process when ``client`` is None."""

    client: Client | None = None
    in_flight_per_worker: int = 2

    @property
    def workers(self) -> int:
        """The number of worker processes of the cluster (at least 1); 1 in-process."""
        if self.client is None:
            return 1
        return max(1, len(self.client.scheduler_info(n_workers=-1)["workers"]))

    def map_unordered(
        self, fn: Callable[..., Any], inputs: Iterable[Any], *args: Any
    ) -> Iterator[Any]:
        """Yield ``fn(x, *args)`` for every ``x`` as each finishes.

        At most ``in_flight_per_worker`` tasks per worker are submitted at a time, so memory is
        bounded by the work in flight, not by the number of inputs. Results should be small
        (paths, statistics): the data itself goes to files.
        """
        if self.client is None:
            for x in inputs:
                yield fn(x, *args)
            return
        pending = iter(inputs)
        limit = self.in_flight_per_worker * self.workers
        futures = as_completed()
        submitted = 0
        for x in pending:
            futures.add(self.client.submit(fn, x, *args, pure=False))
            submitted += 1
            if submitted >= limit:
                break
        for future in futures:
            yield future.result()
            future.release()
            for x in pending:
                futures.add(self.client.submit(fn, x, *args, pure=False))
                break


@contextlib.contextmanager
def executor(workers: int, scheduler: str | None = None) -> Iterator[Executor]:
    """An Executor over ``scheduler`` (address of a running cluster), else a LocalCluster.

    The LocalCluster has ``workers`` single-threaded worker processes; ``workers == 0`` runs in this
    process (with :func:`keep_freed_memory`).
    """
    if scheduler:
        with Client(scheduler) as client:
            yield Executor(client)
    elif workers <= 0:
        keep_freed_memory()
        yield Executor(None)
    else:
        environ = {**dask.config.get("distributed.nanny.pre-spawn-environ"), **ALLOCATOR_ENVIRON}
        with (
            dask.config.set({"distributed.nanny.pre-spawn-environ": environ}),
            LocalCluster(
                n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=None
            ) as cluster,
            Client(cluster) as client,
        ):
            yield Executor(client)
