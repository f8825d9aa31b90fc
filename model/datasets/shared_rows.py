"""Buffers for decoded chips, recycled by each process once no process uses them.

In ``DataLoader`` workers, the buffers are in shared memory.

Why: fresh memory for every batch costs more than decoding into it. The kernel allocates,
zeroes and maps every page anew: on our 2-core test machine 27 ms to get and fill one 25 MB
batch of Sentinel-2 rows in shared memory (as a worker hands a batch to the main process),
about 15 ms from malloc in the main process (glibc maps blocks that large afresh), against
1.7 ms to refill a buffer already mapped; this made each worker about three times as slow
per sample as the main process. So each process keeps the buffers it made (up to
:data:`MAX_BUFFERS`; past them it makes fresh ones) and reuses one when no process uses it:

* a process sees its own uses in the buffer's reference count;
* in a worker, the main process rebuilds the buffer while unpickling the batch: the worker
  pickles a pooled buffer with a flag byte in shared memory, set while the batch is pickled,
  and the main process clears it when it frees its copy of the buffer (a finalizer attached
  as the buffer is unpickled), whoever the batch went to (collate, ``pin_memory``, the user);
* a buffer's file descriptor and the flags go to the main process once, not with every batch
  (the main process keeps them and says so in the flags): torch passes descriptors through
  an authenticated socket, ~1.5 ms of the main process's time apiece on the test machine.
  With another sharing strategy than ``file_descriptor``, workers do not pool.

The pool holds as many buffers as were in use at once (a caching allocator's trade-off). A
batch forwarded from the main process to a third process must be cloned first: the worker
may refill its buffer once the main process has freed it.
"""

from __future__ import annotations

import math
import os
import secrets
import weakref
from collections.abc import Callable
from multiprocessing.reduction import DupFd, ForkingPickler
from typing import Any

import torch
import torch.multiprocessing
from torch.multiprocessing.reductions import reduce_storage
from torch.utils.data import get_worker_info

MAX_BUFFERS = 32  # pooled buffers per process; past them a batch gets a fresh one, as before
# Storages up to this size that are not in shared memory yet (a batch's indices, transforms,
# bounds) go by value in the pickle: torch would move each into a new shared-memory file
# and pass its descriptor through a socket.
BY_VALUE_NBYTES = 1 << 16
HELD, KEPT = 0, 1  # flag columns: the main process holds the buffer; keeps its descriptor
# (the flags' last row: KEPT when the main process keeps the flags)


def empty_rows(shape: tuple[int, ...], dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """A tensor of ``shape`` and ``dtype`` for decoded chips.

    On a buffer of this process that no process uses any more; in a ``DataLoader`` worker in shared
    memory (so handing the batch to the main process moves no bytes).
    """
    pool = _process_pool()
    nbytes = math.prod(shape) * dtype.itemsize
    storage = pool.take(nbytes) if pool else torch.UntypedStorage._new_shared(nbytes)
    return torch.empty(0, dtype=dtype).set_(storage, 0, shape)


class _Pool:
    """This process's buffers; in a worker, shared, with their flags (see the module)."""

    def __init__(self, shared: bool) -> None:
        self.pid, self.shared = os.getpid(), shared
        self.token = f"{self.pid}-{secrets.token_hex(8)}"
        self.buffers: list[torch.UntypedStorage] = []
        self.slot_of: dict[int, int] = {}  # data pointer -> slot
        self.flags = torch.zeros((MAX_BUFFERS + 1, 2), dtype=torch.uint8)
        if shared:
            self.flags.share_memory_()
            # Overrides torch's reducer in this worker only; it pickles other storages.
            ForkingPickler.register(torch.UntypedStorage, self.reduce)
        self.flag_values = self.flags.numpy()

    def take(self, nbytes: int) -> torch.UntypedStorage:
        """The smallest free buffer of at least ``nbytes``, else a new one.

        A new one is pooled while fewer than :data:`MAX_BUFFERS` when the pool was made.
        """
        free = [
            (buffer.nbytes(), slot)
            for slot, buffer in enumerate(self.buffers)
            if buffer.nbytes() >= nbytes
            and not self.flag_values[slot, HELD]
            # only the pool refers to it: no tensor of this process uses it
            and torch._C._storage_Use_Count(buffer._cdata) == 1
        ]
        if free:
            return self.buffers[min(free)[1]]
        buffer = (
            torch.UntypedStorage._new_shared(nbytes)
            if self.shared
            else torch.UntypedStorage(nbytes)
        )
        if len(self.buffers) < len(self.flag_values) - 1:
            self.slot_of[buffer.data_ptr()] = len(self.buffers)
            self.buffers.append(buffer)
        return buffer

    def reduce(self, storage: torch.UntypedStorage) -> tuple[Callable[..., Any], tuple]:
        """Pickle ``storage``.

        A pooled one as its slot (with its descriptor and the flags while the main process does not
        keep them), a small one not in shared memory by value, any other as torch does.
        """
        slot = self.slot_of.get(storage.data_ptr())
        if slot is not None:
            self.flag_values[slot, HELD] = 1
            descriptor = (
                None if self.flag_values[slot, KEPT] else DupFd(storage._share_fd_cpu_()[0])
            )
            flags = None if self.flag_values[-1, KEPT] else self.flags
            return _rebuild_pooled, (self.token, slot, storage.nbytes(), descriptor, flags)
        if not storage.is_shared() and 0 < storage.nbytes() <= BY_VALUE_NBYTES:
            values = torch.empty(0, dtype=torch.uint8).set_(storage).numpy().tobytes()
            return _storage_from_bytes, (values,)
        return reduce_storage(storage)


# In the main process: each worker pool's flags, and the descriptors of its buffers.
_flags_of: dict[str, torch.Tensor] = {}
_descriptor_of: dict[tuple[str, int], int] = {}


def _rebuild_pooled(
    token: str, slot: int, nbytes: int, descriptor: Any, flags: torch.Tensor | None
) -> torch.UntypedStorage:
    """Unpickle a pooled buffer of worker pool ``token``.

    Mapped from its descriptor (kept from its first batch), with a finalizer that clears its flag
    once it is freed.
    """
    if flags is not None:
        _forget_ended_workers()
        _flags_of[token] = flags
        flags[-1, KEPT] = 1
    held = _flags_of[token]
    if descriptor is not None:
        old = _descriptor_of.pop((token, slot), None)
        if old is not None:
            os.close(old)
        _descriptor_of[token, slot] = descriptor.detach()
        held[slot, KEPT] = 1
    storage = torch.UntypedStorage._new_shared_fd_cpu(_descriptor_of[token, slot], nbytes)
    weakref.finalize(storage, _release, held, slot).atexit = False
    return storage


def _forget_ended_workers() -> None:
    """Close the descriptors of the pools of worker processes that have ended."""
    for token in list(_flags_of):
        try:
            os.kill(int(token.partition("-")[0]), 0)
        except ProcessLookupError:
            del _flags_of[token]
            for key in [key for key in _descriptor_of if key[0] == token]:
                os.close(_descriptor_of.pop(key))


def _storage_from_bytes(values: bytes) -> torch.UntypedStorage:
    return torch.UntypedStorage.from_buffer(values, dtype=torch.uint8)


def _release(held: torch.Tensor, slot: int) -> None:
    held[slot, HELD] = 0


_pool: _Pool | None = None


def _process_pool() -> _Pool | None:
    """This process's pool (a forked worker makes its own).

    None in a worker whose buffers torch shares otherwise than by file descriptor.
    """
    global _pool
    if _pool is None or _pool.pid != os.getpid():
        worker = get_worker_info() is not None
        if worker and torch.multiprocessing.get_sharing_strategy() != "file_descriptor":
            return None
        _pool = _Pool(shared=worker)
    return _pool
