"""The ISPRS Vaihingen + DSM dataset class, on a tiny copy in the layout Vaihingen2D reads."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import matplotlib
import matplotlib.pyplot as plt
import numpy as np
import pytest
import torch
from matplotlib.figure import Figure
from torch import Tensor
from torchgeo.datasets import DatasetNotFoundError, Vaihingen2D

from model.datasets.vaihingen import VaihingenDSM
from tests.data.vaihingen import data

matplotlib.use("Agg")

BUILDING, TREE = 2, 4  # Vaihingen2D's indices of the fixture's two classes


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return data.make_vaihingen(tmp_path_factory.mktemp("vaihingen"))


@pytest.fixture(scope="module")
def dataset(root: Path) -> VaihingenDSM:
    return VaihingenDSM(root)


def expected_mask() -> Tensor:
    mask = torch.full((data.HEIGHT, data.WIDTH), TREE, dtype=torch.long)
    mask[:, : data.WIDTH // 2] = BUILDING
    return mask


def test_splits_are_vaihingen2d_areas() -> None:
    for split, names in Vaihingen2D.splits.items():
        areas = {int(re.search(r"area(\d+)", name)[1]) for name in names}
        assert VaihingenDSM.split_areas[split] == areas
    assert VaihingenDSM.classes == Vaihingen2D.classes
    assert VaihingenDSM.colormap == Vaihingen2D.colormap


def test_lists_areas_with_all_three_files(root: Path, dataset: VaihingenDSM) -> None:
    # Area 1 (train) has its ground truth at the root; area 2 (test) in gts_for_participants;
    # area 4 (test) has none and is not listed.
    assert len(dataset) == 1
    assert dataset.files == [
        {
            "image": data.area_path(root, 1, "cir"),
            "dsm": data.area_path(root, 1, "dsm"),
            "mask": data.area_path(root, 1, "labels"),
        }
    ]
    test = VaihingenDSM(root, split="test")
    assert test.files == [
        {
            "image": data.area_path(root, 2, "cir"),
            "dsm": data.area_path(root, 2, "dsm"),
            "mask": data.area_path(root, 2, "labels", "gts_for_participants"),
        }
    ]


def test_sample_keys_dtypes_shapes(dataset: VaihingenDSM) -> None:
    sample = dataset[0]
    assert set(sample) == {"image", "dsm", "mask"}
    assert sample["image"].dtype == sample["dsm"].dtype == torch.float32
    assert sample["mask"].dtype == torch.long
    assert sample["image"].shape == (3, data.HEIGHT, data.WIDTH)
    assert sample["dsm"].shape == (1, data.HEIGHT, data.WIDTH)
    assert sample["mask"].shape == (data.HEIGHT, data.WIDTH)


@pytest.mark.parametrize("split, area", [("train", 1), ("test", 2)])
def test_values_round_trip(root: Path, split: str, area: int) -> None:
    sample = VaihingenDSM(root, split=split)[0]
    assert torch.equal(sample["image"], torch.from_numpy(data.cir_values(area).astype(np.float32)))
    assert torch.equal(sample["dsm"], torch.from_numpy(data.dsm_values(area)))
    assert torch.equal(sample["mask"], expected_mask())


def test_every_isprs_colour_is_its_class(root: Path, tmp_path: Path) -> None:
    copy = shutil.copytree(root, tmp_path / "copy")
    colours = data.label_values()
    for index, colour in enumerate(VaihingenDSM.colormap):
        colours[:, 0, index] = colour
    colours[:, 1, 0] = (10, 20, 30)  # no class's colour: clutter, as Vaihingen2D
    data.write_tiff(data.area_path(copy, 1, "labels"), colours, data.area_transform(1))
    mask = VaihingenDSM(copy)[0]["mask"]
    assert mask[0, : len(VaihingenDSM.classes)].tolist() == list(range(len(VaihingenDSM.classes)))
    assert int(mask[1, 0]) == 0
    assert torch.equal(mask[2:], expected_mask()[2:])


def test_ungeoreferenced_files_load(root: Path, tmp_path: Path) -> None:
    copy = shutil.copytree(root, tmp_path / "copy")
    data.write_tiff(data.area_path(copy, 4, "labels"), data.label_values(), None)
    dataset = VaihingenDSM(copy, split="test")
    assert len(dataset) == 2
    sample = dataset[1]  # area 4, like the real files without a CRS
    assert torch.equal(sample["dsm"], torch.from_numpy(data.dsm_values(4)))


def test_damaged_files(root: Path, tmp_path: Path) -> None:
    copy = shutil.copytree(root, tmp_path / "copy")
    data.damage(copy)
    # The misnamed orthophoto and the orphan DSM are not listed.
    assert len(VaihingenDSM(copy)) == 1
    with pytest.raises(ValueError, match=r"dsm_09cm_matching_area1\.tif: 2 bands, expected 1"):
        VaihingenDSM(copy)[0]
    with pytest.raises(ValueError, match=r"top_mosaic_09cm_area2\.tif: unreadable raster"):
        VaihingenDSM(copy, split="test")[0]


def test_grid_mismatch_is_named(root: Path, tmp_path: Path) -> None:
    copy = shutil.copytree(root, tmp_path / "copy")
    data.write_tiff(
        data.area_path(copy, 1, "dsm"), data.dsm_values(1)[:, :-1], data.area_transform(1)
    )
    with pytest.raises(ValueError, match=r"dsm_09cm_matching_area1\.tif: 23 x 32 pixels"):
        VaihingenDSM(copy)[0]


def test_transforms_are_applied_last(root: Path) -> None:
    def transform(sample: dict[str, Tensor]) -> dict[str, Tensor]:
        return {**sample, "dsm": sample["dsm"] - sample["dsm"].min()}

    sample = VaihingenDSM(root, transforms=transform)[0]
    assert float(sample["dsm"].min()) == 0.0


def test_plot(dataset: VaihingenDSM) -> None:
    sample = dataset[0]
    figure = dataset.plot(sample, suptitle="area 1")
    assert isinstance(figure, Figure)
    assert len([ax for ax in figure.axes if ax.get_label() != "<colorbar>"]) == 3
    plt.close(figure)
    figure = dataset.plot({**sample, "prediction": sample["mask"].flip(1)}, show_titles=False)
    assert len([ax for ax in figure.axes if ax.get_label() != "<colorbar>"]) == 4
    assert all(ax.get_title() == "" for ax in figure.axes)
    plt.close(figure)


def test_missing_data(tmp_path: Path) -> None:
    with pytest.raises(DatasetNotFoundError, match="Dataset not found"):
        VaihingenDSM(tmp_path)


def test_missing_dsm(root: Path, tmp_path: Path) -> None:
    copy = shutil.copytree(root, tmp_path / "copy")
    shutil.rmtree(copy / "dsm")
    with pytest.raises(DatasetNotFoundError):
        VaihingenDSM(copy)


def test_invalid_split(root: Path) -> None:
    with pytest.raises(ValueError, match="split 'val' is not one of"):
        VaihingenDSM(root, split="val")


def test_loads_the_sample_world(sample_world: Path) -> None:
    root = sample_world / "raw" / "vaihingen"
    train, test = VaihingenDSM(root), VaihingenDSM(root, split="test")
    assert (len(train), len(test)) == (1, 1)  # areas 1 and 2
    sample = train[0]
    assert sample["image"].shape == (3, 512, 512)
    assert sample["dsm"].shape == (1, 512, 512)
    mask = sample["mask"]
    assert set(mask.unique().tolist()) <= set(range(len(VaihingenDSM.classes)))
    # Buildings stand above impervious ground in the DSM.
    dsm = sample["dsm"][0]
    assert float(dsm[mask == BUILDING].mean()) > float(dsm[mask == 1].mean())
