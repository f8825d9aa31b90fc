"""The optimiser every task trains with (model/tasks/optimization.py): AdamW groups from the
network's own no-weight-decay set, and warm-up + cosine from torch's schedulers."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

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
        encoder, lr=1e-3, weight_decay=0.05, warmup_share=0.1, total_steps=10
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
