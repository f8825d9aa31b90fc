"""The Vaihingen data module: crops alike for inputs and mask, tiles, held-out areas, statistics."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from model.datamodules import VaihingenDataModule
from model.datamodules.vaihingen import tile_origins
from tests.data.downstream_benchmarks import EXTRA_TRAIN_AREA, VAIHINGEN_PX, make, placements
from tests.data.vaihingen import data as vaihingen_data


def test_vaihingen_crops_inputs_and_mask_alike(roots: dict[str, Path]) -> None:
    torch.manual_seed(0)
    datamodule = make("vaihingen", roots, crops_per_area=4)
    area = datamodule.datasets["train"].source[0]
    dsm = area["dsm"] - area["dsm"].min()  # heights above the area's lowest pixel
    assert len(datamodule.datasets["train"]) == 2 * 4
    seen = set()
    for item in datamodule.datasets["train"]:
        where = placements(item["inputs"]["cir"], area["image"])
        assert len(where) == 1
        assert placements(item["inputs"]["dsm"], dsm) == where
        assert where <= placements(item["target"], area["mask"])
        assert item["valid"].all()
        seen |= where
    assert len(seen) > 1


def test_vaihingen_tiles_count_each_pixel_once(roots: dict[str, Path]) -> None:
    datamodule = make("vaihingen", roots)
    assert tile_origins(24, 16) == [(0, 0), (8, 16)] and tile_origins(32, 16) == [(0, 0), (16, 16)]
    test = datamodule.datasets["test"]
    area = test.source[0]
    height, width = area["mask"].shape
    counts = torch.zeros(height, width, dtype=torch.long)
    stitched = torch.full((height, width), -1)
    batches = list(datamodule.test_dataloader())
    tiles = [
        (r, c)
        for r, _ in tile_origins(height, VAIHINGEN_PX)
        for c, _ in tile_origins(width, VAIHINGEN_PX)
    ]
    assert sum(len(b["target"]) for b in batches) == len(tiles)
    items = [
        (b["target"][i], b["valid"][i, 0], b["inputs"]["cir"][i])
        for b in batches
        for i in range(len(b["target"]))
    ]
    for (top, left), (target, valid, cir) in zip(tiles, items, strict=True):
        window = (slice(top, top + VAIHINGEN_PX), slice(left, left + VAIHINGEN_PX))
        assert torch.equal(cir, area["image"][(..., *window)])
        counts[window] += valid
        stitched[window] = torch.where(valid, target, stitched[window])
    assert (counts == 1).all()
    assert torch.equal(stitched, area["mask"])
    # Without val_areas, validation is the test split.
    assert datamodule.datasets["val"].items == test.items


def test_vaihingen_val_areas_are_held_out(roots: dict[str, Path]) -> None:
    datamodule = make("vaihingen", roots, val_areas=[EXTRA_TRAIN_AREA], crops_per_area=2)
    root = roots["vaihingen"]
    assert [f["image"] for f in datamodule.datasets["train"].source.files] == [
        vaihingen_data.area_path(root, 1, "cir")
    ]
    assert [f["image"] for f in datamodule.datasets["val"].source.files] == [
        vaihingen_data.area_path(root, EXTRA_TRAIN_AREA, "cir")
    ]
    assert len(datamodule.datasets["train"]) == 2 and len(datamodule.datasets["val"]) == 4
    absent = VaihingenDataModule(roots["vaihingen"], input_px=VAIHINGEN_PX, val_areas=[5])
    with pytest.raises(ValueError, match=r"val_areas \[5\]"):
        absent.setup("fit")


def test_vaihingen_statistics(roots: dict[str, Path]) -> None:
    statistics = make("vaihingen", roots).statistics()
    cir = vaihingen_data.cir_values(1).reshape(3, -1).astype(np.float64)  # areas 1 and 3 alike
    torch.testing.assert_close(statistics["cir"][0], torch.from_numpy(cir.mean(1)).float())
    torch.testing.assert_close(statistics["cir"][1], torch.from_numpy(cir.std(1)).float())
    dsm = vaihingen_data.dsm_values(1).astype(np.float64)
    torch.testing.assert_close(
        statistics["dsm"][0], torch.tensor([dsm.mean() - dsm.min()], dtype=torch.float32)
    )
