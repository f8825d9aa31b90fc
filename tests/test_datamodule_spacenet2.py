"""The SpaceNet 2 data module: Wald's degradation, padding and flips alike for every key."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from torch import Tensor

from model.datamodules.spacenet2 import wald_degradation
from tests.data.downstream_benchmarks import SPACENET_PX, SPACENET_VAL, make, placements
from tests.data.spacenet2 import data as spacenet2_data


def test_wald_degradation_is_an_area_mean() -> None:
    pan = torch.rand(1, 48, 48)
    ms = torch.rand(8, 12, 12)
    pan_low, ms_low, ms_up = wald_degradation(pan, ms, 4)
    torch.testing.assert_close(pan_low, pan.reshape(1, 12, 4, 12, 4).mean((2, 4)))
    torch.testing.assert_close(ms_low, ms.reshape(8, 3, 4, 3, 4).mean((2, 4)))
    assert ms_up.shape == ms.shape
    torch.testing.assert_close(ms_up.mean(), ms_low.mean(), atol=0.05, rtol=0)
    # The real grids: PAN 650 px (162.5 MS pixels) goes exactly onto the 163-px MS grid.
    shapes = [
        t.shape for t in wald_degradation(torch.zeros(1, 650, 650), torch.zeros(8, 163, 163), 4)
    ]
    assert shapes == [(1, 163, 163), (8, 40, 40), (8, 163, 163)]
    with pytest.raises(ValueError, match="ratio 4"):
        wald_degradation(pan, torch.rand(8, 3, 3), 4)


def test_spacenet2_pads_and_flips_alike(roots: dict[str, Path]) -> None:
    torch.manual_seed(0)
    datamodule = make("spacenet2", roots)
    chips = spacenet2_data.chip_values(split_images=True)
    ms_px = spacenet2_data.MS_PX
    real = (..., slice(0, ms_px), slice(0, ms_px))

    def expected(chip: tuple[str, int]) -> dict[str, Tensor]:
        pan = torch.from_numpy(chips[chip]["PAN"].astype(np.float32))
        ms = torch.from_numpy(chips[chip]["MUL"].astype(np.float32))
        pan_low, ms_low, ms_up = wald_degradation(pan, ms, 4)
        return {"worldview3_pan": pan_low, "worldview3_ms": ms_up, "target": ms, "ms_low": ms_low}

    val = datamodule.datasets["val"][0]
    reference = expected(SPACENET_VAL)
    assert val["valid"].sum() == ms_px * ms_px and val["valid"][real].all()
    for key, values in reference.items():
        item = val["inputs"][key] if key.startswith("worldview3") else val[key]
        assert torch.equal(item[..., : values.shape[-2], : values.shape[-1]], values)
    assert torch.equal(
        val["target"][:, ms_px:],
        val["target"][:, ms_px - 1 : ms_px].expand(-1, SPACENET_PX - ms_px, -1),
    )  # bottom padding replicates the last row
    assert torch.equal(val["pan_low"], val["inputs"]["worldview3_pan"])
    flips_seen = set()
    train_chips = spacenet2_data.AOIS
    for _ in range(4):
        for item, index in zip(datamodule.datasets["train"], datamodule.train_indices, strict=True):
            aoi, image = datamodule.datasets["train"].source.chips[index]
            assert aoi in train_chips
            reference = expected((aoi, image))
            found = placements(item["target"][real], reference["target"])
            assert len(found) == 1
            for key in ("worldview3_pan", "worldview3_ms"):
                assert placements(item["inputs"][key][real], reference[key]) == found
            low_px = ms_px // 4
            assert placements(item["ms_low"][..., :low_px, :low_px], reference["ms_low"]) == found
            flips_seen |= found
    assert len(flips_seen) > 1
