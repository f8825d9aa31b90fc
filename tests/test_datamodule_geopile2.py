"""Normalisation from the store's statistics, pair-aligned augmentation, and the datamodule
driving a real Lightning Trainer."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import lightning
import pytest
import torch

from catalogs.store_format import read_manifest
from model.datamodules.geopile2 import GeoPile2DataModule
from model.datasets.transforms import (
    SensorNormalize,
    band_moments,
    evaluation_crop,
    pretraining_augmentation,
)
from tests.pipeline_setup import busy_reference


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory, sample_world: Path) -> Path:
    return busy_reference(tmp_path_factory, sample_world).store


def bright_spot(size: int, channels: int, row: int, col: int) -> torch.Tensor:
    image = torch.zeros(channels, size, size)
    image[:, row : row + 3, col : col + 3] = 1.0
    return image


def spot_centre(channel: torch.Tensor) -> tuple[float, float]:
    weights = channel.clamp(min=0)
    ys, xs = torch.meshgrid(
        torch.arange(channel.shape[0]), torch.arange(channel.shape[1]), indexing="ij"
    )
    total = weights.sum()
    return float((ys * weights).sum() / total), float((xs * weights).sum() / total)


def test_augmentation_moves_a_chip_and_its_partner_alike() -> None:
    torch.manual_seed(0)
    spots = [(10, 40), (30, 12), (25, 25), (44, 8), (5, 50), (33, 33)]
    image = torch.stack([bright_spot(64, 3, r, c) for r, c in spots])
    partner_rows = torch.tensor([0, 2, 3, 5])
    partner = torch.stack([bright_spot(64, 1, *spots[r]) for r in partner_rows.tolist()]) * 7
    augment = pretraining_augmentation(crop_px=48, crop_scale=(0.6, 0.9))
    out = augment({"image": image, "image_dsm": partner, "rows_dsm": partner_rows})
    assert out["image"].shape == (6, 3, 48, 48) and out["image_dsm"].shape == (4, 1, 48, 48)
    moved = 0
    for k, row in enumerate(partner_rows.tolist()):
        if out["image"][row, 0].sum() == 0:  # the spot was cropped away: so must the partner's
            assert out["image_dsm"][k, 0].sum() == 0
            continue
        chip_at = spot_centre(out["image"][row, 0])
        assert spot_centre(out["image_dsm"][k, 0]) == pytest.approx(chip_at, abs=1e-4)
        torch.testing.assert_close(out["image_dsm"][k, 0], out["image"][row, 0] * 7)
        moved += chip_at != pytest.approx(spot_centre(image[row, 0]), abs=0.5)
    assert moved > 0  # the augmentation did move spots


def test_evaluation_crop_is_the_centre() -> None:
    image = torch.arange(2 * 64 * 64, dtype=torch.float32).reshape(1, 2, 64, 64)
    out = evaluation_crop(48)({"image": image})
    torch.testing.assert_close(out["image"], image[:, :, 8:56, 8:56])


def test_normalisation_uses_the_store_statistics_in_the_model_unit(store: Path) -> None:
    sensors = read_manifest(store).sensors
    s2 = sensors["sentinel2_l2a"]
    mean, std = band_moments(s2)
    torch.testing.assert_close(mean, torch.tensor([m * 1e-4 for m in s2.statistics.mean]))
    torch.testing.assert_close(std, torch.tensor([s * 1e-4 for s in s2.statistics.std]))
    mean, std = mean.tolist(), std.tolist()  # plain floats from here on
    normalize = SensorNormalize(sensors)
    image = torch.full((2, 12, 4, 4), 0.1)
    image[0, 0, 0, 0] = float("nan")
    partner = torch.full((1, 2, 4, 4), -12.0)
    out = normalize(
        "sentinel2_l2a",
        {"image": image, "image_sentinel1_grd": partner, "rows_sentinel1_grd": torch.tensor([1])},
    )
    assert out["image"][0, 0, 0, 0] == 0.0  # nodata -> the band mean
    assert float(out["image"][1, 3, 2, 2]) == pytest.approx((0.1 - mean[3]) / std[3], rel=1e-5)
    s1_mean, s1_std = (moments.tolist() for moments in band_moments(sensors["sentinel1_grd"]))
    assert float(out["image_sentinel1_grd"][0, 0, 0, 0]) == pytest.approx(
        (-12.0 - s1_mean[0]) / s1_std[0], rel=1e-5
    )


def test_statistics_in_another_unit_than_the_model_sees_are_refused(store: Path) -> None:
    s1 = read_manifest(store).sensors["sentinel1_grd"]
    linear = dataclasses.replace(s1, name="sentinel1_grd_linear", unit="linear_power")
    with pytest.raises(ValueError, match="sentinel1_grd_linear: statistics are in linear_power"):
        band_moments(linear)


class BatchRecorder(lightning.LightningModule):
    """Records what the datamodule hands to training steps."""

    def __init__(self) -> None:
        super().__init__()
        self.weight = torch.nn.Parameter(torch.zeros(1))
        self.seen: list[dict[str, Any]] = []

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor:
        self.seen.append(
            {
                sensor: {
                    key: value.shape if torch.is_tensor(value) else value
                    for key, value in sub.items()
                }
                for sensor, sub in batch["sensors"].items()
            }
        )
        self.seen[-1]["_index"] = {s: sub["index"].tolist() for s, sub in batch["sensors"].items()}
        return (
            self.weight.sum() * 0.0
            + sum(sub["image"].mean() for sub in batch["sensors"].values()) * self.weight.sum()
        )

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=0.1)


def test_a_trainer_gets_every_sensor_normalised_and_cropped_in_every_batch(
    store: Path, tmp_path: Path
) -> None:
    datamodule = GeoPile2DataModule(store, batch_size=16, crop_px=48, seed=1)
    recorder = BatchRecorder()
    trainer = lightning.Trainer(
        max_epochs=2,
        limit_train_batches=3,
        limit_val_batches=0,
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        use_distributed_sampler=False,
        default_root_dir=tmp_path,
    )
    trainer.fit(recorder, datamodule=datamodule)
    assert len(recorder.seen) == 6
    sensors = set(read_manifest(store).sensors)
    for batch in recorder.seen:
        assert set(batch) - {"_index"} == sensors
        for sensor in sensors:
            assert batch[sensor]["image"][-2:] == (48, 48)
        assert batch["sentinel2_l2a"]["image_sentinel1_grd"][1:] == (2, 48, 48)
    assert recorder.seen[0]["_index"] != recorder.seen[3]["_index"]  # epoch 2 is reshuffled


def test_validity_moves_with_the_augmentation_and_interpolated_nodata_is_invalid() -> None:
    torch.manual_seed(0)
    image = torch.full((6, 3, 64, 64), 5.0)
    valid = torch.ones(6, 3, 64, 64, dtype=torch.bool)
    image[:, :, 30:34, 30:34], valid[:, :, 30:34, 30:34] = 0.0, False  # a nodata hole
    partner = torch.full((2, 1, 64, 64), 7.0)
    partner_valid = torch.ones(2, 1, 64, 64, dtype=torch.bool)
    partner[:, :, 10:12, 40:42], partner_valid[:, :, 10:12, 40:42] = 0.0, False
    augment = pretraining_augmentation(crop_px=48, crop_scale=(0.6, 0.9))
    out = augment(
        {
            "image": image,
            "valid": valid,
            "image_dsm": partner,
            "valid_dsm": partner_valid,
            "rows_dsm": torch.tensor([1, 4]),
        }
    )
    assert out["valid"].dtype == torch.bool and out["valid"].shape == (6, 3, 48, 48)
    assert out["valid_dsm"].shape == (2, 1, 48, 48)
    # Valid means: interpolated from valid pixels only, so the value is untouched.
    torch.testing.assert_close(
        out["image"][out["valid"]], torch.full_like(out["image"][out["valid"]], 5.0)
    )
    kept = out["image_dsm"][out["valid_dsm"]]
    torch.testing.assert_close(kept, torch.full_like(kept, 7.0))
    # The hole grows by the interpolation's reach (a crop that keeps it shows more than 16 px).
    holes = (~out["valid"][:, 0]).sum(dim=(1, 2))
    assert holes.max() > 16 and (holes == 0).sum() < 6
    everywhere = augment({"image": image, "valid": torch.ones_like(valid)})
    assert everywhere["valid"].all()  # the threshold does not throw valid pixels away


def test_evaluation_crop_crops_the_validity_alike() -> None:
    valid = torch.rand(1, 2, 64, 64, generator=torch.Generator().manual_seed(0)) > 0.5
    out = evaluation_crop(48)({"image": torch.zeros(1, 2, 64, 64), "valid": valid})
    assert torch.equal(out["valid"], valid[:, :, 8:56, 8:56])
