"""The SEN12MS-CR data module: random crops and flips alike for inputs and target, centre crops."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from tests.data.downstream_benchmarks import SEN12MS_CR_PX, VAL_TRIPLET, make, placements
from tests.data.sen12ms_cr import data as sen12ms_cr_data


def test_sen12ms_cr_crops_and_flips_inputs_and_target_alike(roots: dict[str, Path]) -> None:
    torch.manual_seed(0)
    datamodule = make("sen12ms_cr", roots, batch_size=1)
    source = datamodule.datasets["train"].source
    samples = [source[i] for i in range(len(source))]
    flips_seen = set()
    for _ in range(4):
        for item in datamodule.datasets["train"]:
            matches = [
                placements(item["inputs"]["sentinel2_l1c"], s["image_s2_cloudy"]) for s in samples
            ]
            index = next(i for i, found in enumerate(matches) if found)
            where = matches[index]
            assert len(where) == 1
            assert placements(item["inputs"]["sentinel1_grd"], samples[index]["image_s1"]) == where
            assert placements(item["target"], samples[index]["target"]) == where
            flips_seen |= {flips for *_, flips in [(*w[:2], w[2:]) for w in where]}
    assert len(flips_seen) > 1
    # Validation: the centre crop.
    val = datamodule.datasets["val"][0]
    values = sen12ms_cr_data.triplet_values(splits=True)[VAL_TRIPLET]
    start = (sen12ms_cr_data.SIZE - SEN12MS_CR_PX) // 2
    window = slice(start, start + SEN12MS_CR_PX)
    assert torch.equal(
        val["inputs"]["sentinel1_grd"], torch.from_numpy(values["s1"][:, window, window])
    )
    expected = values["s2"][:, window, window].astype(np.float32) * np.float32(1e-4)
    assert torch.equal(val["target"], torch.from_numpy(expected))
