"""Invariants of the sparse Mixture-of-Experts layer (model/nn/moe.py)."""

from __future__ import annotations

import pytest
import torch
from torch import Tensor, nn

from model.nn.encoder import MoEConfig, SwinEncoder, encoder_config
from model.nn.moe import (
    Routing,
    SparseMoE,
    cv_squared,
    expert_capacity,
    importance_load_loss,
    load_balancing_loss,
    route,
    set_moe_dropless,
)

DIM = 16
HIDDEN = 32
EXPERTS = 4


def _moe(
    top_k: int = 1, capacity_factor: float = 1.25, gate_noise: float = 1.0, seed: int = 0
) -> SparseMoE:
    """A small SparseMoE in eval mode with a gate sharp enough to route unevenly."""
    torch.manual_seed(seed)
    moe = SparseMoE(
        DIM,
        HIDDEN,
        num_experts=EXPERTS,
        top_k=top_k,
        capacity_factor=capacity_factor,
        gate_noise=gate_noise,
    )
    with torch.no_grad():
        moe.gate.weight.normal_(std=1.0)
    return moe.eval()


def _tokens(*shape: int, seed: int = 1) -> Tensor:
    return torch.randn(*shape, DIM, generator=torch.Generator().manual_seed(seed))


def _skewed_probs(num_tokens: int, seed: int = 2) -> Tensor:
    """Gate probabilities that overload expert 0."""
    logits = torch.randn(num_tokens, EXPERTS, generator=torch.Generator().manual_seed(seed))
    logits[:, 0] += 1.5
    return logits.softmax(dim=-1)


def _assigned_experts(routing: Routing) -> Tensor:
    """The expert of each kept assignment (the routing is grouped by expert)."""
    return torch.repeat_interleave(
        torch.arange(len(routing.expert_counts)), torch.tensor(routing.expert_counts)
    )


@pytest.mark.parametrize("top_k", [1, 2])
def test_each_token_goes_to_its_top_k_experts_unless_dropped(top_k: int) -> None:
    probs = _skewed_probs(64)
    capacity = expert_capacity(64, EXPERTS, top_k, capacity_factor=0.75)
    routing = route(probs, top_k, capacity)
    top_experts = probs.topk(top_k, dim=-1).indices
    assigned = _assigned_experts(routing)
    for token in range(64):
        experts = assigned[routing.token_index == token]
        assert experts.numel() <= top_k
        assert experts.unique().numel() == experts.numel()
        assert set(experts.tolist()) <= set(top_experts[token].tolist())
    dropped = top_k * 64 - routing.token_index.numel()
    assert dropped > 0
    assert int(routing.routed_counts.sum()) == top_k * 64

    unlimited = route(probs, top_k, capacity=top_k * 64)
    assert torch.equal(
        torch.bincount(unlimited.token_index, minlength=64), torch.full((64,), top_k)
    )


@pytest.mark.parametrize("top_k", [1, 2])
def test_no_expert_receives_more_than_its_capacity(top_k: int) -> None:
    probs = _skewed_probs(64)
    capacity = expert_capacity(64, EXPERTS, top_k, capacity_factor=1.0)
    routing = route(probs, top_k, capacity)
    routed = torch.bincount(probs.topk(top_k, dim=-1).indices.reshape(-1), minlength=EXPERTS)
    assert torch.equal(routing.routed_counts, routed)
    assert routed.max() > capacity
    assert max(routing.expert_counts) <= capacity
    assert routing.expert_counts == routed.clamp(max=capacity).tolist()


def test_an_overloaded_expert_keeps_its_highest_scoring_tokens() -> None:
    probs = _skewed_probs(64)
    routing = route(probs, top_k=1, capacity=8)
    first_choice = probs.argmax(dim=-1)
    on_expert_0 = (first_choice == 0).nonzero().squeeze(1)
    kept = routing.token_index[: routing.expert_counts[0]]
    dropped = on_expert_0[~torch.isin(on_expert_0, kept)]
    assert dropped.numel() > 0
    assert probs[kept, 0].min() >= probs[dropped, 0].max()


def test_first_choices_are_served_before_second_choices() -> None:
    probs = _skewed_probs(64)
    capacity = int((probs.argmax(dim=-1) == 0).sum())
    routing = route(probs, top_k=2, capacity=capacity)
    kept_on_expert_0 = routing.token_index[: routing.expert_counts[0]]
    assert torch.equal(
        kept_on_expert_0.sort().values, (probs.argmax(dim=-1) == 0).nonzero().squeeze(1)
    )


@pytest.mark.parametrize("top_k", [1, 2])
def test_dropped_tokens_are_counted_and_output_exactly_zero(top_k: int) -> None:
    moe = _moe(top_k=top_k, capacity_factor=0.5)
    x = _tokens(2, 4, 4)
    flat = x.reshape(-1, DIM)
    capacity = expert_capacity(flat.shape[0], EXPERTS, top_k, moe.capacity_factor)
    routing = route(moe.gate_probabilities(flat), top_k, capacity)
    out = moe(x)
    assert out.shape == x.shape
    assignments = top_k * flat.shape[0]
    assert int(moe.dropped_tokens) == assignments - routing.token_index.numel() > 0
    assert float(moe.dropped_fraction) == pytest.approx(int(moe.dropped_tokens) / assignments)
    dropped = ~torch.isin(torch.arange(flat.shape[0]), routing.token_index)
    assert dropped.any()
    out = out.reshape(-1, DIM)
    assert torch.all(out[dropped] == 0)
    assert torch.all(out[~dropped].abs().sum(dim=-1) > 0)


def _naive_moe(moe: SparseMoE, tokens: Tensor) -> Tensor:
    """Token by token: run the chosen experts and weight them by the gate."""
    rows = []
    for token in tokens:
        probs = (moe.gate.weight @ token).softmax(dim=-1)
        top_probs, top_experts = probs.topk(moe.top_k)
        weights = top_probs if moe.top_k == 1 else top_probs / top_probs.sum()
        row = torch.zeros(DIM)
        for weight, expert in zip(weights, top_experts.tolist(), strict=True):
            hidden = nn.functional.gelu(token @ moe.w1[expert] + moe.b1[expert])
            row += weight * (hidden @ moe.w2[expert] + moe.b2[expert])
        rows.append(row)
    return torch.stack(rows)


@pytest.mark.parametrize("top_k", [1, 2])
def test_without_dropping_output_equals_naive_reference(top_k: int) -> None:
    moe = _moe(top_k=top_k, capacity_factor=float(EXPERTS))
    with torch.no_grad():
        for weight in (moe.w1, moe.w2, moe.b1, moe.b2):
            weight.normal_(std=0.5)
    x = _tokens(3, 20)
    out = moe(x)
    assert int(moe.dropped_tokens) == 0
    assert float(moe.expert_load.sum()) == pytest.approx(1.0)
    torch.testing.assert_close(
        out.reshape(-1, DIM), _naive_moe(moe, x.reshape(-1, DIM)), atol=1e-5, rtol=1e-5
    )


def test_aux_loss_is_one_for_uniform_routing_and_larger_when_collapsed() -> None:
    moe = _moe()
    with torch.no_grad():
        moe.gate.weight.zero_()
        moe.gate.weight[:, :EXPERTS] = 5.0 * torch.eye(EXPERTS)
    one_hot = torch.zeros(EXPERTS, DIM)
    one_hot[:, :EXPERTS] = torch.eye(EXPERTS)
    moe(one_hot.repeat(8, 1))
    assert torch.equal(moe.expert_load, torch.full((EXPERTS,), 1 / EXPERTS))
    assert moe.aux_loss.item() == pytest.approx(1.0, abs=1e-6)

    moe(one_hot[:1].repeat(32, 1))
    assert float(moe.expert_load[0]) == 1.0
    assert moe.aux_loss.item() > 3.0


@pytest.mark.parametrize("top_k", [1, 2])
def test_gradients_flow_to_the_gate_and_the_experts(top_k: int) -> None:
    moe = _moe(top_k=top_k).train()
    moe(_tokens(2, 16)).square().sum().backward()
    for name, parameter in moe.named_parameters():
        assert parameter.grad is not None and parameter.grad.abs().sum() > 0, name

    moe.zero_grad()
    moe(_tokens(2, 16))
    moe.aux_loss.backward()
    assert moe.gate.weight.grad.abs().sum() > 0


def test_statistics_are_detached() -> None:
    moe = _moe().train()
    moe(_tokens(32))
    assert moe.aux_loss.requires_grad
    for statistic in (moe.expert_load, moe.dropped_tokens, moe.dropped_fraction):
        assert not statistic.requires_grad


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_gating_stays_fp32_under_bf16_autocast(dtype: torch.dtype) -> None:
    moe = _moe().train()
    gate_dtypes = []
    moe.gate.register_forward_hook(lambda module, args, out: gate_dtypes.append(out.dtype))
    x = _tokens(2, 8).to(dtype)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = moe(x)
    assert gate_dtypes == [torch.float32]
    assert moe.aux_loss.dtype == torch.float32
    assert out.dtype == torch.bfloat16
    assert out.shape == x.shape


@pytest.mark.parametrize("top_k", [0, 3])
def test_unsupported_top_k_raises(top_k: int) -> None:
    with pytest.raises(ValueError, match="top_k"):
        SparseMoE(DIM, HIDDEN, num_experts=EXPERTS, top_k=top_k)


def test_gate_noise_only_in_training() -> None:
    moe = _moe(gate_noise=1.0)
    x = _tokens(64)
    torch.testing.assert_close(moe(x), moe(x), atol=0, rtol=0)
    moe.train()
    probs = [moe.gate_probabilities(x) for _ in range(2)]
    assert not torch.equal(probs[0], probs[1])

    moe.gate_noise = 0.0
    torch.testing.assert_close(moe.gate_probabilities(x), moe.gate_probabilities(x), atol=0, rtol=0)


def test_gate_noise_has_std_gate_noise_over_num_experts() -> None:
    moe = _moe(gate_noise=2.0).train()
    with torch.no_grad():
        moe.gate.weight.zero_()
    log_probs = moe.gate_probabilities(_tokens(4096)).log()
    centered = log_probs - log_probs.mean(dim=-1, keepdim=True)  # the noise less its row mean
    expected = 2.0 / EXPERTS * ((EXPERTS - 1) / EXPERTS) ** 0.5
    assert centered.std().item() == pytest.approx(expected, rel=0.05)


@pytest.mark.parametrize("top_k", [1, 2])
def test_dropless_routing_equals_every_expert_on_every_token_as_exported(top_k: int) -> None:
    moe = _moe(top_k=top_k, capacity_factor=0.5)  # a capacity that drops, unless dropless
    tokens = _tokens(2, 24)
    with torch.no_grad():
        dropping = moe(tokens)
        assert int(moe.dropped_tokens) > 0
        assert set_moe_dropless(nn.Sequential(moe, nn.Identity())) == 1
        routed = moe(tokens)
        assert int(moe.dropped_tokens) == 0 and not torch.allclose(routed, dropping)
        # While torch.export traces, the dense formulation runs (no data-dependent split).
        exported = torch.export.export(moe, (tokens,)).module()(tokens)
    torch.testing.assert_close(exported, routed, rtol=0, atol=1e-5)


def test_dropless_output_of_a_sample_does_not_depend_on_the_rest_of_the_batch() -> None:
    moe = _moe(top_k=1, capacity_factor=1.0)
    batch = _tokens(4, 36)  # four different samples of 36 tokens
    with torch.no_grad():
        # With capacity dropping, the other samples take capacity from the first one.
        assert not torch.allclose(moe(batch[:1]), moe(batch)[:1])
        set_moe_dropless(moe)
        alone, inside = moe(batch[:1]), moe(batch)[:1]
    # The same up to float rounding of differently sized matrix products.
    torch.testing.assert_close(alone, inside, rtol=0, atol=1e-6)


def test_exporting_a_dropping_moe_names_the_switch() -> None:
    with pytest.raises(RuntimeError, match="set_moe_dropless"):
        torch.export.export(_moe(), (_tokens(2, 8),))


# Two tokens, three experts, top-1, noise std 1; the noisy logits equal the clean ones.
# Softmax([2, 0, 0]) = (e^2, 1, 1) / (e^2 + 2); token 1 prefers expert 2 alike, so
# importance = (hi + lo, 2 lo, hi + lo) with hi = e^2 / (e^2 + 2), lo = 1 / (e^2 + 2).
# Load: for expert 0 of token 0 (in its top 1) the best other logit is 0: Phi(2 - 0); for
# experts 1 and 2 (not in it) the best other is 2: Phi(0 - 2). So load = (Phi(2) + Phi(-2),
# 2 Phi(-2), Phi(2) + Phi(-2)) = (1, 0.0455, 1). CV^2 = population variance / mean^2.
HAND_LOGITS = torch.tensor([[2.0, 0.0, 0.0], [0.0, 0.0, 2.0]])
HAND_IMPORTANCE_CV2 = 0.23152587770353225
HAND_LOAD_CV2 = 0.4354943662554777


def test_importance_load_loss_matches_the_hand_computed_value() -> None:
    loss = importance_load_loss(HAND_LOGITS, HAND_LOGITS, top_k=1, noise_std=1.0)
    assert loss.item() == pytest.approx((HAND_IMPORTANCE_CV2 + HAND_LOAD_CV2) / 2, rel=1e-5)
    assert cv_squared(torch.tensor([1.0, 0.0, 1.0])).item() == pytest.approx(0.5, rel=1e-6)
    # Without noise the load is the count of routed tokens, (1, 0, 1): CV^2 = 0.5.
    loss = importance_load_loss(HAND_LOGITS, HAND_LOGITS, top_k=1, noise_std=0.0)
    assert loss.item() == pytest.approx((HAND_IMPORTANCE_CV2 + 0.5) / 2, rel=1e-5)


def test_importance_load_threshold_is_the_kth_best_of_the_other_experts() -> None:
    # Top-2 of token [3, 2, 0] (noise std 1): experts 0 and 1 are in; the 2nd best of the others
    # is 0 for both (expert 2), so Phi(3), Phi(2); expert 2's is 2 (expert 1): Phi(-2).
    # With only two experts (k = E = 2) both are always in: Phi(+inf) = 1.
    logits = torch.tensor([[3.0, 2.0, 0.0]])
    importance = logits.softmax(-1)[0]
    phi = torch.distributions.Normal(0.0, 1.0).cdf
    load = phi(torch.tensor([3.0, 2.0, -2.0]))
    expected = (cv_squared(importance) + cv_squared(load)) / 2
    got = importance_load_loss(logits, logits, top_k=2, noise_std=1.0)
    assert got.item() == pytest.approx(expected.item(), rel=1e-6)
    two = torch.tensor([[1.0, 0.0]])
    got = importance_load_loss(two, two, top_k=2, noise_std=1.0)
    assert got.item() == pytest.approx(cv_squared(two.softmax(-1)[0]).item() / 2, rel=1e-6)


def test_the_switch_loss_matches_the_hand_computed_value() -> None:
    # f = (1/2, 0, 1/2), mean P = (hi + lo, 2 lo, hi + lo) / 2: E * sum f * P = 3 (hi + lo) / 2.
    probs = HAND_LOGITS.softmax(-1)
    loss = load_balancing_loss(probs, probs.argmax(-1))
    assert loss.item() == pytest.approx(1.3402395316211988, rel=1e-6)


def test_a_balanced_router_gives_each_loss_its_minimum() -> None:
    balanced = torch.stack([torch.tensor([2.0, 0.0, 0.0]).roll(t) for t in range(3)])
    skewed = torch.tensor([[2.0, 0.0, 0.0]] * 3)
    for noise_std in (0.0, 1.0):
        assert importance_load_loss(balanced, balanced, 1, noise_std).item() == pytest.approx(
            0.0, abs=1e-7
        )
        assert importance_load_loss(skewed, skewed, 1, noise_std).item() > 0.1
    for logits, expected in ((balanced, 1.0), (torch.zeros(3, 3), 1.0)):
        probs = logits.softmax(-1)
        assert load_balancing_loss(probs, probs.argmax(-1)).item() == pytest.approx(expected)
    probs = skewed.softmax(-1)
    assert load_balancing_loss(probs, probs.argmax(-1)).item() > 2.0


def test_the_layer_records_the_chosen_balance_loss() -> None:
    torch.manual_seed(0)
    moe = SparseMoE(DIM, HIDDEN, num_experts=EXPERTS, balance_loss="importance_load").eval()
    x = _tokens(64)
    moe(x)
    logits = moe.gate(x)
    torch.testing.assert_close(moe.aux_loss, importance_load_loss(logits, logits, 1, 0.0))
    moe.train()
    moe(x)
    moe.aux_loss.backward()  # the noisy load estimate reaches the gate
    assert moe.gate.weight.grad is not None and moe.gate.weight.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="balance_loss 'cv' is not one of"):
        SparseMoE(DIM, HIDDEN, balance_loss="cv")


def test_the_encoder_passes_the_balance_loss_to_its_moe_layers() -> None:
    config = encoder_config("tiny", moe=MoEConfig(balance_loss="importance_load"))
    layers = SwinEncoder(config).moe_layers()
    assert layers and all(layer.balance_loss == "importance_load" for layer in layers)
