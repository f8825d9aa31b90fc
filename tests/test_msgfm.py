"""msGFM's forward pass: every sensor through its own heads and the shared encoder, the
cross-sensor path through the partner's decoder, and a tiny model that learns."""

from __future__ import annotations

import pytest
import torch

from catalogs.store_format import BandStatistics, SensorManifest
from model.datamodules.geopile2 import GeoPile2DataModule
from model.datasets.transforms import SensorNormalize
from model.nn.encoder import MoEConfig, encoder_config
from model.nn.msgfm import MsGFM

CHANNELS = {"sentinel2_l2a": 12, "sentinel1_grd": 2, "rgb": 3}


def tiny(cross_sensor_rate: float = 0.5) -> MsGFM:
    """The tiny preset at 64 px, without gate noise (so one batch can be learnt by heart)."""
    torch.manual_seed(0)
    config = encoder_config("tiny", input_px=64, window_size=2, moe=MoEConfig(gate_noise=0.0))
    return MsGFM(CHANNELS, config, cross_sensor_rate=cross_sensor_rate)


def batch(size: int = 4) -> dict:
    torch.manual_seed(1)
    return {
        "sensors": {
            "sentinel2_l2a": {
                "image": torch.randn(size, 12, 64, 64),
                "image_sentinel1_grd": torch.randn(2, 2, 64, 64),
                "rows_sentinel1_grd": torch.tensor([0, 2]),
            },
            "sentinel1_grd": {"image": torch.randn(size, 2, 64, 64)},
            "rgb": {"image": torch.randn(size, 3, 64, 64)},
        }
    }


def test_every_sensor_is_reconstructed_at_its_own_shape() -> None:
    out = tiny(cross_sensor_rate=0.0)(batch(), keep=True)
    assert set(out.mim_per_sensor) == set(CHANNELS) and out.cross_share == 0.0
    for group in out.reconstructions:
        assert group.target_sensor == group.source
        assert group.prediction.shape == (4, CHANNELS[group.source], 64, 64)
        assert group.mask.shape == (4, 16, 16)
    assert out.loss.item() == pytest.approx(out.mim_loss.item() + 0.01 * out.aux_loss.item())


def test_the_cross_sensor_path_decodes_the_partner_with_its_decoder() -> None:
    model = tiny(cross_sensor_rate=1.0)
    data = batch()
    s2_only = {"sensors": {"sentinel2_l2a": data["sensors"]["sentinel2_l2a"]}}
    out = model(s2_only, keep=True)
    cross = [g for g in out.reconstructions if g.target_sensor == "sentinel1_grd"]
    assert len(cross) == 1 and cross[0].rows.tolist() == [0, 2]
    assert cross[0].prediction.shape == (2, 2, 64, 64)
    torch.testing.assert_close(
        cross[0].target, data["sensors"]["sentinel2_l2a"]["image_sentinel1_grd"]
    )
    assert out.cross_share == 0.5
    out.loss.backward()
    s1_decoder = model.heads.decoders["sentinel1_grd"].projection.weight
    assert s1_decoder.grad is not None and s1_decoder.grad.abs().sum() > 0
    assert model.heads.embeddings["sentinel1_grd"].projection.weight.grad is None

    model.zero_grad(set_to_none=True)
    model.cross_sensor_rate = 0.0
    model(s2_only).loss.backward()
    assert model.heads.decoders["sentinel1_grd"].projection.weight.grad is None


def test_a_tiny_model_overfits_one_batch() -> None:
    model = tiny()
    data = batch(size=2)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)  # 150 steps: ~6 % of the start
    losses = []
    for _ in range(150):
        out = model(data, generator=torch.Generator().manual_seed(0))
        optimizer.zero_grad()
        out.loss.backward()
        optimizer.step()
        losses.append(out.mim_loss.item())
    assert losses[-1] < losses[0] / 10, losses[::25]


def test_a_cross_sensor_rate_outside_0_1_is_refused() -> None:
    with pytest.raises(ValueError, match="cross_sensor_rate 1.5 is not in"):
        MsGFM(CHANNELS, encoder_config("tiny"), cross_sensor_rate=1.5)


def test_each_sensor_weighs_the_same_or_by_its_rows() -> None:
    data = batch()
    data["sensors"]["sentinel1_grd"]["image"] = data["sensors"]["sentinel1_grd"]["image"][:2]
    data["sensors"]["rgb"]["image"] = data["sensors"]["rgb"]["image"][:1]
    outs = {}
    for weighting in ("sensor", "sample"):
        model = tiny().eval()
        model.sensor_weighting = weighting
        with torch.no_grad():
            outs[weighting] = model(data, generator=torch.Generator().manual_seed(0))
    losses = outs["sensor"].mim_per_sensor
    for sensor, loss in outs["sample"].mim_per_sensor.items():
        assert loss.item() == losses[sensor].item()  # the same draws, the same per-sensor losses
    s2, s1, rgb = (losses[s].item() for s in ("sentinel2_l2a", "sentinel1_grd", "rgb"))
    assert outs["sensor"].mim_loss.item() == pytest.approx((s2 + s1 + rgb) / 3, rel=1e-6)
    assert outs["sample"].mim_loss.item() == pytest.approx((4 * s2 + 2 * s1 + rgb) / 7, rel=1e-6)
    with pytest.raises(ValueError, match="sensor_weighting 'pixel' is not one of"):
        MsGFM(CHANNELS, encoder_config("tiny"), sensor_weighting="pixel")  # type: ignore[arg-type]


def _manifest(
    name: str, kind: str, dtype: str, nodata: float, scale: float, unit: str, n: int
) -> SensorManifest:
    """A sensor of ``n`` bands, stored statistics mean 1000 and std 500 in each."""
    statistics = BandStatistics(
        count=(1,) * n, mean=(1000.0,) * n, std=(500.0,) * n, percentiles={}
    )
    return SensorManifest(
        name=name,
        title=name,
        kind=kind,
        dtype=dtype,
        nodata=nodata,
        scale=scale,
        offset=0.0,
        unit=unit,
        model_unit=unit,
        gsd_m=10.0,
        band_names=tuple(f"b{i}" for i in range(n)),
        chip_count=2,
        chip_shape=(n, 64, 64),
        statistics=statistics,
    )


def test_nodata_targets_leave_the_loss_through_the_datamodule_path() -> None:
    """DSM -9999 and Sentinel-2 0 as stored become invalid, and the loss ignores their values."""
    manifests = {
        "sentinel2_l2a": _manifest(
            "sentinel2_l2a", "optical", "uint16", 0.0, 1e-4, "reflectance", 12
        ),
        "dsm": _manifest("dsm", "elevation", "float32", -9999.0, 1.0, "m", 1),
    }
    generator = torch.Generator().manual_seed(3)

    def s2() -> torch.Tensor:
        return torch.randint(500, 3000, (2, 12, 64, 64), generator=generator).to(torch.uint16)

    def dsm() -> torch.Tensor:
        return torch.rand(2, 1, 64, 64, generator=generator) * 100

    stored = {
        "sentinel2_l2a": {"image": s2(), "image_dsm": dsm(), "rows_dsm": torch.tensor([0, 1])},
        "dsm": {
            "image": dsm(),
            "image_sentinel2_l2a": s2(),
            "rows_sentinel2_l2a": torch.tensor([0, 1]),
        },
    }
    stored["dsm"]["image_sentinel2_l2a"][0, 3, 10, 10] = 0  # Sentinel-2 nodata
    stored["sentinel2_l2a"]["image_dsm"][1, 0, 20, 20] = -9999.0  # DSM nodata
    datamodule = GeoPile2DataModule(crop_px=64)
    datamodule.normalize = SensorNormalize(manifests, stored=True)
    prepared = datamodule.on_after_batch_transfer({"sensors": stored}, 0)["sensors"]
    valid_s2 = prepared["dsm"]["valid_sentinel2_l2a"]
    valid_dsm = prepared["sentinel2_l2a"]["valid_dsm"]
    assert valid_s2.shape == (2, 12, 64, 64) and valid_s2.sum() == valid_s2.numel() - 1
    assert not valid_s2[0, 3, 10, 10] and not valid_dsm[1, 0, 20, 20]
    assert valid_dsm.sum() == valid_dsm.numel() - 1 and prepared["dsm"]["valid"].all()
    assert prepared["dsm"]["image_sentinel2_l2a"][0, 3, 10, 10] == 0.0  # the band mean

    torch.manual_seed(0)
    config = encoder_config("tiny", input_px=64, window_size=2, moe=MoEConfig(gate_noise=0.0))
    model = MsGFM({"sentinel2_l2a": 12, "dsm": 1}, config, cross_sensor_rate=1.0, mask_ratio=1.0)
    model.eval()

    def loss_with(sensor: str, key: str, where: tuple[int, ...], value: float) -> float:
        changed = {s: dict(sub) for s, sub in prepared.items()}
        changed[sensor][key] = prepared[sensor][key].clone()
        changed[sensor][key][where] = value
        with torch.no_grad():
            out = model({"sensors": changed}, generator=torch.Generator().manual_seed(0))
        assert out.cross_share == 1.0  # every chip is compared with its partner
        return out.loss.item()

    base = loss_with("dsm", "image_sentinel2_l2a", (0, 3, 10, 10), 0.0)
    assert loss_with("dsm", "image_sentinel2_l2a", (0, 3, 10, 10), 100.0) == base
    assert loss_with("sentinel2_l2a", "image_dsm", (1, 0, 20, 20), -50.0) == base
    assert loss_with("dsm", "image_sentinel2_l2a", (0, 3, 11, 11), 100.0) != base
    assert loss_with("sentinel2_l2a", "image_dsm", (1, 0, 21, 21), -50.0) != base
