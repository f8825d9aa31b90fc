"""The SpaceNet 2 PAN + MS dataset class, on a tiny copy of the training layout."""

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

from model.datasets.spacenet2 import SpaceNet2PanMS
from tests.data.spacenet2 import data

matplotlib.use("Agg")

TRAIN = [("AOI_2_Vegas", 1), ("AOI_2_Vegas", 2), ("AOI_2_Vegas", 3), ("AOI_3_Paris", 5)]


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return data.make_spacenet2(tmp_path_factory.mktemp("spacenet2"), split_images=True)


@pytest.fixture(scope="module")
def dataset(root: Path) -> SpaceNet2PanMS:
    return SpaceNet2PanMS(root)


def expected(chip: tuple[str, int], product: str) -> Tensor:
    return torch.from_numpy(data.chip_values(split_images=True)[chip][product].astype(np.float32))


def test_lists_the_split_chips_in_order(dataset: SpaceNet2PanMS) -> None:
    assert len(dataset) == len(TRAIN)
    assert dataset.chips == TRAIN


@pytest.mark.parametrize(
    "split, chip", [("val", ("AOI_3_Paris", 18)), ("test", ("AOI_3_Paris", 29))]
)
def test_val_and_test_by_image_number(root: Path, split: str, chip: tuple[str, int]) -> None:
    dataset = SpaceNet2PanMS(root, split=split)
    assert dataset.chips == [chip]
    sample = dataset[0]
    assert torch.equal(sample["image_pan"], expected(chip, "PAN"))
    assert torch.equal(sample["image_ms"], expected(chip, "MUL"))


def test_sample_keys_dtypes_shapes(dataset: SpaceNet2PanMS) -> None:
    sample = dataset[0]
    assert set(sample) == {"image_pan", "image_ms"}
    assert sample["image_pan"].dtype == sample["image_ms"].dtype == torch.float32
    assert sample["image_pan"].shape == (1, data.PAN_PX, data.PAN_PX)
    assert sample["image_ms"].shape == (8, data.MS_PX, data.MS_PX)


def test_values_round_trip(dataset: SpaceNet2PanMS) -> None:
    for index, chip in enumerate(TRAIN):
        sample = dataset[index]
        assert torch.equal(sample["image_pan"], expected(chip, "PAN"))
        assert torch.equal(sample["image_ms"], expected(chip, "MUL"))


def test_building_mask_is_the_polygons_on_the_pan_grid(root: Path) -> None:
    dataset = SpaceNet2PanMS(root, buildings=True)
    for index, (_, image) in enumerate(dataset.chips):
        mask = dataset[index]["mask"]
        assert mask.dtype == torch.long
        assert mask.shape == (data.PAN_PX, data.PAN_PX)
        want = torch.zeros(data.PAN_PX, data.PAN_PX, dtype=torch.long)
        for polygon in data.BUILDINGS[image]:  # axis-aligned (column, row) corners
            (c0, r0), (c1, r1) = polygon[0], polygon[2]
            want[r0:r1, c0:c1] = 1  # the pixels whose centres lie inside
        assert torch.equal(mask, want), image


def test_buildings_lists_only_chips_with_a_geojson(root: Path, tmp_path: Path) -> None:
    copy = shutil.copytree(root, tmp_path / "copy")
    data.chip_path(copy, "AOI_2_Vegas", 2, "buildings").unlink()
    assert ("AOI_2_Vegas", 2) not in SpaceNet2PanMS(copy, buildings=True).chips
    assert ("AOI_2_Vegas", 2) in SpaceNet2PanMS(copy).chips


def test_damaged_files(root: Path, tmp_path: Path) -> None:
    copy = shutil.copytree(root, tmp_path / "copy")
    data.damage(copy)
    dataset = SpaceNet2PanMS(copy, buildings=True)
    assert dataset.chips == TRAIN  # the misnamed PAN and the test folder are ignored
    with pytest.raises(ValueError, match=r"buildings_AOI_2_Vegas_img1\.geojson: unreadable"):
        dataset[0]
    with pytest.raises(ValueError, match=r"PAN_AOI_2_Vegas_img2\.tif: unreadable raster"):
        dataset[1]
    with pytest.raises(ValueError, match=r"MUL_AOI_3_Paris_img5\.tif: 4 bands, expected 8"):
        dataset[3]


def test_chip_without_ms_is_not_listed(root: Path, tmp_path: Path) -> None:
    copy = shutil.copytree(root, tmp_path / "copy")
    data.chip_path(copy, "AOI_2_Vegas", 3, "MUL").unlink()
    assert SpaceNet2PanMS(copy).chips == [c for c in TRAIN if c != ("AOI_2_Vegas", 3)]


def test_transforms_are_applied_last(root: Path) -> None:
    def transform(sample: dict[str, Tensor]) -> dict[str, Tensor]:
        return {key: value / 2 for key, value in sample.items()}

    sample = SpaceNet2PanMS(root, transforms=transform)[0]
    assert torch.equal(sample["image_pan"], expected(TRAIN[0], "PAN") / 2)


def test_plot(root: Path) -> None:
    dataset = SpaceNet2PanMS(root, buildings=True)
    sample = dataset[0]
    figure = dataset.plot(sample, suptitle="chip")
    assert isinstance(figure, Figure)
    assert len(figure.axes) == 3
    pan, rgb = (np.asarray(ax.images[0].get_array()) for ax in figure.axes[:2])
    assert pan.shape == tuple(sample["image_pan"].shape[1:])
    # each band stretched on its own, between its 2nd and 98th percentiles
    assert rgb.shape == (*sample["image_ms"].shape[1:], 3)
    assert np.allclose(rgb.min(axis=(0, 1)), 0.0) and np.allclose(rgb.max(axis=(0, 1)), 1.0)
    assert pan.min() == 0.0 and pan.max() == 1.0
    plt.close(figure)
    prediction = torch.nn.functional.interpolate(sample["image_ms"][None], size=data.PAN_PX)[0]
    figure = dataset.plot(
        {
            "image_pan": sample["image_pan"],
            "image_ms": sample["image_ms"],
            "prediction": prediction,
        },
        show_titles=False,
    )
    assert len(figure.axes) == 3
    assert all(ax.get_title() == "" for ax in figure.axes)
    plt.close(figure)


def test_missing_data(tmp_path: Path) -> None:
    with pytest.raises(DatasetNotFoundError, match="Dataset not found"):
        SpaceNet2PanMS(tmp_path)
    (tmp_path / "AOI_2_Vegas_Train" / "PAN").mkdir(parents=True)
    with pytest.raises(DatasetNotFoundError):
        SpaceNet2PanMS(tmp_path)


def test_invalid_split(root: Path) -> None:
    with pytest.raises(ValueError, match="split 'valid' is not one of"):
        SpaceNet2PanMS(root, split="valid")


def test_loads_the_sample_world(sample_world: Path) -> None:
    dataset = SpaceNet2PanMS(sample_world / "raw" / "spacenet2", buildings=True)
    assert dataset.chips == [("AOI_2_Vegas", 1), ("AOI_2_Vegas", 2)]
    sample = dataset[0]
    assert sample["image_pan"].shape == (1, 650, 650)
    assert sample["image_ms"].shape == (8, 163, 163)
    mask = sample["mask"].bool()
    assert mask.any() and not mask.all()
    # The sample world's roofs are brighter than their surroundings in PAN.
    pan = sample["image_pan"][0]
    assert float(pan[mask].mean()) > float(pan[~mask].mean())
