"""The SpaceNet 2 data module: Wald's degradation, padding and flips alike for every key."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from torch import Tensor

from model.datamodules.spacenet2 import crop_to_ratio, wald_degradation
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
    # The real grids: the 163-px MS chip is cropped to 160 px (PAN 650 -> 638 px, the same
    # ground), so each degraded pixel is one 4 x 4 block of the target.
    pan, ms = crop_to_ratio(torch.rand(1, 650, 650), torch.rand(8, 163, 162), 4)
    assert (pan.shape, ms.shape) == ((1, 638, 642), (8, 160, 160))
    shapes = [t.shape for t in wald_degradation(pan, ms, 4)]
    assert shapes == [(1, 160, 160), (8, 40, 40), (8, 160, 160)]
    with pytest.raises(ValueError, match="163 x 163 MS image cannot be degraded by ratio 4"):
        wald_degradation(pan, torch.zeros(8, 163, 163), 4)
    with pytest.raises(ValueError, match="3 x 3 MS image cannot be degraded by ratio 4"):
        crop_to_ratio(pan, torch.rand(8, 3, 3), 4)


def test_crop_to_ratio_keeps_the_top_left_and_its_ground() -> None:
    pan = torch.arange(41 * 43, dtype=torch.float32).reshape(1, 41, 43)
    ms = torch.arange(3 * 10 * 11, dtype=torch.float32).reshape(3, 10, 11)
    cropped_pan, cropped_ms = crop_to_ratio(pan, ms, 4)
    assert torch.equal(cropped_ms, ms[:, :8, :8])
    assert torch.equal(cropped_pan, pan[:, : round(8 * 41 / 10), : round(8 * 43 / 11)])
    # Multiples already: nothing is cropped.
    assert torch.equal(crop_to_ratio(pan, ms[:, :8, :8], 4)[1], ms[:, :8, :8])


def test_spacenet2_pads_and_flips_alike(roots: dict[str, Path]) -> None:
    torch.manual_seed(0)
    datamodule = make("spacenet2", roots)
    chips = spacenet2_data.chip_values(split_images=True)
    ms_px = spacenet2_data.MS_PX - spacenet2_data.MS_PX % 4  # cropped to a multiple of 4
    real = (..., slice(0, ms_px), slice(0, ms_px))

    def expected(chip: tuple[str, int]) -> dict[str, Tensor]:
        pan = torch.from_numpy(chips[chip]["PAN"].astype(np.float32))
        ms = torch.from_numpy(chips[chip]["MUL"].astype(np.float32))
        pan, ms = crop_to_ratio(pan, ms, 4)
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
