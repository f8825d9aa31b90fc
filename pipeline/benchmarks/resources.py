"""What a measured path costs beyond wall time: its cores, peak memory and CPU time.

The cores it may use, the peak resident memory and the CPU time of its whole process tree (this
process and every descendant: dask's scheduler runs in this process, its nannies and workers
are child processes).
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import psutil

SAMPLE_EVERY_S = 0.02  # RSS and CPU time of every process in the tree
REFRESH_TREE_EVERY_S = 0.2  # look for new child processes (a walk of /proc: costlier)


@contextlib.contextmanager
def pinned(cores: int) -> Iterator[set[int]]:
    """Run the block on the first ``cores`` CPUs of this process's affinity.

    So do the threads and child processes started inside it (Linux hands affinity down from the
    thread that starts them): a path that starts threads or processes cannot use more cores
    than it is charged for. Every thread of this process is pinned (affinity is per thread: a
    dask event-loop thread started earlier would otherwise spawn workers with the old one), and
    restored after.
    """
    before = {tid: os.sched_getaffinity(tid) for tid in _threads()}
    available = os.sched_getaffinity(0)
    if cores > len(available):
        raise ValueError(f"{cores} cores asked, {len(available)} available")
    chosen = set(sorted(available)[:cores])
    _set_affinity(dict.fromkeys(_threads(), chosen))
    try:
        yield chosen
    finally:
        _set_affinity({tid: before.get(tid, available) for tid in _threads()})


def _threads() -> list[int]:
    return [int(tid) for tid in os.listdir("/proc/self/task")]


def _set_affinity(cpus: dict[int, set[int]]) -> None:
    for tid, chosen in cpus.items():
        with contextlib.suppress(ProcessLookupError):  # a thread that has just ended
            os.sched_setaffinity(tid, chosen)


class TreeUsage:
    """Peak summed RSS of a process tree while it is watched, and its CPU time."""

    def __init__(self, snapshot: Callable[[], dict[int, float]]) -> None:
        """Initialize a new TreeUsage instance.

        Args:
            snapshot: returns the CPU seconds so far of every process of the tree, by pid.
        """
        self.peak_rss_bytes = 0  # of the tree: the largest sum over its processes at one time
        self.peak_process_rss_bytes = 0  # of its largest process
        self._snapshot = snapshot

    def cpu_seconds(self) -> float:
        """User + system CPU seconds used so far by every process of the tree seen while watched.

        One that has ended counts as last sampled; the difference of two calls is the CPU time
        between them.
        """
        return sum(self._snapshot().values())


@contextlib.contextmanager
def tree_usage() -> Iterator[TreeUsage]:
    """Watch this process tree while the block runs, sampling every :data:`SAMPLE_EVERY_S`.

    Peak RSS is the largest sum of the resident set sizes of all processes of the tree at one
    sample (pages shared between processes are counted in each: an upper bound).
    """
    root = psutil.Process()
    last_cpu: dict[int, float] = {}
    stop = threading.Event()

    def cpu_of(process: psutil.Process) -> float:
        times = process.cpu_times()
        return times.user + times.system

    def family() -> list[psutil.Process]:
        try:
            return [root, *root.children(recursive=True)]
        except psutil.Error:
            return [root]

    def snapshot() -> dict[int, float]:
        times = dict(last_cpu)
        for process in family():
            with contextlib.suppress(psutil.Error):
                times[process.pid] = cpu_of(process)
        return times

    usage = TreeUsage(snapshot)

    def sample() -> None:
        processes = family()
        refreshed = time.monotonic()
        while True:
            rss = 0
            for process in processes:
                try:
                    with process.oneshot():
                        resident = process.memory_info().rss
                        last_cpu[process.pid] = cpu_of(process)
                except psutil.Error:
                    continue
                rss += resident
                usage.peak_process_rss_bytes = max(usage.peak_process_rss_bytes, resident)
            usage.peak_rss_bytes = max(usage.peak_rss_bytes, rss)
            if stop.wait(SAMPLE_EVERY_S):
                return
            if time.monotonic() - refreshed > REFRESH_TREE_EVERY_S:
                processes = family()
                refreshed = time.monotonic()

    thread = threading.Thread(target=sample, name="tree-usage", daemon=True)
    thread.start()
    try:
        yield usage
    finally:
        stop.set()
        thread.join()


@dataclass(frozen=True)
class Timing:
    """Wall and process-tree CPU seconds of one run, and what it returned."""

    seconds: float
    cpu_seconds: float
    value: Any = None


def best_of(
    repeats: int,
    usage: TreeUsage,
    run: Callable[[], Any],
    before: Callable[[], None] = lambda: None,
) -> Timing:
    """Time ``run`` ``repeats`` times (``before`` untimed before each) and keep the fastest.

    As :mod:`timeit` does: the others were slowed by something else on the machine.
    """
    best: Timing | None = None
    for _ in range(max(repeats, 1)):
        before()
        cpu = usage.cpu_seconds()
        start = time.perf_counter()
        value = run()
        timing = Timing(time.perf_counter() - start, usage.cpu_seconds() - cpu, value)
        if best is None or timing.seconds < best.seconds:
            best = timing
    assert best is not None
    return best
