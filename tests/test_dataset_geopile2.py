"""GeoPile2 follows TorchGeo's dataset contract and returns exactly what the store holds."""

from __future__ import annotations

import math
import shutil
from dataclasses import replace
from pathlib import Path

import matplotlib
import numpy as np
import pytest
import torch
from matplotlib.figure import Figure
from torch.utils.data import DataLoader
from torchgeo.datasets import DatasetNotFoundError

from catalogs.store_format import (
    BOUNDS_LONLAT,
    CRS,
    IMAGE,
    TRANSFORM,
    StoreFormatError,
    open_store,
    read_manifest,
)
from model.datasets.batching import collate_by_sensor
from model.datasets.chip_reader import ChipReadError
from model.datasets.geopile2 import GeoPile2, location_fraction
from model.datasets.units import check_convertible, to_model_unit
from tests.pipeline_setup import busy_reference

matplotlib.use("Agg")


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory, sample_world: Path) -> Path:
    """A store of every pretraining source (64 px chips, 16 per shard); read-only."""
    return busy_reference(tmp_path_factory, sample_world).store


def expected_image(store: Path, sensor: str, chip: int) -> np.ndarray:
    """A chip read through zarr, scaled to the model's unit, nodata as NaN."""
    m = read_manifest(store).sensors[sensor]
    stored = open_store(store)[sensor][IMAGE][chip]
    values = stored.astype(np.float32) * np.float32(m.scale) + np.float32(m.offset)
    if m.nodata is not None and not math.isnan(m.nodata):
        values[stored == m.nodata] = np.nan
    return values


def test_samples_are_the_store_chips_in_the_model_unit(store: Path) -> None:
    dataset = GeoPile2(store, split="all")
    manifest = read_manifest(store)
    assert len(dataset) == sum(s.chip_count for s in manifest.sensors.values())
    root = open_store(store)
    for sensor, m in manifest.sensors.items():
        chip = m.chip_count // 2
        sample = dataset[int(dataset.sensor_offsets[sensor]) + chip]
        assert sample["sensor"] == sensor and sample["index"] == chip
        assert sample["image"].dtype == torch.float32
        assert sample["image"].shape == m.chip_shape
        np.testing.assert_array_equal(sample["image"].numpy(), expected_image(store, sensor, chip))
        assert sample["crs"] == root[sensor][CRS][chip]
        assert sample["transform"].dtype == torch.float64
        np.testing.assert_array_equal(sample["transform"].numpy(), root[sensor][TRANSFORM][chip])
        np.testing.assert_array_equal(sample["bounds"].numpy(), root[sensor][BOUNDS_LONLAT][chip])
        for partner, partner_chip in dataset.partners_of(sensor, chip):
            np.testing.assert_array_equal(
                sample[f"image_{partner}"].numpy(), expected_image(store, partner, partner_chip)
            )


def test_sentinel2_reflectance_and_sentinel1_decibels(store: Path) -> None:
    dataset = GeoPile2(store, sensors=["sentinel2_l2a"], split="all", paired_only=True)
    sample = dataset[0]
    assert 0.0 < float(sample["image"].nanmean()) < 1.0  # reflectance, not digital numbers
    assert -40.0 < float(sample["image_sentinel1_grd"].nanmean()) < 10.0  # dB
    assert sample["crs"].startswith("EPSG:")


def test_every_paired_chip_carries_each_partner(store: Path) -> None:
    dataset = GeoPile2(store, sensors=["rgb", "dsm"], split="all", paired_only=True)
    assert len(dataset) > 0
    for index in range(0, len(dataset), 17):
        sample = dataset[index]
        other = "dsm" if sample["sensor"] == "rgb" else "rgb"
        assert sample[f"image_{other}"].shape[1:] == sample["image"].shape[1:]
    unpaired = GeoPile2(store, sensors=["rgb"], split="all")
    assert len(unpaired) > dataset.sensor_counts["rgb"]  # pictures have no partner
    assert any("image_dsm" not in unpaired[i] for i in range(len(unpaired)))


def test_partner_sensors_limit_the_partners_a_sample_brings(store: Path) -> None:
    """Single-sensor pretraining: a sample brings no partner the model has no decoder for."""
    everyone = GeoPile2(store, sensors=["sentinel2_l2a"], split="all")
    alone = GeoPile2(
        store, sensors=["sentinel2_l2a"], partner_sensors=["sentinel2_l2a"], split="all"
    )
    assert len(alone) == len(everyone)
    paired = [i for i in range(len(everyone)) if "image_sentinel1_grd" in everyone[i]]
    assert paired and all(not any(key.startswith("image_") for key in alone[i]) for i in paired)
    assert (
        len(
            GeoPile2(
                store,
                sensors=["sentinel2_l2a"],
                partner_sensors=["sentinel2_l2a"],
                split="all",
                paired_only=True,
            )
        )
        == 0
    )
    with pytest.raises(ValueError, match="no sensor group \\['landsat'\\]"):
        GeoPile2(store, sensors=["sentinel2_l2a"], partner_sensors=["landsat"])


def test_pictures_without_georeference_have_empty_crs_and_nan_transform(store: Path) -> None:
    dataset = GeoPile2(store, sensors=["rgb"], split="all", partners=False)
    samples = [dataset[i] for i in range(len(dataset))]
    pictures = [s for s in samples if s["crs"] == ""]
    assert pictures and all(torch.isnan(s["transform"]).all() for s in pictures)
    assert all(torch.isnan(s["bounds"]).all() for s in pictures)
    assert not any(k.startswith("image_") for s in samples for k in s)


def test_splits_are_disjoint_cover_the_store_and_keep_pairs_together(store: Path) -> None:
    chips = {
        split: GeoPile2(store, split=split).sensor_chips
        for split in ("train", "val", "test", "all")
    }
    for sensor, every in chips["all"].items():
        parts = [set(chips[s][sensor].tolist()) for s in ("train", "val", "test")]
        assert sum(map(len, parts)) == len(every) and set().union(*parts) == set(every.tolist())
    dataset = GeoPile2(store, split="all")
    for split in ("train", "val", "test"):
        for sensor, members in chips[split].items():
            for chip in members.tolist():
                for partner, partner_chip in dataset.partners_of(sensor, chip):
                    assert partner_chip in set(chips[split][partner].tolist()), (split, sensor)
    assert len(chips["train"]["rgb"]) > len(chips["test"]["rgb"])


def test_a_location_split_depends_only_on_its_name() -> None:
    assert location_fraction("sen12ms", "ROIs1158_spring_1_p0") == location_fraction(
        "sen12ms", "ROIs1158_spring_1_p0"
    )
    fractions = [location_fraction("geopile", f"item_{i}") for i in range(2000)]
    assert all(0.0 <= f < 1.0 for f in fractions)
    assert abs(np.mean(np.array(fractions) < 0.8) - 0.8) < 0.03  # about 80 % in train


def test_plot_draws_every_sensor_kind_and_pairs(store: Path) -> None:
    dataset = GeoPile2(store, split="all")
    for sensor in dataset.sensors:
        sample = dataset[int(dataset.sensor_offsets[sensor])]
        figure = dataset.plot(sample, suptitle="sample")
        assert isinstance(figure, Figure)
        panels = 1 + sum(key.startswith("image_") for key in sample)
        assert len(figure.axes) == panels
        assert figure.axes[0].get_title().startswith(sensor)
        matplotlib.pyplot.close(figure)
    figure = dataset.plot(dataset[0], show_titles=False)
    assert figure.axes[0].get_title() == ""
    matplotlib.pyplot.close(figure)


def test_missing_store_raises_dataset_not_found(tmp_path: Path) -> None:
    with pytest.raises(DatasetNotFoundError, match="Dataset not found"):
        GeoPile2(tmp_path / "absent.zarr")
    (tmp_path / "other").mkdir()
    with pytest.raises(StoreFormatError, match="other"):
        GeoPile2(tmp_path / "other")


def test_bad_arguments_name_the_choices(store: Path) -> None:
    with pytest.raises(ValueError, match="split 'training' is not one of"):
        GeoPile2(store, split="training")
    with pytest.raises(ValueError, match=r"no sensor group \['landsat8'\].*sentinel2_l2a"):
        GeoPile2(store, sensors=["landsat8"])
    with pytest.raises(ValueError, match="on_error 'ignore'"):
        GeoPile2(store, on_error="ignore")
    with pytest.raises(IndexError, match="out of range"):
        GeoPile2(store, split="all")[10**6]


def damaged_store(store: Path, folder: Path, sensor: str) -> tuple[Path, int]:
    """A copy of ``store`` whose ``sensor`` chip 3 has its bytes zeroed; returns the chip."""
    copy = folder / "damaged.zarr"
    shutil.copytree(store, copy)
    shard = copy / sensor / IMAGE / "c" / "0" / "0" / "0" / "0"
    data = bytearray(shard.read_bytes())
    tail = data[-(16 * 16 + 4) : -4]
    offset, length = np.frombuffer(bytes(tail), dtype="<u8").reshape(16, 2)[3]
    data[int(offset) : int(offset + length)] = bytes(int(length))
    shard.write_bytes(bytes(data))
    return copy, 3


def test_a_damaged_chunk_names_the_sample_sensor_chip_and_file(store: Path, tmp_path: Path) -> None:
    copy, chip = damaged_store(store, tmp_path, "sentinel1_grd")
    dataset = GeoPile2(copy, sensors=["sentinel1_grd"], split="all", partners=False)
    with pytest.raises(
        ChipReadError,
        match=rf"sample {chip}: sentinel1_grd chip {chip}: "
        r".*sentinel1_grd/image/c/0/0/0/0",
    ):
        dataset[chip]
    assert dataset[chip + 1]["image"].shape == (2, 64, 64)  # the others still read


def test_a_missing_shard_file_is_an_error_too(store: Path, tmp_path: Path) -> None:
    copy = tmp_path / "copy.zarr"
    shutil.copytree(store, copy)
    (copy / "dsm" / IMAGE / "c" / "1" / "0" / "0" / "0").unlink()
    dataset = GeoPile2(copy, sensors=["dsm"], split="all")
    with pytest.raises(ChipReadError, match="sample 16: dsm chip 16: .*No such file"):
        dataset[16]


def test_skipping_damaged_chips_counts_them(store: Path, tmp_path: Path) -> None:
    copy, chip = damaged_store(store, tmp_path, "sentinel1_grd")
    dataset = GeoPile2(
        copy, sensors=["sentinel2_l2a", "sentinel1_grd"], split="all", on_error="skip"
    )
    s1 = int(dataset.sensor_offsets["sentinel1_grd"])
    assert dataset[s1 + chip] is None
    batch = collate_by_sensor(dataset.__getitems__([s1 + chip - 1, s1 + chip, chip]))
    assert batch["skipped"] == 2  # the damaged chip, and the S2 chip whose partner it is
    assert batch["sensors"]["sentinel1_grd"]["index"].tolist() == [chip - 1]
    assert "sentinel2_l2a" not in batch["sensors"]
    assert dataset.skipped == [s1 + chip, s1 + chip, chip]


def test_batched_reads_equal_single_reads_and_collate_without_copy(store: Path) -> None:
    dataset = GeoPile2(store, split="all")
    indices = [0, 5, int(dataset.sensor_offsets["sentinel2_l2a"]) + 2, 7, len(dataset) - 1]
    samples = dataset.__getitems__(indices)
    for index, sample in zip(indices, samples, strict=True):
        single = dataset[index]
        assert sample.keys() == single.keys()
        for key, value in single.items():
            if isinstance(value, torch.Tensor):
                torch.testing.assert_close(sample[key], value, equal_nan=True, rtol=0, atol=0)
    batch = collate_by_sensor(samples)["sensors"]
    rgb = batch[samples[0]["sensor"]]
    assert rgb["image"].shape[0] == sum(s["sensor"] == samples[0]["sensor"] for s in samples)
    assert rgb["image"].data_ptr() == samples[0]["image"].data_ptr()  # no copy


def test_worker_processes_read_the_same_samples(store: Path) -> None:
    dataset = GeoPile2(store, sensors=["sentinel2_l2a"], split="all", paired_only=True)
    batches = {
        workers: list(
            DataLoader(dataset, batch_size=3, num_workers=workers, collate_fn=collate_by_sensor)
        )
        for workers in (0, 2)
    }  # all held: workers recycle none of their buffers
    assert sum(b["sensors"]["sentinel2_l2a"]["image"].shape[0] for b in batches[2]) == len(dataset)
    first = batches[2][0]["sensors"]["sentinel2_l2a"]
    torch.testing.assert_close(first["image"][2], dataset[2]["image"], equal_nan=True)
    torch.testing.assert_close(
        first["image_sentinel1_grd"][2], dataset[2]["image_sentinel1_grd"], equal_nan=True
    )
    for main, worker in zip(*batches.values(), strict=True):
        for key, value in main["sensors"]["sentinel2_l2a"].items():
            if isinstance(value, torch.Tensor):
                torch.testing.assert_close(
                    worker["sensors"]["sentinel2_l2a"][key], value, equal_nan=True, rtol=0, atol=0
                )
            else:
                assert worker["sensors"]["sentinel2_l2a"][key] == value


def test_worker_processes_recycle_buffers_and_keep_reading_the_same_samples(store: Path) -> None:
    dataset = GeoPile2(store, sensors=["sentinel2_l2a"], split="all", paired_only=True)
    loader = DataLoader(
        dataset, batch_size=2, num_workers=1, collate_fn=collate_by_sensor, persistent_workers=True
    )
    for _ in range(3):  # each batch dropped before the next: its buffers are reused
        for position, batch in enumerate(loader):
            expected = collate_by_sensor(dataset.__getitems__([2 * position, 2 * position + 1]))
            for key in ("image", "image_sentinel1_grd"):
                torch.testing.assert_close(
                    batch["sensors"]["sentinel2_l2a"][key],
                    expected["sensors"]["sentinel2_l2a"][key],
                    equal_nan=True,
                    rtol=0,
                    atol=0,
                )


def test_transforms_see_the_whole_sample(store: Path) -> None:
    def double(sample: dict) -> dict:
        return dict(sample, image=sample["image"] * 2)

    plain = GeoPile2(store, sensors=["dsm"], split="all")
    doubled = GeoPile2(store, sensors=["dsm"], split="all", transforms=double)
    torch.testing.assert_close(doubled[4]["image"], plain[4]["image"] * 2, equal_nan=True)


def test_nodata_is_found_whichever_way_its_sensor_is_checked(store: Path) -> None:
    checked = set()
    for chips in GeoPile2(store, split="all")._chips.values():
        if chips.nodata_value is None:
            continue
        nodata = chips.nodata_value
        other = np.asarray(1 if nodata == 0 else nodata - 1, dtype=nodata.dtype)
        assert chips.holds_nodata(np.array([other, nodata, other]))
        assert not chips.holds_nodata(np.array([other, other]))
        checked.add(getattr(chips.nodata_extreme, "__name__", "=="))
    assert {"min", "=="} <= checked  # uint16 reflectance 0; a float nodata


def test_stored_chips_are_the_store_values_and_convert_to_the_model_unit_exactly(
    store: Path,
) -> None:
    stored = GeoPile2(store, split="all", stored=True)
    converted = GeoPile2(store, split="all")
    root = open_store(store)
    manifest = read_manifest(store)
    for sensor, m in manifest.sensors.items():
        index = int(stored.sensor_offsets[sensor]) + m.chip_count // 3
        raw, expected = stored[index], converted[index]
        assert raw["image"].dtype == getattr(torch, m.dtype)
        np.testing.assert_array_equal(raw["image"].numpy(), root[sensor][IMAGE][raw["index"]])
        for key in [k for k in expected if k.startswith("image")]:
            partner = raw["sensor"] if key == "image" else key.removeprefix("image_")
            torch.testing.assert_close(
                to_model_unit(raw[key], manifest.sensors[partner]),
                expected[key],
                equal_nan=True,
                rtol=0,
                atol=0,
            )
    assert isinstance(stored.plot(stored[0]), Figure)


def test_stored_chips_come_through_worker_processes_unchanged(store: Path) -> None:
    dataset = GeoPile2(store, sensors=["sentinel2_l2a"], split="all", paired_only=True, stored=True)
    loader = DataLoader(
        dataset, batch_size=3, num_workers=1, collate_fn=collate_by_sensor, persistent_workers=True
    )
    for _ in range(2):  # the second pass refills the worker's recycled buffers
        for position, batch in enumerate(loader):
            expected = collate_by_sensor(
                dataset.__getitems__(list(range(3 * position, min(3 * position + 3, len(dataset)))))
            )
            for key in ("image", "image_sentinel1_grd"):
                got = batch["sensors"]["sentinel2_l2a"][key]
                want = expected["sensors"]["sentinel2_l2a"][key]
                assert got.dtype == want.dtype
                torch.testing.assert_close(got, want, equal_nan=True, rtol=0, atol=0)
    assert batch["sensors"]["sentinel2_l2a"]["image"].dtype == torch.uint16


def test_a_reader_hands_out_views_of_the_mapped_shard_and_closes_while_one_is_held(
    store: Path,
) -> None:
    reader = GeoPile2(store, sensors=["dsm"], split="all").chip_reader("dsm")
    chunk = reader.chunk(1)
    assert isinstance(chunk, memoryview) and chunk.readonly
    reader.close()  # a chunk still held keeps its mapping until it is freed
    assert len(bytes(chunk)) == len(chunk)
    again = reader.read(1)  # maps the file anew
    np.testing.assert_array_equal(again, open_store(store)["dsm"][IMAGE][1])


def test_to_model_unit_scales_masks_nodata_and_converts_power_to_decibels(store: Path) -> None:
    sensors = read_manifest(store).sensors
    reflectance = replace(sensors["sentinel2_l2a"], scale=0.5, offset=-1.0, nodata=0.0)
    stored = torch.tensor([[0, 2, 65535]], dtype=torch.uint16)
    expected = torch.tensor([[math.nan, 0.0, 32766.5]])
    torch.testing.assert_close(to_model_unit(stored, reflectance), expected, equal_nan=True)
    assert stored.tolist() == [[0, 2, 65535]]  # a new tensor, the input unchanged
    told = to_model_unit(stored, reflectance, has_nodata=False)  # the caller knows better
    assert told[0, 0] == -1.0
    power = replace(sensors["sentinel1_grd"], unit="linear_power", model_unit="dB", nodata=-1.0)
    values = torch.tensor([100.0, 0.1, -1.0])
    out = to_model_unit(values, power, out=values)
    assert out is values  # converted in place
    torch.testing.assert_close(out, torch.tensor([20.0, -10.0, math.nan]), equal_nan=True)
    with pytest.raises(ValueError, match="sentinel1_grd: no conversion from kelvin to the"):
        check_convertible(replace(power, unit="kelvin"))
