"""The paper's batching: every sensor in every batch, exact epochs, disjoint ranks."""

from __future__ import annotations

from collections import Counter

import pytest
import torch

from model.datasets.batching import (
    DATA_STREAM,
    MODEL_STREAM,
    SensorBatchSampler,
    apportion,
    collate_by_sensor,
    stack_rows,
    step_seed,
)

COUNTS = {"dsm": 242, "rgb": 273, "sentinel1_grd": 196, "sentinel2_l2a": 7}


def sensor_of(index: int, counts: dict[str, int]) -> str:
    for sensor, count in counts.items():
        if index < count:
            return sensor
        index -= count
    raise AssertionError(f"index {index} past the end")


@pytest.mark.parametrize("batch_size", [4, 5, 64, 1000])
def test_every_batch_holds_every_sensor(batch_size: int) -> None:
    sampler = SensorBatchSampler(COUNTS, batch_size)
    batches = list(sampler)
    assert len(batches) == len(sampler)
    for batch in batches:
        assert {sensor_of(i, COUNTS) for i in batch} == set(COUNTS)
        assert len(batch) <= batch_size + len(COUNTS)


def test_an_epoch_draws_every_chip_once_when_no_sensor_is_short() -> None:
    counts = {"a": 50, "b": 30, "c": 20}
    batches = list(SensorBatchSampler(counts, 10))
    drawn = [i for batch in batches for i in batch]
    assert sorted(drawn) == list(range(100))
    assert [len(b) for b in batches] == [10] * 10


def test_a_short_sensor_is_drawn_again_to_be_in_every_batch() -> None:
    sampler = SensorBatchSampler(COUNTS, 64)
    drawn = Counter(i for batch in sampler for i in batch)
    s2 = range(242 + 273 + 196, 242 + 273 + 196 + 7)
    assert sampler.steps == 12 and sum(drawn[i] for i in s2) == 12  # 7 chips over 12 steps
    assert all(drawn[i] == 1 for i in range(242 + 273 + 196))  # the others once


@pytest.mark.parametrize("counts", [COUNTS, {"a": 9, "b": 4}, {"a": 100, "b": 3, "c": 0}])
def test_two_ranks_split_one_epoch_exactly_and_disjointly(counts: dict[str, int]) -> None:
    whole = SensorBatchSampler(counts, 8, num_replicas=2, rank=0).epoch_batches()
    ranks = [list(SensorBatchSampler(counts, 8, num_replicas=2, rank=r)) for r in (0, 1)]
    assert len(ranks[0]) == len(ranks[1])  # the same number of steps
    flat = [[i for batch in rank for i in batch] for rank in ranks]
    epoch = Counter(i for batch in whole for i in batch)
    assert Counter(flat[0]) + Counter(flat[1]) == epoch
    if max(epoch.values()) == 1:  # no sensor oversampled: ranks share no index
        assert not set(flat[0]) & set(flat[1])
        assert sorted(flat[0] + flat[1]) == list(range(sum(counts.values())))


def test_ranks_are_disjoint_on_the_full_store_counts() -> None:
    counts = {"a": 120, "b": 80, "c": 40}
    batches = [list(SensorBatchSampler(counts, 16, num_replicas=3, rank=r)) for r in range(3)]
    assert [len(b) for b in batches] == [5, 5, 5]  # 240 / 16 = 15 steps
    ranks = [[i for batch in rank for i in batch] for rank in batches]
    assert sorted(ranks[0] + ranks[1] + ranks[2]) == list(range(240))


def test_the_order_depends_only_on_seed_and_epoch() -> None:
    def order(seed: int, epoch: int) -> list[list[int]]:
        sampler = SensorBatchSampler(COUNTS, 32, seed=seed)
        sampler.set_epoch(epoch)
        return list(sampler)

    assert order(3, 1) == order(3, 1)
    assert order(3, 1) != order(3, 2)
    assert order(3, 1) != order(4, 1)
    assert sorted(map(sorted, order(3, 1))) != sorted(map(sorted, order(3, 2)))


def test_shares_set_each_sensors_part_of_the_batch() -> None:
    counts = {"a": 600, "b": 300, "c": 100}
    sampler = SensorBatchSampler(counts, 100, shares={"a": 1, "b": 1, "c": 2})
    first = next(iter(sampler))
    per_sensor = Counter(sensor_of(i, counts) for i in first)
    assert per_sensor == {"a": 25, "b": 25, "c": 50}
    assert len(sampler) == 10


def test_bad_settings_are_refused_with_the_reason() -> None:
    with pytest.raises(ValueError, match=r"batch size 3 cannot hold 1 chip\(s\) of each of 4"):
        SensorBatchSampler(COUNTS, 3)
    with pytest.raises(ValueError, match="unknown sensors \\['landsat8'\\]"):
        SensorBatchSampler(COUNTS, 8, shares={"landsat8": 1.0})
    with pytest.raises(ValueError, match="rank 2 is not in"):
        SensorBatchSampler(COUNTS, 8, num_replicas=2, rank=2)
    with pytest.raises(ValueError, match="no sensor has samples"):
        SensorBatchSampler({"a": 0}, 8)


def test_apportion_keeps_the_total() -> None:
    assert apportion(10, [1, 1, 1]) == [4, 3, 3]
    assert apportion(7, [0.5, 0.25, 0.25]) == [3, 2, 2]  # largest remainders first
    assert sum(apportion(1001, [3, 5, 7, 11])) == 1001


def sample(sensor: str, index: int, channels: int, partner: tuple[str, int] | None = None) -> dict:
    out = {
        "sensor": sensor,
        "index": index,
        "crs": "EPSG:32632",
        "image": torch.full((channels, 4, 4), float(index)),
        "transform": torch.zeros(6, dtype=torch.float64),
        "bounds": torch.zeros(4, dtype=torch.float64),
    }
    if partner is not None:
        out[f"image_{partner[0]}"] = torch.full((partner[1], 4, 4), -float(index))
    return out


def test_collate_groups_by_sensor_and_records_partner_rows() -> None:
    samples = [
        sample("rgb", 0, 3, ("dsm", 1)),
        sample("s1", 1, 2),
        sample("rgb", 2, 3),
        sample("rgb", 3, 3, ("dsm", 1)),
        None,
    ]
    batch = collate_by_sensor(samples)
    assert batch["skipped"] == 1 and set(batch["sensors"]) == {"rgb", "s1"}
    rgb = batch["sensors"]["rgb"]
    assert rgb["image"].shape == (3, 3, 4, 4) and rgb["index"].tolist() == [0, 2, 3]
    assert rgb["rows_dsm"].tolist() == [0, 2]
    assert rgb["image_dsm"][:, 0, 0, 0].tolist() == [-0.0, -3.0]
    assert rgb["crs"] == ["EPSG:32632"] * 3
    assert "rows_dsm" not in batch["sensors"]["s1"]


def test_stack_rows_copies_unless_the_rows_are_one_tensor() -> None:
    base = torch.arange(24.0).reshape(3, 2, 4).clone()
    assert stack_rows([base[0], base[1], base[2]]) is base
    swapped = stack_rows([base[1], base[0], base[2]])
    assert swapped is not base and swapped[0].tolist() == base[1].tolist()
    assert stack_rows([base[0], base[1]]) is not base  # not every row of it
    view = torch.arange(24.0).reshape(3, 2, 4)  # rows of a view: their _base is the 1-d tensor
    assert torch.equal(stack_rows([view[0], view[1], view[2]]), view)


def test_the_data_and_model_streams_of_one_step_differ_and_repeat() -> None:
    data, model = (step_seed(0, 7, 0, stream) for stream in (DATA_STREAM, MODEL_STREAM))
    assert data != model and step_seed(0, 7, 0, DATA_STREAM) == data  # the same step again
    assert step_seed(0, 8, 0, DATA_STREAM) != data and step_seed(0, 7, 1, DATA_STREAM) != data
    draws = []
    for seed in (data, model):
        torch.manual_seed(seed)
        draws.append(torch.rand(16))
    assert not torch.equal(*draws)  # the model's masks do not replay the augmentation's draws


def test_a_floor_of_chips_per_sensor_in_every_batch() -> None:
    counts = {"a": 200, "b": 4}
    sampler = SensorBatchSampler(counts, 17, min_chips_per_sensor=3)
    batches = list(sampler)
    assert len(batches) == 12  # ceil(204 / 17)
    for batch in batches:
        per_sensor = Counter(sensor_of(i, counts) for i in batch)
        assert per_sensor["b"] == 3 and per_sensor["a"] in (16, 17)
    default = Counter(sensor_of(i, counts) for i in next(iter(SensorBatchSampler(counts, 17))))
    assert default["b"] == 1  # the default floor: one chip
    with pytest.raises(ValueError, match="min_chips_per_sensor must be at least 1, got 0"):
        SensorBatchSampler(counts, 17, min_chips_per_sensor=0)
    with pytest.raises(ValueError, match=r"batch size 17 cannot hold 9 chip\(s\) of each of 2"):
        SensorBatchSampler(counts, 17, min_chips_per_sensor=9)
