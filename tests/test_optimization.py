"""The optimiser every task trains with (model/tasks/optimization.py): AdamW groups from the
network's own no-weight-decay set, layer-wise learning-rate decay over the fine-tuning network's
timm group matcher, and warm-up + cosine from torch's schedulers."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from model.nn.downstream import DownstreamNetwork
from model.nn.encoder import SwinEncoder, encoder_config
from model.tasks.optimization import adamw_warmup_cosine, no_weight_decay_names, warmup_cosine

POSITION_BIAS = {"v1": ("relative_position_bias_table",), "v2": ("cpb_mlp", "logit_scale")}


def _encoder(version: str) -> SwinEncoder:
    return SwinEncoder(encoder_config("tiny", version=version, input_px=64, window_size=2))


def _expected_no_decay(encoder: SwinEncoder, version: str) -> set[str]:
    """Norms, biases (the MoE experts' stacked ones too), the mask token and the version's
    position-bias parameters, written out independently of the code under test."""
    expected = set()
    for name, _ in encoder.named_parameters():
        leaf = name.rsplit(".", 1)[-1]
        if (
            leaf in ("bias", "q_bias", "v_bias", "b1", "b2", "mask_token")
            or "norm" in name
            or any(key in name for key in POSITION_BIAS[version])
        ):
            expected.add(name)
    return expected


@pytest.mark.parametrize("version", ["v1", "v2"])
def test_no_decay_group_is_exactly_norms_biases_tokens_and_position_bias(version: str) -> None:
    encoder = _encoder(version)
    config = adamw_warmup_cosine(
        encoder, lr=1e-3, weight_decay=0.05, warmup_steps=1, total_steps=10
    )
    names = {id(p): n for n, p in encoder.named_parameters()}
    groups = {
        group["weight_decay"]: {names[id(p)] for p in group["params"]}
        for group in config["optimizer"].param_groups
    }
    assert set(groups) == {0.0, 0.05}
    expected = _expected_no_decay(encoder, version)
    assert groups[0.0] == expected
    assert groups[0.05] == set(names.values()) - expected
    assert "mask_token" in groups[0.0]
    for key in POSITION_BIAS[version]:  # 2-D and 3-D parameters the old ndim rule decayed
        assert any(key in name for name in groups[0.0])
    assert "stages.0.blocks.0.attn.qkv.weight" in groups[0.05]
    moe_weights = {name for name in groups[0.05] if name.endswith((".w1", ".w2"))}
    assert moe_weights and not {n for n in groups[0.05] if n.endswith((".b1", ".b2"))}


def test_no_weight_decay_names_are_prefixed_with_the_submodule() -> None:
    holder = nn.Module()
    holder.encoder = _encoder("v2")
    names = no_weight_decay_names(holder)
    assert "encoder.mask_token" in names
    assert names <= {name for name, _ in holder.named_parameters()}


def _network(version: str = "v2") -> DownstreamNetwork:
    """Tiny fine-tuning network: 10 Swin blocks in stages of (2, 2, 4, 2), MoE in stage 2."""
    config = encoder_config("tiny", version=version, input_px=64, window_size=2)
    return DownstreamNetwork(config, {"sentinel2_l2a": 12, "sentinel1_grd": 2}, "dense", 3)


def _learning_rates(network: nn.Module, **options: object) -> dict[str, tuple[float, float]]:
    """{parameter name: (peak learning rate, weight decay)} of adamw_warmup_cosine's groups."""
    config = adamw_warmup_cosine(network, **{"weight_decay": 0.05, "total_steps": 10, **options})
    names = {id(p): n for n, p in network.named_parameters()}
    return {
        names[id(p)]: (group["initial_lr"], group["weight_decay"])
        for group in config["optimizer"].param_groups
        for p in group["params"]
    }


def _expected_scale(name: str) -> float:
    """0.9 per layer below the head: blocks numbered 1..10 in order, a stage's downsampling with
    its first block, the embeddings (and mask token) 0, the encoder norm with the head (11)."""
    first_block = {0: 0, 1: 2, 2: 4, 3: 8}
    parts = name.split(".")
    if parts[0] == "embeddings" or name == "encoder.mask_token":
        layer = 0
    elif parts[:2] == ["encoder", "stages"]:
        stage = int(parts[2])
        block = int(parts[4]) if parts[3] == "blocks" else 0
        layer = 1 + first_block[stage] + block
    else:
        layer = 11
    return 0.9 ** (11 - layer)


def test_layer_decay_scales_each_layers_peak_rate() -> None:
    network = _network()
    rates = _learning_rates(network, lr=1e-3, warmup_steps=2, layer_decay=0.9)
    assert set(rates) == {name for name, _ in network.named_parameters()}
    for name, (peak, _) in rates.items():
        assert peak == pytest.approx(1e-3 * _expected_scale(name), rel=1e-12), name
    assert rates["head.0.fuse.0.weight"][0] == pytest.approx(1e-3)
    assert rates["encoder.norm.weight"][0] == pytest.approx(1e-3)
    assert rates["encoder.stages.3.blocks.1.attn.qkv.weight"][0] == pytest.approx(0.9e-3)
    assert rates["encoder.stages.3.downsample.reduction.weight"][0] == pytest.approx(0.81e-3)
    assert rates["embeddings.sentinel1_grd.projection.weight"][0] == pytest.approx(0.9**11 * 1e-3)


@pytest.mark.parametrize("version", ["v1", "v2"])
def test_layer_decay_keeps_every_weight_decay_exemption(version: str) -> None:
    network = _network(version)
    plain = _learning_rates(network, lr=1e-3, warmup_steps=0)
    decayed = _learning_rates(network, lr=1e-3, warmup_steps=0, layer_decay=0.9)
    assert {n: wd for n, (_, wd) in decayed.items()} == {n: wd for n, (_, wd) in plain.items()}
    exempt = {name for name, (_, wd) in decayed.items() if wd == 0.0}
    assert "encoder.mask_token" in exempt
    assert {n for n in decayed if n.endswith((".b1", ".b2"))} <= exempt
    for key in POSITION_BIAS[version]:
        assert any(key in name for name in exempt)


@pytest.mark.parametrize("layer_decay", [None, 1.0])
def test_no_layer_decay_gives_one_rate(layer_decay: float | None) -> None:
    rates = _learning_rates(_network(), lr=1e-3, warmup_steps=0, layer_decay=layer_decay)
    assert {peak for peak, _ in rates.values()} == {1e-3}


def test_layer_decay_needs_a_group_matcher_and_warmup_whole_steps() -> None:
    with pytest.raises(ValueError, match="SwinEncoder has no group_matcher"):
        _learning_rates(_encoder("v2"), lr=1e-3, warmup_steps=0, layer_decay=0.9)
    with pytest.raises(TypeError, match="warmup_steps must be an int number"):
        _learning_rates(_network(), lr=1e-3, warmup_steps=0.1)


def _old_factor(step: int, warmup: int, total: int) -> float:
    """The schedule before torch's schedulers replaced it (a LambdaLR of this factor)."""
    if step < warmup:
        return (step + 1) / warmup
    progress = (step - warmup) / max(total - warmup, 1)
    return 0.5 * (1.0 + math.cos(math.pi * min(progress, 1.0)))


@pytest.mark.parametrize(("warmup", "total"), [(30, 300), (0, 300), (1, 200), (7, 7), (0, 1)])
def test_schedule_factors_match_the_warmup_cosine_formula(warmup: int, total: int) -> None:
    parameter = nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.SGD([parameter], lr=2.0)
    schedule = warmup_cosine(optimizer, warmup, total)
    factors = []
    for _ in range(total + 1):  # Lightning steps it once per optimiser step
        factors.append(optimizer.param_groups[0]["lr"] / 2.0)
        optimizer.step()
        schedule.step()
    expected = [_old_factor(step, warmup, total) for step in range(total + 1)]
    torch.testing.assert_close(
        torch.tensor(factors, dtype=torch.float64),
        torch.tensor(expected, dtype=torch.float64),
        rtol=1e-9,
        atol=1e-12,
    )


def test_a_warmup_longer_than_the_run_is_refused() -> None:
    optimizer = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=1.0)
    with pytest.raises(ValueError, match="warmup_steps must lie in"):
        warmup_cosine(optimizer, 11, 10)
