"""The downstream data modules' common behaviour: batches, subsets, statistics, missing values."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from affine import Affine
from torchgeo.datasets import BigEarthNet

from model.datamodules import (
    BigEarthNetDataModule,
    DownstreamDataModule,
    SEN12MSCRDataModule,
    SpaceNet2DataModule,
    VaihingenDataModule,
)
from tests.data.downstream_benchmarks import SEN12MS_CR_PX, TRAIN_ROWS, VAL_TRIPLET, make
from tests.data.rasters import write_geotiff
from tests.data.sen12ms_cr import data as sen12ms_cr_data

# Task -> (input shapes, other keys' shapes and dtypes) of one item.
ITEM_FORMATS: dict[
    str, tuple[dict[str, tuple[int, ...]], dict[str, tuple[tuple[int, ...], torch.dtype]]]
] = {
    "bigearthnet": (
        {"sentinel2_l2a": (12, 64, 64), "sentinel1_grd": (2, 64, 64)},
        {"target": ((19,), torch.float32)},
    ),
    "sen12ms_cr": (
        {"sentinel2_l1c": (13, 8, 8), "sentinel1_grd": (2, 8, 8)},
        {"target": ((13, 8, 8), torch.float32)},
    ),
    "spacenet2": (
        {"worldview3_ms": (8, 16, 16), "worldview3_pan": (1, 16, 16)},
        {
            "target": ((8, 16, 16), torch.float32),
            "valid": ((1, 16, 16), torch.bool),
            "pan_low": ((1, 16, 16), torch.float32),
            "ms_low": ((8, 4, 4), torch.float32),
        },
    ),
    "vaihingen": (
        {"cir": (3, 16, 16), "dsm": (1, 16, 16)},
        {"target": ((16, 16), torch.int64), "valid": ((1, 16, 16), torch.bool)},
    ),
}


@pytest.mark.parametrize("task", list(ITEM_FORMATS))
def test_batch_format(task: str, roots: dict[str, Path]) -> None:
    datamodule = make(task, roots, batch_size=2)
    input_shapes, others = ITEM_FORMATS[task]
    assert datamodule.input_sensors == tuple(input_shapes)
    loaders = (
        datamodule.train_dataloader(),
        datamodule.val_dataloader(),
        datamodule.test_dataloader(),
    )
    for loader in loaders:
        if not len(loader.dataset):  # the BigEarthNet fixture has no test patch
            continue
        batch = next(iter(loader))
        size = len(batch["target"])
        assert set(batch) == {"inputs", *others}
        assert list(batch["inputs"]) == list(input_shapes)
        for name, shape in input_shapes.items():
            assert batch["inputs"][name].shape == (size, *shape)
            assert batch["inputs"][name].dtype == torch.float32
            assert torch.isfinite(batch["inputs"][name]).all()
        for key, (shape, dtype) in others.items():
            assert batch[key].shape == (size, *shape) and batch[key].dtype == dtype
    statistics = datamodule.statistics()
    assert list(statistics) == list(input_shapes)
    for name, (mean, std) in statistics.items():
        assert mean.shape == std.shape == (input_shapes[name][0],)
        assert mean.dtype == std.dtype == torch.float32 and (std >= 1e-6).all()


def test_target_info(roots: dict[str, Path]) -> None:
    bigearthnet = make("bigearthnet", roots).target_info
    assert bigearthnet["num_classes"] == 19
    assert bigearthnet["class_names"] == tuple(BigEarthNet.class_sets[19])
    assert make("sen12ms_cr", roots).target_info | {"band_names": None} == {
        "task": "image_regression",
        "sensor": "sentinel2_l1c",
        "channels": 13,
        "band_names": None,
        "data_range": 1.0,
    }
    spacenet2 = make("spacenet2", roots).target_info
    assert (spacenet2["sensor"], spacenet2["channels"], spacenet2["data_range"]) == (
        "worldview3_ms",
        8,
        2047.0,
    )
    vaihingen = make("vaihingen", roots).target_info
    assert (vaihingen["num_classes"], vaihingen["ignore_index"]) == (6, 0)
    assert vaihingen["class_names"][0] == "Clutter/background"


def test_train_fraction_draws_a_seeded_subset(roots: dict[str, Path]) -> None:
    def subset(**kwargs: object) -> DownstreamDataModule:
        return make("bigearthnet", roots, statistics_samples=1, **kwargs)

    first = subset(train_fraction=0.1)
    assert len(first.train_indices) == round(0.1 * TRAIN_ROWS)
    assert len(first.train_dataloader().dataset) == len(first.train_indices)
    assert subset(train_fraction=0.1, seed=0).train_indices == first.train_indices
    assert subset(train_fraction=0.1, seed=1).train_indices != first.train_indices
    assert subset().train_indices == list(range(TRAIN_ROWS))
    # Vaihingen counts areas (two here): at least one is kept.
    vaihingen = make("vaihingen", roots, train_fraction=0.01, crops_per_area=3)
    assert len(vaihingen.train_indices) == 1 and len(vaihingen.datasets["train"]) == 3


@pytest.mark.parametrize(
    "make_bad, message",
    [
        (
            lambda: BigEarthNetDataModule("x", sensors=("sentinel2_l1c",)),
            r"'sentinel2_l1c'.*sentinel1_grd, sentinel2_l2a",
        ),
        (lambda: BigEarthNetDataModule("x", sensors=()), "sentinel1_grd, sentinel2_l2a"),
        (
            lambda: BigEarthNetDataModule("x", sensors=("sentinel1_grd", "sentinel1_grd")),
            "each once",
        ),
        (lambda: SEN12MSCRDataModule("x", train_fraction=0.0), r"train_fraction .* got 0\.0"),
        (lambda: SpaceNet2DataModule("x", train_fraction=1.5), r"train_fraction .* got 1\.5"),
        (lambda: SpaceNet2DataModule("x", ratio=1), "ratio must be at least 2, got 1"),
        (lambda: VaihingenDataModule("x", batch_size=0), "batch_size must be at least 1, got 0"),
        (lambda: VaihingenDataModule("x", crops_per_area=0), "crops_per_area"),
        (lambda: VaihingenDataModule("x", val_areas=(2,)), r"val_areas \(2,\)"),
    ],
)
def test_bad_arguments(make_bad: Callable[[], object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        make_bad()


def test_statistics_before_setup() -> None:
    with pytest.raises(RuntimeError, match="setup"):
        SEN12MSCRDataModule("x").statistics()


def test_missing_inputs_become_the_training_mean(tmp_path: Path, sen12ms_cr_root: Path) -> None:
    root = shutil.copytree(sen12ms_cr_root, tmp_path / "copy")
    values = sen12ms_cr_data.triplet_values(splits=True)[VAL_TRIPLET]
    values["s1"][1, 8, 8] = np.nan  # nodata of S1
    values["s2_cloudy"][3, 9, 7] = 0  # nodata of S2
    for modality in ("s1", "s2_cloudy"):
        path = sen12ms_cr_data.triplet_path(root, *VAL_TRIPLET, modality)
        write_geotiff(
            path, values[modality], sen12ms_cr_data.CRS, Affine(*sen12ms_cr_data.TRANSFORM)
        )
    datamodule = SEN12MSCRDataModule(root, input_px=SEN12MS_CR_PX)
    datamodule.setup("validate")
    item = datamodule.datasets["val"][0]
    statistics = datamodule.statistics()
    start = (sen12ms_cr_data.SIZE - SEN12MS_CR_PX) // 2
    assert (
        item["inputs"]["sentinel1_grd"][1, 8 - start, 8 - start]
        == statistics["sentinel1_grd"][0][1]
    )
    assert (
        item["inputs"]["sentinel2_l1c"][3, 9 - start, 7 - start]
        == statistics["sentinel2_l1c"][0][3]
    )
    assert torch.isfinite(item["inputs"]["sentinel1_grd"]).all()
