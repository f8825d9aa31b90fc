"""msGFM's forward pass: every sensor through its own heads and the shared encoder, the
cross-sensor path through the partner's decoder, and a tiny model that learns."""

from __future__ import annotations

import pytest
import torch

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
