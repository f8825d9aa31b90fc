"""Tests for SimMIM masking and loss, and the per-sensor patch embeddings and decoders."""

from __future__ import annotations

import pytest
import torch

from catalogs.sensors import registry
from catalogs.store_format import BandStatistics, SensorManifest
from model.nn.sensors import SensorDecoder, SensorHeads, SensorPatchEmbed
from model.nn.simmim import MaskGenerator, masked_l1_loss, upsample_token_mask

INPUT_PX = 192
MODEL_PATCH_PX = 4
TOKENS_PER_CELL_SIDE = 8  # 32 px mask cell / 4 px token
EMBED_DIM = 16
ENCODER_CHANNELS = 1024


def _seeded(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _cells(token_mask: torch.Tensor) -> torch.Tensor:
    """(B, 48, 48) token mask -> (B, 6, 6, 64): the tokens of each 32 px cell."""
    batch = token_mask.shape[0]
    blocks = token_mask.view(batch, 6, TOKENS_PER_CELL_SIDE, 6, TOKENS_PER_CELL_SIDE)
    return blocks.permute(0, 1, 3, 2, 4).reshape(batch, 6, 6, -1)


def test_mask_masks_whole_cells_in_the_expected_share() -> None:
    mask = MaskGenerator()(batch_size=5, generator=_seeded(0))
    assert mask.dtype == torch.bool
    assert mask.shape == (5, 48, 48)
    cells = _cells(mask)
    assert torch.equal(cells.all(dim=-1), cells.any(dim=-1))  # every 8x8 block all or nothing
    # 0.6 * 36 = 21.6, rounded to the nearest integer (halves up): 22 cells in every sample.
    assert cells.all(dim=-1).sum(dim=(1, 2)).tolist() == [22] * 5


def test_mask_count_rounds_to_nearest_half_up() -> None:
    assert MaskGenerator(input_px=96, mask_patch_px=32, mask_ratio=0.5).mask_count == 5  # 4.5
    assert MaskGenerator(mask_ratio=0.7).mask_count == 25  # 25.2


def test_mask_seeds() -> None:
    generator = MaskGenerator()
    first = generator(4, generator=_seeded(1))
    assert torch.equal(first, generator(4, generator=_seeded(1)))
    assert not torch.equal(first, generator(4, generator=_seeded(2)))
    assert not torch.equal(first[0], first[1])  # samples of a batch differ too


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ({"input_px": 200}, "input_px .* multiple of mask_patch_px"),
        ({"model_patch_px": 5}, "mask_patch_px .* multiple of model_patch_px"),
        ({"mask_patch_px": 0}, "mask_patch_px must be a positive"),
        ({"mask_ratio": 1.5}, "mask_ratio"),
    ],
)
def test_mask_rejects_bad_geometry(arguments: dict[str, float], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        MaskGenerator(**arguments)


def test_mask_to_pixels() -> None:
    generator = MaskGenerator()
    mask = generator(2, generator=_seeded(3))
    pixels = generator.to_pixels(mask)
    assert pixels.shape == (2, 1, INPUT_PX, INPUT_PX)
    assert torch.equal(pixels[:, 0, ::MODEL_PATCH_PX, ::MODEL_PATCH_PX], mask)
    assert pixels.float().mean().item() == pytest.approx(22 / 36)


def _loss_inputs() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """A 2-channel 4x4 image with 2 px tokens; the top-left token is the only masked one."""
    generator = _seeded(4)
    prediction = torch.rand(1, 2, 4, 4, generator=generator)
    target = torch.rand(1, 2, 4, 4, generator=generator)
    token_mask = torch.tensor([[[True, False], [False, False]]])
    return prediction, target, token_mask


def test_loss_equals_hand_computation() -> None:
    prediction = torch.zeros(1, 2, 4, 4)
    target = torch.zeros(1, 2, 4, 4)
    target[0, 0, :2, :2] = torch.tensor([[1.0, 2.0], [3.0, 4.0]])
    target[0, 1, :2, :2] = -1.0
    target[0, :, 2:, 2:] = 100.0  # unmasked: must not count
    _, _, token_mask = _loss_inputs()
    # 4 masked pixels x 2 channels: (1 + 2 + 3 + 4 + 4 * 1) / 8 = 1.75
    loss = masked_l1_loss(prediction, target, token_mask, model_patch_px=2)
    assert loss.item() == pytest.approx(1.75, rel=1e-5)


def test_loss_counts_masked_pixels_only() -> None:
    prediction, target, token_mask = _loss_inputs()
    loss = masked_l1_loss(prediction, target, token_mask, model_patch_px=2)
    for tensor in (prediction, target):
        changed = tensor.clone()
        changed[0, 1, 3, 3] += 5.0  # an unmasked pixel
        tensors = (changed, target) if tensor is prediction else (prediction, changed)
        assert torch.equal(masked_l1_loss(*tensors, token_mask, model_patch_px=2), loss)
        changed = tensor.clone()
        changed[0, 1, 0, 1] += 5.0  # a masked pixel
        tensors = (changed, target) if tensor is prediction else (prediction, changed)
        assert masked_l1_loss(*tensors, token_mask, model_patch_px=2) != loss


def test_loss_excludes_nan_target_pixels() -> None:
    prediction, target, token_mask = _loss_inputs()
    target[0, 0, 0, 0] = float("nan")  # masked, but nodata
    target[0, :, 3, 3] = float("nan")  # unmasked nodata
    prediction.requires_grad_(True)
    loss = masked_l1_loss(prediction, target, token_mask, model_patch_px=2)
    counted = upsample_token_mask(token_mask, 2).expand_as(target) & ~target.isnan()
    expected = (prediction - target).abs()[counted].mean()
    assert counted.sum() == 7
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5)
    loss.backward()
    assert torch.isfinite(prediction.grad).all()
    assert prediction.grad[0, 0, 0, 0] == 0


def test_loss_rejects_a_mask_of_the_wrong_size() -> None:
    prediction, target, token_mask = _loss_inputs()
    with pytest.raises(ValueError, match="does not cover the target"):
        masked_l1_loss(prediction, target, token_mask, model_patch_px=4)


@pytest.mark.parametrize("name", sorted(registry()))
def test_heads_shapes_for_every_registry_sensor(name: str) -> None:
    bands = registry()[name].num_bands
    heads = SensorHeads.from_registry([name], EMBED_DIM, ENCODER_CHANNELS)
    with torch.no_grad():
        tokens = heads.embed(name, torch.rand(2, bands, INPUT_PX, INPUT_PX))
        image = heads.decode(name, torch.rand(2, ENCODER_CHANNELS, 6, 6))
    assert tokens.shape == (2, 48, 48, EMBED_DIM)
    assert image.shape == (2, bands, INPUT_PX, INPUT_PX)


def test_heads_from_manifest_use_one_channel_per_band() -> None:
    statistics = BandStatistics(count=(1, 1), mean=(0.0, 0.0), std=(1.0, 1.0), percentiles={})
    manifest = SensorManifest(
        name="s1",
        title="SAR",
        kind="sar",
        dtype="float32",
        nodata=None,
        scale=1.0,
        offset=0.0,
        unit="dB",
        model_unit="dB",
        gsd_m=10.0,
        band_names=("VV", "VH"),
        chip_count=1,
        chip_shape=(2, INPUT_PX, INPUT_PX),
        statistics=statistics,
    )
    heads = SensorHeads.from_manifest({"s1": manifest}, EMBED_DIM, encoder_channels=8)
    assert heads.sensor_names == ("s1",)
    assert heads.embeddings["s1"].in_channels == 2
    assert heads.decode("s1", torch.rand(1, 8, 1, 1)).shape == (1, 2, 32, 32)


def test_unknown_sensor_is_a_key_error_naming_the_known_ones() -> None:
    heads = SensorHeads({"rgb": 3, "dsm": 1}, EMBED_DIM, encoder_channels=8)
    with pytest.raises(KeyError, match=r"'sar'.*\['rgb', 'dsm'\]"):
        heads.embed("sar", torch.rand(1, 3, 8, 8))
    with pytest.raises(KeyError, match="'sar'"):
        heads.decode("sar", torch.rand(1, 8, 1, 1))


def test_patch_embed_rejects_a_wrong_image() -> None:
    embed = SensorPatchEmbed(in_channels=3, embed_dim=EMBED_DIM)
    with pytest.raises(ValueError, match=r"\(B, 3, H, W\)"):
        embed(torch.rand(1, 4, 8, 8))
    with pytest.raises(ValueError, match="multiple of the 4 px patch"):
        embed(torch.rand(1, 3, 10, 8))


def test_decoder_is_a_pixel_shuffle_of_a_1x1_conv() -> None:
    decoder = SensorDecoder(encoder_channels=8, out_channels=3, stride=4)
    assert decoder.projection.kernel_size == (1, 1)
    assert decoder.projection.out_channels == 4**2 * 3
    assert decoder(torch.rand(1, 8, 2, 3)).shape == (1, 3, 8, 12)


def test_the_loss_leaves_out_what_valid_marks_as_nodata() -> None:
    # Every token masked; target 0, prediction 1 except one pixel predicted 5.
    target = torch.zeros(1, 2, 8, 8)
    prediction = torch.ones(1, 2, 8, 8)
    prediction[0, 1, 3, 3] = 5.0
    mask = torch.ones(1, 2, 2, dtype=torch.bool)
    valid = torch.ones(1, 2, 8, 8, dtype=torch.bool)
    full = masked_l1_loss(prediction, target, mask, 4, valid)
    assert full.item() == pytest.approx((127 + 5) / (128 + 1e-5))
    valid[0, 1, 3, 3] = False  # that value of band 1 is nodata: out of both sums
    assert masked_l1_loss(prediction, target, mask, 4, valid).item() == pytest.approx(
        127 / (127 + 1e-5)
    )
    pixel = torch.ones(1, 1, 8, 8, dtype=torch.bool)
    pixel[0, 0, 3, 3] = False  # one mask for every band: both values of the pixel go
    assert masked_l1_loss(prediction, target, mask, 4, pixel).item() == pytest.approx(
        126 / (126 + 1e-5)
    )
    with pytest.raises(ValueError, match=r"valid \(1, 3, 8, 8\) is neither"):
        masked_l1_loss(prediction, target, mask, 4, torch.ones(1, 3, 8, 8, dtype=torch.bool))
