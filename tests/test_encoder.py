"""The shared Swin encoder: timm's stages, SimMIM's mask token, MoE where Swin-MoE puts it."""

from __future__ import annotations

import pytest
import timm
import torch

from model.nn.encoder import MoEConfig, SwinEncoder, encoder_config
from model.nn.moe import SparseMoE


@pytest.mark.parametrize("version", ["v1", "v2"])
def test_a_token_grid_becomes_last_stage_features(version: str) -> None:
    config = encoder_config("tiny", version=version)
    encoder = SwinEncoder(config)
    tokens = torch.randn(2, 48, 48, config.embed_dim)
    features = encoder(tokens, torch.rand(2, 48, 48) > 0.4)
    assert features.shape == (2, config.out_channels, 6, 6) and config.stride == 32
    assert encoder.aux_loss().shape == () and encoder.aux_loss().requires_grad


def test_moe_layers_sit_where_swin_moe_puts_them() -> None:
    encoder = SwinEncoder(encoder_config("base"))
    placed = [
        (stage, block)
        for stage, s in enumerate(encoder.stages)
        for block, b in enumerate(s.blocks)
        if isinstance(b.mlp, SparseMoE)
    ]
    assert placed == [(2, b) for b in range(1, 18, 2)] + [(3, 1)]
    assert all(layer.num_experts == 8 and layer.top_k == 1 for layer in encoder.moe_layers())
    assert MoEConfig(stages=(3,), first_block=0, every=1).blocks(3, 2) == [0, 1]
    dense = SwinEncoder(encoder_config("tiny", moe=None))
    assert dense.moe_layers() == [] and float(dense.aux_loss()) == 0.0


def test_masked_tokens_are_replaced_by_the_mask_token() -> None:
    encoder = SwinEncoder(encoder_config("tiny", moe=None)).eval()
    everything = torch.ones(1, 48, 48, dtype=torch.bool)
    a, b = torch.randn(1, 48, 48, 32), torch.randn(1, 48, 48, 32)
    torch.testing.assert_close(encoder(a, everything), encoder(b, everything))
    assert not torch.allclose(encoder(a), encoder(b))


def test_the_dense_encoder_is_timms_swin_v2() -> None:
    config = encoder_config("tiny", moe=None)
    ours = SwinEncoder(config).eval()
    reference = timm.create_model(
        "swinv2_tiny_window8_256",
        pretrained=False,
        img_size=config.input_px,
        window_size=config.window_size,
        embed_dim=config.embed_dim,
        depths=config.depths,
        num_heads=config.num_heads,
        num_classes=0,
        drop_path_rate=0.0,
    ).eval()
    state = {
        key.replace("layers.", "stages."): value
        for key, value in reference.state_dict().items()
        if key.startswith(("layers.", "norm."))
    }
    missing, unexpected = ours.load_state_dict(state, strict=False)
    assert missing == ["mask_token"] and unexpected == []
    tokens = torch.randn(2, 48, 48, config.embed_dim)
    expected = reference.norm(reference.layers(tokens)).permute(0, 3, 1, 2)
    torch.testing.assert_close(ours(tokens), expected)


def test_bad_configurations_say_what_is_wrong() -> None:
    with pytest.raises(KeyError, match="unknown encoder preset 'huge'"):
        encoder_config("huge")
    with pytest.raises(ValueError, match="Swin version 'v3'"):
        SwinEncoder(encoder_config("tiny", version="v3"))
    with pytest.raises(ValueError, match="not a multiple of the encoder's stride 32"):
        SwinEncoder(encoder_config("tiny", input_px=200))
    with pytest.raises(ValueError, match="4 stage depths but 3 head counts"):
        SwinEncoder(encoder_config("tiny", num_heads=(1, 2, 4)))
