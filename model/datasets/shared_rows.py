"""Float32 buffers for decoded chips, recycled by each process once no process uses them; in
``DataLoader`` workers, in shared memory.

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
  as the buffer is unpickled), whoever the batch went to (collate, ``pin_memory``, the user).

The pool holds as many buffers as were in use at once (a caching allocator's trade-off). A
batch forwarded from the main process to a third process must be cloned first: the worker
may refill its buffer once the main process has freed it.
"""

from __future__ import annotations

import math
import os
import weakref
from collections.abc import Callable
from multiprocessing.reduction import ForkingPickler
from typing import Any

import torch
from torch.multiprocessing.reductions import reduce_storage
from torch.utils.data import get_worker_info

MAX_BUFFERS = 32  # pooled buffers per worker; past them a batch gets a fresh one, as before
# Storages up to this size that are not in shared memory yet (a batch's indices, transforms,
# bounds) go by value in the pickle: torch would move each into a new shared-memory file
# and pass its descriptor through a socket, ~1.5 ms of the main process's time apiece here.
BY_VALUE_NBYTES = 1 << 16


def empty_rows(shape: tuple[int, ...]) -> torch.Tensor:
    """A float32 tensor of ``shape`` for decoded chips, on a buffer of this process that no
    process uses any more; in a ``DataLoader`` worker in shared memory (so handing the batch
    to the main process moves no bytes)."""
    storage = _process_pool().take(math.prod(shape) * 4)
    return torch.empty(0).set_(storage, 0, shape)


class _Pool:
    """This process's buffers; in a worker, shared, with their "held by the main process"
    flags."""

    def __init__(self, shared: bool) -> None:
        self.pid, self.shared = os.getpid(), shared
        self.buffers: list[torch.UntypedStorage] = []
        self.slot_of: dict[int, int] = {}  # data pointer -> slot
        self.held = torch.zeros(MAX_BUFFERS, dtype=torch.uint8)
        if shared:
            self.held.share_memory_()
            # Overrides torch's reducer in this worker only; it pickles other storages.
            ForkingPickler.register(torch.UntypedStorage, self.reduce)
        self.held_flags = self.held.numpy()

    def take(self, nbytes: int) -> torch.UntypedStorage:
        """The smallest free buffer of at least ``nbytes``, else a new one (pooled while
        fewer than :data:`MAX_BUFFERS`)."""
        free = [(buffer.nbytes(), slot) for slot, buffer in enumerate(self.buffers)
                if buffer.nbytes() >= nbytes and not self.held_flags[slot]
                # only the pool refers to it: no tensor of this process uses it
                and torch._C._storage_Use_Count(buffer._cdata) == 1]
        if free:
            return self.buffers[min(free)[1]]
        buffer = (torch.UntypedStorage._new_shared(nbytes) if self.shared
                  else torch.UntypedStorage(nbytes))
        if len(self.buffers) < len(self.held_flags):  # MAX_BUFFERS when made
            self.slot_of[buffer.data_ptr()] = len(self.buffers)
            self.buffers.append(buffer)
        return buffer

    def reduce(self, storage: torch.UntypedStorage) -> tuple[Callable[..., Any], tuple]:
        """Pickle ``storage`` as torch does (a pooled one also carries its flag, set here),
        but a small one not in shared memory by value."""
        slot = self.slot_of.get(storage.data_ptr())
        if slot is None and not storage.is_shared() and 0 < storage.nbytes() <= BY_VALUE_NBYTES:
            values = torch.empty(0, dtype=torch.uint8).set_(storage).numpy().tobytes()
            return _storage_from_bytes, (values,)
        rebuild, args = reduce_storage(storage)
        if slot is None:
            return rebuild, args
        self.held_flags[slot] = 1
        return _rebuild_pooled, (rebuild, args, self.held, slot)


def _rebuild_pooled(rebuild: Callable[..., torch.UntypedStorage], args: tuple,
                    held: torch.Tensor, slot: int) -> torch.UntypedStorage:
    """Unpickle a pooled buffer: torch's rebuild, and the flag cleared once it is freed."""
    storage = rebuild(*args)
    weakref.finalize(storage, _release, held, slot).atexit = False
    return storage


def _storage_from_bytes(values: bytes) -> torch.UntypedStorage:
    return torch.UntypedStorage.from_buffer(values, dtype=torch.uint8)


def _release(held: torch.Tensor, slot: int) -> None:
    held[slot] = 0


_pool: _Pool | None = None


def _process_pool() -> _Pool:
    """This process's pool (a forked worker makes its own)."""
    global _pool
    if _pool is None or _pool.pid != os.getpid():
        _pool = _Pool(shared=get_worker_info() is not None)
    return _pool
