"""The SEN12MS-CR dataset class, on a tiny copy in the official layout."""

from __future__ import annotations

import shutil
from pathlib import Path

import matplotlib
import matplotlib.pyplot as plt
import numpy as np
import pytest
import torch
from matplotlib.figure import Figure
from torch import Tensor
from torchgeo.datasets import DatasetNotFoundError

from catalogs.layouts.sen12ms import Patch
from model.datasets.sen12ms_cr import SEN12MSCR
from tests.data.sen12ms_cr import data

matplotlib.use("Agg")

KEYS = {"image_s1": "s1", "image_s2_cloudy": "s2_cloudy", "target": "s2"}
# Sorted by season folder, scene, patch; (ROIs1158_spring, 1, 31) has 12 (L2A) bands.
TRAIN = [("ROIs1158_spring", 1, 30), ("ROIs1158_spring", 1, 31), ("ROIs2017_winter", 5, 7)]
L2A_INDEX = 1


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return data.make_sen12ms_cr(tmp_path_factory.mktemp("sen12ms_cr"), splits=True)


@pytest.fixture(scope="module")
def dataset(root: Path) -> SEN12MSCR:
    return SEN12MSCR(root)


def expected(triplet: tuple[str, int, int], modality: str) -> Tensor:
    """What the sample holds for the fixture's file: S2 in reflectance, S1 as written."""
    values = data.triplet_values(splits=True)[triplet][modality]
    if modality == "s1":
        return torch.from_numpy(values)
    return torch.from_numpy(values.astype(np.float32) * np.float32(1e-4))


def test_lists_the_split_triplets_in_order(dataset: SEN12MSCR) -> None:
    assert len(dataset) == len(TRAIN)
    assert dataset.triplets == [Patch(*t) for t in TRAIN]


@pytest.mark.parametrize(
    "split, triplet", [("val", ("ROIs2017_winter", 22, 4)), ("test", ("ROIs1158_spring", 106, 3))]
)
def test_val_and_test_are_the_official_scenes(
    root: Path, split: str, triplet: tuple[str, int, int]
) -> None:
    dataset = SEN12MSCR(root, split=split)
    assert dataset.triplets == [Patch(*triplet)]
    sample = dataset[0]
    for key, modality in KEYS.items():
        assert torch.equal(sample[key], expected(triplet, modality))


def test_splits_do_not_share_scenes(root: Path) -> None:
    scenes = [
        {(p.season_folder, p.scene) for p in SEN12MSCR(root, split=s).triplets}
        for s in SEN12MSCR.splits
    ]
    assert sum(map(len, scenes)) == len(set().union(*scenes))


def test_sample_keys_dtypes_shapes(dataset: SEN12MSCR) -> None:
    sample = dataset[0]
    assert set(sample) == set(KEYS)
    assert all(value.dtype == torch.float32 for value in sample.values())
    assert sample["image_s1"].shape == (2, data.SIZE, data.SIZE)
    assert sample["image_s2_cloudy"].shape == (13, data.SIZE, data.SIZE)
    assert sample["target"].shape == (13, data.SIZE, data.SIZE)


def test_values_round_trip(dataset: SEN12MSCR) -> None:
    for index in (0, 2):
        sample = dataset[index]
        for key, modality in KEYS.items():
            assert torch.equal(sample[key], expected(TRAIN[index], modality)), key


def test_s2_is_reflectance_and_s1_is_db(dataset: SEN12MSCR) -> None:
    sample = dataset[0]
    assert 0.0 < float(sample["target"].min()) and float(sample["target"].max()) <= 1.0
    assert float(sample["image_s1"].max()) < 20.0  # dB, not linear power or DN


def test_wrong_band_count_is_named(dataset: SEN12MSCR) -> None:
    with pytest.raises(ValueError, match=r"_s2_cloudy_1_p31\.tif: 12 bands, expected 13"):
        dataset[L2A_INDEX]


def test_index_out_of_range(dataset: SEN12MSCR) -> None:
    with pytest.raises(IndexError):
        dataset[len(dataset)]


def test_transforms_are_applied_last(root: Path) -> None:
    def transform(sample: dict[str, Tensor]) -> dict[str, Tensor]:
        return {**sample, "image_s1": sample["image_s1"] * 0 + 1, "seen": sample["target"][:1]}

    sample = SEN12MSCR(root, transforms=transform)[0]
    assert torch.equal(sample["image_s1"], torch.ones(2, data.SIZE, data.SIZE))
    assert torch.equal(sample["seen"], expected(TRAIN[0], "s2")[:1])


def test_incomplete_and_broken_triplets(tmp_path: Path) -> None:
    root = data.make_sen12ms_cr(tmp_path, broken=True)
    dataset = SEN12MSCR(root)
    # The triplet without s2_cloudy is not listed; the misnamed file and stray folder are ignored.
    assert [(p.season_folder, p.scene, p.patch) for p in dataset.triplets] == [
        *TRAIN[:2],
        ("ROIs1158_spring", 1, 41),
        *TRAIN[2:],
        ("ROIs2017_winter", 5, 8),
    ]
    with pytest.raises(ValueError, match=r"s2_cloudy_1_p41\.tif: unreadable raster"):
        dataset[2]
    with pytest.raises(ValueError, match=r"_s1_5_p8\.tif: 3 bands, expected 2"):
        dataset[4]


def test_plot(dataset: SEN12MSCR) -> None:
    sample = dataset[0]
    figure = dataset.plot(sample, suptitle="triplet")
    assert isinstance(figure, Figure)
    assert len(figure.axes) == 3
    plt.close(figure)
    figure = dataset.plot({**sample, "prediction": sample["target"]}, show_titles=False)
    assert len(figure.axes) == 4
    assert all(ax.get_title() == "" for ax in figure.axes)
    plt.close(figure)


def test_plot_survives_nan_backscatter(dataset: SEN12MSCR) -> None:
    sample = dataset[0]
    sample["image_s1"][:, :2] = float("nan")
    plt.close(dataset.plot(sample))


def test_missing_data(tmp_path: Path) -> None:
    with pytest.raises(DatasetNotFoundError, match="Dataset not found"):
        SEN12MSCR(tmp_path)
    with pytest.raises(DatasetNotFoundError):
        SEN12MSCR(tmp_path / "absent")


def test_missing_partner_folder(root: Path, tmp_path: Path) -> None:
    copy = shutil.copytree(root, tmp_path / "copy")
    for folder in copy.glob("*_s2_cloudy"):
        shutil.rmtree(folder)
    with pytest.raises(DatasetNotFoundError):
        SEN12MSCR(copy)


def test_invalid_split(root: Path) -> None:
    with pytest.raises(ValueError, match="split 'foo' is not one of"):
        SEN12MSCR(root, split="foo")


def test_loads_the_sample_world(sample_world: Path) -> None:
    dataset = SEN12MSCR(sample_world / "raw" / "sen12ms-cr")
    assert len(dataset) == 2
    sample = dataset[0]
    assert sample["image_s1"].shape == (2, 256, 256)
    assert sample["target"].shape == sample["image_s2_cloudy"].shape == (13, 256, 256)
    # Clouds brighten the visible bands: the cloudy blue band is brighter on average.
    blue = SEN12MSCR.s2_band_names.index("B02")
    assert float(sample["image_s2_cloudy"][blue].mean()) > float(sample["target"][blue].mean())
