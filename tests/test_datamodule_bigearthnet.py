"""The BigEarthNet data module: float values in registry band order, the choice of sensors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torchgeo.datasets import BigEarthNet

from tests.data.bigearthnet import data as bigearthnet_data
from tests.data.downstream_benchmarks import make


def test_bigearthnet_values_and_sensor_choice(roots: dict[str, Path]) -> None:
    datamodule = make("bigearthnet", roots, input_px=120)  # native: resizing is the identity
    batch = next(iter(datamodule.val_dataloader()))
    index = next(i for i, p in enumerate(bigearthnet_data.PATCHES) if p.split == "val")
    for band, polarization in enumerate(("VV", "VH")):  # float dB, in registry order
        expected = torch.from_numpy(bigearthnet_data.s1_values(index, polarization)[0])
        assert torch.equal(batch["inputs"]["sentinel1_grd"][0, band], expected)
    b02 = bigearthnet_data.s2_values(index, "B02")[0].astype(np.float32) * np.float32(1e-4)
    torch.testing.assert_close(batch["inputs"]["sentinel2_l2a"][0, 1], torch.from_numpy(b02))
    classes = BigEarthNet.class_sets[19]
    labels = bigearthnet_data.PATCHES[index].labels
    assert batch["target"][0].nonzero().flatten().tolist() == [classes.index(labels[0])]
    for sensors in (("sentinel1_grd",), ("sentinel2_l2a",)):
        single = make("bigearthnet", roots, sensors=sensors)
        assert list(next(iter(single.val_dataloader()))["inputs"]) == list(sensors)
