"""DataLoader workers recycle their batch buffers, and never one the main process still holds."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from torch.utils.data import DataLoader, Dataset

from model.datasets import shared_rows
from model.datasets.batching import stack_rows
from model.datasets.shared_rows import empty_rows

ROW_SHAPE = (3, 64, 64)


class Rows(Dataset):
    """Sample ``i`` is a row of ``i``s decoded into a batch buffer, as GeoPile2 does, with the
    size of its worker's pool."""

    def __init__(self, count: int) -> None:
        self.count = count

    def __len__(self) -> int:
        return self.count

    def __getitems__(self, indices: list[int]) -> list[dict[str, Any]]:
        rows = empty_rows((len(indices), *ROW_SHAPE))
        for row, index in enumerate(indices):
            rows[row] = index
        pool = shared_rows._process_pool()
        pooled = len(pool.buffers) if pool else 0
        return [
            {"image": rows[row], "index": index, "pooled": pooled}
            for row, index in enumerate(indices)
        ]


def collate(samples: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "image": stack_rows([s["image"] for s in samples]),
        "index": torch.tensor([s["index"] for s in samples]),
        "pooled": samples[0]["pooled"],
    }


def loader(count: int, workers: int = 1) -> DataLoader:
    return DataLoader(Rows(count), batch_size=2, num_workers=workers, collate_fn=collate)


def assert_rows_hold_their_index(batch: dict[str, Any]) -> None:
    expected = batch["index"].float()[:, None, None, None].expand(-1, *ROW_SHAPE)
    torch.testing.assert_close(batch["image"], expected, rtol=0, atol=0)


def test_the_main_process_gets_tensors_outside_shared_memory() -> None:
    rows = empty_rows((2, *ROW_SHAPE))
    assert rows.shape == (2, *ROW_SHAPE) and rows.dtype == torch.float32
    assert not rows.is_shared()


def test_a_worker_reuses_the_buffers_of_batches_the_main_process_dropped() -> None:
    pooled = []
    for batch in loader(80):  # each batch dropped before the next
        assert_rows_hold_their_index(batch)
        pooled.append(batch["pooled"])
    # in flight at once: the batch held here, two prefetched, one being decoded (and one
    # whose release the worker has not seen yet)
    assert max(pooled) <= 5 < len(pooled)


def test_batches_held_by_the_main_process_are_never_overwritten() -> None:
    batches = list(loader(40))  # all held: the worker may reuse none of them
    assert [b["pooled"] for b in batches] == list(range(1, 21))
    for batch in batches:
        assert_rows_hold_their_index(batch)


def test_past_its_pool_a_worker_hands_out_fresh_buffers(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(shared_rows, "MAX_BUFFERS", 3)  # the forked worker inherits it
    batches = list(loader(40, workers=2))
    assert max(b["pooled"] for b in batches) == 3
    assert sorted(int(i) for b in batches for i in b["index"]) == list(range(40))
    for batch in batches:
        assert_rows_hold_their_index(batch)


def test_small_tensors_arrive_by_value_and_shared_ones_stay_shared() -> None:
    batch = next(iter(loader(4)))
    assert batch["index"].tolist() == [0, 1] and not batch["index"].is_shared()
    assert batch["image"].is_shared()


def test_the_main_process_reuses_a_buffer_once_nothing_uses_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # A pool of its own: buffers other tests of this process left free would fit too.
    monkeypatch.setattr(shared_rows, "_pool", None)
    first = empty_rows((2, *ROW_SHAPE))
    pointer = first.data_ptr()
    row = first[1]
    del first
    assert empty_rows((2, *ROW_SHAPE)).data_ptr() != pointer  # a row of it is still used
    del row
    assert empty_rows((1, *ROW_SHAPE)).data_ptr() == pointer  # a smaller one fits in it


def test_the_main_process_keeps_each_buffer_descriptor_once_and_forgets_ended_workers() -> None:
    before = set(shared_rows._flags_of)
    for batch in loader(80):
        assert_rows_hold_their_index(batch)
    tokens = set(shared_rows._flags_of) - before
    kept = [key for key in shared_rows._descriptor_of if key[0] in tokens]
    assert len(tokens) == 1 and 1 <= len(kept) <= 5  # one per buffer, not one per batch
    assert_rows_hold_their_index(next(iter(loader(4))))  # a new worker's first batch
    assert not tokens & set(shared_rows._flags_of)  # the ended worker's are closed
    assert not [key for key in shared_rows._descriptor_of if key[0] in tokens]


def test_with_another_sharing_strategy_workers_hand_out_fresh_buffers() -> None:
    strategy = torch.multiprocessing.get_sharing_strategy()
    torch.multiprocessing.set_sharing_strategy("file_system")
    try:
        batches = list(loader(8))
    finally:
        torch.multiprocessing.set_sharing_strategy(strategy)
    assert [b["pooled"] for b in batches] == [0] * 4
    for batch in batches:
        assert_rows_hold_their_index(batch)


def test_torch_default_collate_copies_rows_and_frees_the_buffers_at_once() -> None:
    plain = DataLoader(Rows(40), batch_size=2, num_workers=1)  # default_collate stacks
    batches = list(plain)  # all held: the copies are default_collate's own
    assert max(int(b["pooled"].max()) for b in batches) <= 2
    for batch in batches:
        assert_rows_hold_their_index(batch)
