"""Task heads: the classifier, UPerNet over the encoder's stages, the full-resolution head."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch
from torch.nn import functional as F

from model.nn.encoder import SwinEncoder, encoder_config
from model.nn.heads import ClassificationHead, DensePredictionHead, UPerNetDecoder
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
    pixels = torch.randn(2, 5, 192, 192)
    assert DensePredictionHead(64, 6, image_channels=5, scale=4)(fused, pixels).shape == (
        2,
        6,
        192,
        192,
    )


def test_the_dense_head_upsamples_bilinearly_so_no_block_pattern_is_built_in() -> None:
    torch.manual_seed(0)
    head = DensePredictionHead(64, 6, image_channels=2, scale=4, hidden_channels=8).eval()
    features = torch.randn(1, 64, 12, 10)
    captured = {}
    head.mix.register_forward_hook(lambda module, args, out: captured.update(joined=args[0]))
    head(features, torch.zeros(1, 2, 48, 40))
    upsampled = captured["joined"][:, :8]
    expected = F.interpolate(head.projection(features), scale_factor=4, mode="bilinear")
    torch.testing.assert_close(upsampled, F.gelu(expected), rtol=0, atol=1e-6)
    # Unlike a pixel shuffle's blocks, neighbouring pixels inside a token differ.
    assert not torch.allclose(upsampled[..., 1::4, :], upsampled[..., 2::4, :])


def test_detail_finer_than_a_token_reaches_the_output_through_the_pixels() -> None:
    """One input pixel changes the output around it (two 3x3 convolutions: 5x5), nowhere else."""
    torch.manual_seed(0)
    head = DensePredictionHead(64, 3, image_channels=2, scale=4).eval()
    features = torch.randn(1, 64, 12, 12)
    pixels = torch.randn(1, 2, 48, 48)
    before = head(features, pixels)
    pixels[0, 1, 21, 30] += 5.0  # inside the token at (5, 7), off its centre
    changed = (head(features, pixels) - before).abs().amax(dim=1)[0] > 0
    rows, cols = torch.nonzero(changed, as_tuple=True)
    assert (rows.min().item(), rows.max().item(), cols.min().item(), cols.max().item()) == (
        19,
        23,
        28,
        32,
    )


def test_the_pixels_must_match_the_upsampled_map() -> None:
    head = DensePredictionHead(64, 3, image_channels=2, scale=4)
    with pytest.raises(ValueError, match=r"input pixels of \(48, 44\) px do not match the "):
        head(torch.randn(1, 64, 12, 12), torch.randn(1, 2, 48, 44))


def test_gradients_reach_every_parameter_from_both_heads() -> None:
    torch.manual_seed(0)
    embed = SensorPatchEmbed(4, CONFIG.embed_dim, CONFIG.patch_px)
    encoder = SwinEncoder(CONFIG)
    classifier = ClassificationHead(CONFIG.out_channels, 5)
    decoder = UPerNetDecoder(STAGE_CHANNELS, channels=64)
    dense = DensePredictionHead(64, 3, image_channels=4, scale=CONFIG.patch_px)
    image = torch.randn(1, 4, CONFIG.input_px, CONFIG.input_px)
    pyramid = encoder.forward_pyramid(embed(image), torch.rand(1, 48, 48) > 0.5)
    output = dense(decoder(pyramid), image)
    assert output.shape == (1, 3, 192, 192)
    (classifier(pyramid[-1]).square().sum() + output.square().mean()).backward()
    modules = {
        "embed": embed,
        "encoder": encoder,
        "classifier": classifier,
        "decoder": decoder,
        "dense": dense,
    }
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
