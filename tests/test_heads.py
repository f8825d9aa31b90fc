"""Task heads: the classifier, UPerNet over the encoder's stages, the full-resolution head."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch
from torch import nn

from model.nn.encoder import SwinEncoder, encoder_config
from model.nn.heads import ClassificationHead, DensePredictionHead, UPerNetDecoder, icnr_
from model.nn.sensors import SensorPatchEmbed

CONFIG = replace(encoder_config("tiny", input_px=192), moe=None)
STAGE_CHANNELS = [CONFIG.embed_dim * 2**i for i in range(len(CONFIG.depths))]


def test_the_pyramid_holds_every_stage_and_ends_with_forwards_output() -> None:
    encoder = SwinEncoder(CONFIG).eval()
    tokens = torch.randn(2, 48, 48, CONFIG.embed_dim)
    mask = torch.rand(2, 48, 48) > 0.5
    pyramid = encoder.forward_pyramid(tokens, mask)
    assert [tuple(level.shape) for level in pyramid] == [
        (2, 32, 48, 48),
        (2, 64, 24, 24),
        (2, 128, 12, 12),
        (2, 256, 6, 6),
    ]
    assert STAGE_CHANNELS == [32, 64, 128, 256]
    torch.testing.assert_close(pyramid[-1], encoder(tokens, mask), rtol=0, atol=0)


def test_heads_give_logits_and_full_resolution_maps() -> None:
    pyramid = [
        torch.randn(2, channels, 48 // 2**i, 48 // 2**i)
        for i, channels in enumerate(STAGE_CHANNELS)
    ]
    assert ClassificationHead(256, 10)(pyramid[-1]).shape == (2, 10)
    fused = UPerNetDecoder(STAGE_CHANNELS, channels=64)(pyramid)
    assert fused.shape == (2, 64, 48, 48)
    assert DensePredictionHead(64, 6, scale=4)(fused).shape == (2, 6, 192, 192)


def test_icnr_starts_the_shuffle_as_a_nearest_neighbour_upsampling() -> None:
    torch.manual_seed(0)
    head = DensePredictionHead(64, 6, scale=4, hidden_channels=8)
    upsampled = head.shuffle(head.projection(torch.randn(2, 64, 12, 10)))
    assert upsampled.shape == (2, 8, 48, 40)
    # Every pixel of each 4x4 block equals the block's top-left one ...
    nearest = torch.nn.functional.interpolate(upsampled[..., ::4, ::4], scale_factor=4)
    torch.testing.assert_close(upsampled, nearest, rtol=0, atol=0)
    # ... and the blocks still differ (one filter per hidden channel, not one for all).
    assert not torch.allclose(upsampled[:, 0], upsampled[:, 1])


def test_icnr_copies_one_filter_and_bias_per_group_of_sub_pixels() -> None:
    conv = nn.Conv2d(5, 3 * 9, kernel_size=1)
    icnr_(conv, 3)
    for weights in (conv.weight, conv.bias):
        groups = weights.detach().unflatten(0, (3, 9))
        torch.testing.assert_close(groups, groups[:, :1].expand_as(groups), rtol=0, atol=0)


def test_gradients_reach_every_parameter_from_both_heads() -> None:
    torch.manual_seed(0)
    embed = SensorPatchEmbed(4, CONFIG.embed_dim, CONFIG.patch_px)
    encoder = SwinEncoder(CONFIG)
    classifier = ClassificationHead(CONFIG.out_channels, 5)
    dense = nn.Sequential(
        UPerNetDecoder(STAGE_CHANNELS, channels=64),
        DensePredictionHead(64, 3, scale=CONFIG.patch_px),
    )
    image = torch.randn(1, 4, CONFIG.input_px, CONFIG.input_px)
    pyramid = encoder.forward_pyramid(embed(image), torch.rand(1, 48, 48) > 0.5)
    assert dense(pyramid).shape == (1, 3, 192, 192)
    (classifier(pyramid[-1]).square().sum() + dense(pyramid).square().mean()).backward()
    modules = {"embed": embed, "encoder": encoder, "classifier": classifier, "dense": dense}
    without = [
        f"{name}.{key}"
        for name, module in modules.items()
        for key, parameter in module.named_parameters()
        if parameter.grad is None or not parameter.grad.abs().sum() > 0
    ]
    assert without == []


def test_decoder_arguments_and_inputs_are_checked() -> None:
    for channels in (48, 32):
        with pytest.raises(ValueError, match=f"{channels} channels do not split into 32 groups"):
            UPerNetDecoder(STAGE_CHANNELS, channels=channels)
    with pytest.raises(ValueError, match="expected 4 stages, got 3"):
        UPerNetDecoder(STAGE_CHANNELS, channels=64)(
            [torch.randn(1, c, 4, 4) for c in STAGE_CHANNELS[:3]]
        )
