"""Where the work runs: a dask.distributed cluster (local worker processes, or an existing one),
or this process alone. Stages only see ``Executor.map_unordered``."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from dask.distributed import Client, LocalCluster, as_completed


@dataclass
class Executor:
    """Runs ``fn`` over inputs on a dask cluster, or in-process when ``client`` is None."""

    client: Client | None = None
    in_flight_per_worker: int = 2

    @property
    def workers(self) -> int:
        if self.client is None:
            return 1
        return max(1, len(self.client.scheduler_info(n_workers=-1)["workers"]))

    def map_unordered(self, fn: Callable[..., Any], inputs: Iterable[Any],
                      *args: Any) -> Iterator[Any]:
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
    """An Executor over ``scheduler`` (address of a running cluster), else a LocalCluster of
    ``workers`` single-threaded worker processes; ``workers == 0`` runs in this process."""
    if scheduler:
        with Client(scheduler) as client:
            yield Executor(client)
    elif workers <= 0:
        yield Executor(None)
    else:
        with LocalCluster(n_workers=workers, threads_per_worker=1, processes=True,
                          dashboard_address=None) as cluster, Client(cluster) as client:
            yield Executor(client)
