"""Sparse Mixture-of-Experts MLP for Swin blocks (Swin-MoE / V-MoE / GShard style)."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from timm.layers import Mlp
from torch import Tensor, nn

SUPPORTED_TOP_K = (1, 2)
BALANCE_LOSSES = ("switch", "importance_load")  # see load_balancing_loss, importance_load_loss
CV_EPSILON = 1e-10  # Shazeer et al.'s guard against a zero mean in the squared CV


@dataclass(frozen=True)
class Routing:
    """The kept token-assignments of one forward pass, grouped by expert.

    Attributes:
        token_index: (A,) the token of each kept assignment; expert 0's assignments first, then
            expert 1's, ...; within an expert in priority order.
        gate_weight: (A,) the weight of each kept assignment in the combined output (fp32,
            differentiable with respect to the gate).
        expert_counts: kept assignments per expert (sums to A, each at most the capacity).
        routed_counts: (E,) assignments per expert before dropping (sums to tokens * k).
    """

    token_index: Tensor
    gate_weight: Tensor
    expert_counts: list[int]
    routed_counts: Tensor


def expert_capacity(num_tokens: int, num_experts: int, top_k: int, capacity_factor: float) -> int:
    """Most token-assignments one expert runs: ceil(capacity_factor * tokens * k / experts).

    Args:
        num_tokens: tokens in the forward pass.
        num_experts: experts in the layer.
        top_k: experts each token is sent to.
        capacity_factor: slack over a perfectly even split (1.0: no slack).

    Returns:
        The capacity of every expert.
    """
    return math.ceil(capacity_factor * num_tokens * top_k / num_experts)


def route(probs: Tensor, top_k: int, capacity: int) -> Routing:
    """Assign each token to its top-k experts, keeping at most ``capacity`` per expert.

    Priority (Batch Prioritized Routing, V-MoE): every token's first choice is served before any
    second choice; within a choice, tokens with a higher gate probability go first. An expert
    keeps its first ``capacity`` assignments in that order and drops the rest.

    Combine weights: for k=1 the token's gate probability (Switch; not renormalised, so the gate
    gets a gradient); for k=2 the two probabilities renormalised to sum to 1 (GShard).

    Args:
        probs: (T, E) gate probabilities (softmax over experts), fp32.
        top_k: experts per token, 1 or 2.
        capacity: most assignments one expert keeps.

    Returns:
        The kept assignments, grouped by expert.
    """
    num_tokens, num_experts = probs.shape
    top_probs, top_experts = probs.topk(top_k, dim=-1)
    weights = top_probs if top_k == 1 else top_probs / top_probs.sum(dim=-1, keepdim=True)
    # Assignment a = choice * T + token (choice-major), so all first choices precede second ones.
    experts = top_experts.t().reshape(-1)
    weights = weights.t().reshape(-1)
    choice_offset = torch.arange(top_k, device=probs.device).unsqueeze(1) * num_tokens
    by_priority = top_probs.detach().t().argsort(dim=1, descending=True) + choice_offset
    by_priority = by_priority.reshape(-1)
    # A stable sort by expert keeps the priority order inside each expert's group.
    grouped = by_priority[experts[by_priority].argsort(stable=True)]
    routed_counts = torch.bincount(experts, minlength=num_experts)
    group_start = routed_counts.cumsum(0) - routed_counts
    rank_in_expert = torch.arange(grouped.numel(), device=probs.device)
    rank_in_expert = rank_in_expert - group_start[experts[grouped]]
    kept = grouped[rank_in_expert < capacity]
    return Routing(
        token_index=kept % num_tokens,
        gate_weight=weights[kept],
        expert_counts=routed_counts.clamp(max=capacity).tolist(),
        routed_counts=routed_counts,
    )


def load_balancing_loss(probs: Tensor, top1_experts: Tensor) -> Tensor:
    """Switch/GShard auxiliary loss: E * sum_e(fraction routed to e * mean probability of e).

    Equals 1.0 for uniform routing and grows with imbalance (up to E for full collapse).

    Args:
        probs: (T, E) gate probabilities.
        top1_experts: (T,) each token's first-choice expert.

    Returns:
        The loss, a differentiable scalar (through ``probs``).
    """
    num_experts = probs.shape[-1]
    routed_fraction = torch.bincount(top1_experts, minlength=num_experts) / top1_experts.numel()
    return num_experts * torch.sum(routed_fraction.to(probs.dtype) * probs.mean(dim=0))


def cv_squared(values: Tensor) -> Tensor:
    """Squared coefficient of variation, population variance over squared mean (Shazeer et al.)."""
    return values.var(unbiased=False) / (values.mean() ** 2 + CV_EPSILON)


def importance_load_loss(
    clean_logits: Tensor, noisy_logits: Tensor, top_k: int, noise_std: float
) -> Tensor:
    """Importance + load loss of the noisy top-k gate (Shazeer et al. 2017; Swin-MoE's default).

    ``(CV^2(importance) + CV^2(load)) / 2``, averaged as Tutel (Swin-MoE's MoE library) does.
    Importance is each expert's sum over tokens of the noise-free gate probabilities. Load is
    the smooth estimate of the tokens routed to each expert: for token ``x`` and expert ``i``,
    ``P(x, i) = Phi((clean_i - kth_excluding(noisy, k, i)) / noise_std)``, the probability that
    ``i`` stays in the top ``k`` when only its own noise is drawn again, ``kth_excluding`` being
    the k-th largest noisy logit of the other experts. Without noise (``noise_std`` 0: no gate
    noise, or evaluation) ``P`` is its limit, 1 for the experts of the token's top k and 0 for
    the others: the load is then the count of routed tokens, with no gradient (the importance
    term still has one). 0 for perfectly balanced routing, its minimum.

    Args:
        clean_logits: (T, E) gate logits before the noise.
        noisy_logits: (T, E) the logits routed on (``clean_logits`` when there is no noise).
        top_k: experts per token.
        noise_std: standard deviation of the noise added to the logits.

    Returns:
        The loss, a differentiable scalar (through ``clean_logits``).
    """
    importance = clean_logits.softmax(dim=-1).sum(dim=0)
    # A column of -inf makes the (k+1)-th value exist when there are only k experts.
    padded = F.pad(noisy_logits.detach(), (0, 1), value=-math.inf)
    top = padded.topk(top_k + 1, dim=-1).values
    kth, next_one = top[:, top_k - 1 : top_k], top[:, top_k : top_k + 1]
    in_top_k = noisy_logits.detach() >= kth
    if noise_std > 0:
        threshold = torch.where(in_top_k, next_one, kth)  # the k-th best of the *other* experts
        load = torch.special.ndtr((clean_logits - threshold) / noise_std).sum(dim=0)
    else:
        load = in_top_k.to(clean_logits.dtype).sum(dim=0)
    return (cv_squared(importance) + cv_squared(load)) / 2


class SparseMoE(nn.Module):
    """Sparse Mixture-of-Experts replacing the MLP of a Swin block.

    A linear gate (no bias) scores every token against ``num_experts`` experts, each a
    two-layer MLP like timm's ``Mlp`` (fc1 -> act -> drop -> fc2 -> drop). Each token is sent to
    its top-k experts, at most ``expert_capacity`` tokens per expert; tokens over capacity get a
    zero output, so the block's residual carries them unchanged (Swin-MoE).

    Dispatch: the kept assignments are grouped by expert with one argsort, their tokens
    gathered into one contiguous (A, dim) tensor, each expert runs ``addmm`` on its own slice,
    and the gate-weighted outputs are scatter-added back to their tokens. Compute is
    proportional to the kept assignments: nothing is tokens x experts, nor a padded
    tokens x experts x capacity tensor.

    Measured on the idle 2-core CPU (forward + backward, 8 experts, over a dense timm ``Mlp`` of
    the same active FLOPs), this loop over slices took 1.14-1.19x at dim 128 / 2,304 tokens (the
    tiny preset's MoE stage) and 1.02-1.05x at dim 384 / 4,096 tokens; padding every expert to
    the largest slice and running one ``baddbmm`` took 1.42-1.47x and 1.14x (it computes up to
    capacity_factor x more rows). The loop suffers more when another process shares the cores
    (its smaller parallel ops wait on descheduled threads). ``torch.nn.functional.grouped_mm``
    (torch 2.14) ran forward on CPU but its backward failed.

    Inference without dropping (``dropless = True``, :func:`set_moe_dropless`): every expert
    keeps every token routed to it, so a token's output depends on that token alone, never on
    the others of the forward (the batch composition). It routes as above with the capacity
    set to the number of tokens; while ``torch.export`` traces (ONNX export), where the
    data-dependent split by expert counts cannot be traced, it runs every expert on every token
    and sums the outputs weighted by the gate's one-hot top-k weights (the same result, E / k
    times the expert FLOPs). Off by default, so training and evaluation keep capacity dropping.

    Attributes set by every forward (but not while exporting):
        aux_loss: load-balancing loss (differentiable scalar, fp32): ``load_balancing_loss``
            (``balance_loss="switch"``) or ``importance_load_loss`` (``"importance_load"``).
        expert_load: (E,) fraction of token-assignments routed to each expert, before dropping.
        dropped_tokens: token-assignments dropped for lack of capacity (0-d int64 tensor).
        dropped_fraction: ``dropped_tokens`` / (tokens * k) (0-d float tensor).

    Args:
        dim: token width.
        hidden_dim: hidden width of each expert (``mlp_ratio * dim``).
        num_experts: experts in the layer.
        top_k: experts per token, 1 or 2.
        capacity_factor: expert capacity relative to an even split (see ``expert_capacity``).
        gate_noise: scale of the Gaussian noise added to the gate logits in training: its std is
            ``gate_noise / num_experts`` (Tutel / Swin-MoE; 1.0 gives V-MoE's 1/E). 0: none.
        act_layer: activation of the experts.
        drop: dropout after the activation and after fc2.
        balance_loss: the load-balancing loss, ``"switch"`` (Switch / GShard) or
            ``"importance_load"`` (Shazeer et al.; Swin-MoE's default).

    Raises:
        ValueError: if ``top_k`` is not 1 or 2, ``num_experts`` < ``top_k``,
            ``capacity_factor`` <= 0, ``gate_noise`` < 0 or ``balance_loss`` is unknown.
    """

    def __init__(
        self,
        dim: int,
        hidden_dim: int,
        num_experts: int = 8,
        top_k: int = 1,
        capacity_factor: float = 1.25,
        gate_noise: float = 1.0,
        act_layer: type[nn.Module] = nn.GELU,
        drop: float = 0.0,
        balance_loss: str = "switch",
    ) -> None:
        """Initialize a new SparseMoE instance (see the class docstring for the arguments)."""
        super().__init__()
        _check_arguments(num_experts, top_k, capacity_factor, gate_noise)
        if balance_loss not in BALANCE_LOSSES:
            raise ValueError(f"balance_loss {balance_loss!r} is not one of {BALANCE_LOSSES}")
        self.balance_loss = balance_loss
        self.num_experts = num_experts
        self.top_k = top_k
        self.capacity_factor = capacity_factor
        self.gate_noise = gate_noise
        self.gate = nn.Linear(dim, num_experts, bias=False)
        self.w1 = nn.Parameter(torch.empty(num_experts, dim, hidden_dim))
        self.b1 = nn.Parameter(torch.empty(num_experts, hidden_dim))
        self.w2 = nn.Parameter(torch.empty(num_experts, hidden_dim, dim))
        self.b2 = nn.Parameter(torch.empty(num_experts, dim))
        self.act = act_layer()
        self.drop1 = nn.Dropout(drop)
        self.drop2 = nn.Dropout(drop)
        self.reset_parameters()
        self.dropless = False
        self.aux_loss = torch.zeros(())
        self.expert_load = torch.zeros(num_experts)
        self.dropped_tokens = torch.zeros((), dtype=torch.long)
        self.dropped_fraction = torch.zeros(())

    def reset_parameters(self) -> None:
        """Initialise like timm's Swin (trunc_normal std .02 weights, zero biases)."""
        for weight in (self.gate.weight, self.w1, self.w2):
            nn.init.trunc_normal_(weight, std=0.02)
        nn.init.zeros_(self.b1)
        nn.init.zeros_(self.b2)

    def no_weight_decay(self) -> set[str]:
        """The experts' biases, which AdamW should not decay.

        Stacked per expert they are 2-D, but biases all the same (as a dense MLP's 1-D biases).
        """
        return {"b1", "b2"}

    def extra_repr(self) -> str:
        """Describe the routing set-up in ``print(module)``."""
        dim, hidden_dim = self.w1.shape[1:]
        return (
            f"dim={dim}, hidden_dim={hidden_dim}, num_experts={self.num_experts}, "
            f"top_k={self.top_k}, capacity_factor={self.capacity_factor}, "
            f"gate_noise={self.gate_noise}, balance_loss={self.balance_loss}, "
            f"dropless={self.dropless}"
        )

    @property
    def noise_std(self) -> float:
        """Standard deviation of the gate's noise now (0 outside training)."""
        return self.gate_noise / self.num_experts if self.training else 0.0

    def gate_logits(self, tokens: Tensor) -> tuple[Tensor, Tensor]:
        """Gate logits before and after the noise, computed in fp32 even under autocast.

        Args:
            tokens: (T, dim) tokens.

        Returns:
            (T, E) fp32 logits, and the same with noise of std :attr:`noise_std` added (the
            same tensor without noise).
        """
        with torch.autocast(device_type=tokens.device.type, enabled=False):
            logits = self.gate(tokens.float())
            if self.noise_std > 0:
                return logits, logits + torch.randn_like(logits) * self.noise_std
            return logits, logits

    def gate_probabilities(self, tokens: Tensor) -> Tensor:
        """Softmax gate probabilities of the noisy logits (:meth:`gate_logits`), (T, E) fp32."""
        return self.gate_logits(tokens)[1].softmax(dim=-1)

    def forward(self, x: Tensor) -> Tensor:
        """Route every token to its top-k experts and combine their gate-weighted outputs.

        Args:
            x: (..., dim) tokens, e.g. (B, H, W, C) or (B, N, C).

        Returns:
            Tensor of x's shape; zero for tokens dropped by every expert they chose.

        Raises:
            RuntimeError: when exported without ``dropless`` (capacity dropping is not
                exportable).
        """
        tokens = x.reshape(-1, x.shape[-1])
        clean_logits, noisy_logits = self.gate_logits(tokens)
        probs = noisy_logits.softmax(dim=-1)
        if torch.compiler.is_exporting():
            if not self.dropless:
                raise RuntimeError(
                    "SparseMoE with capacity dropping cannot be exported: switch it to "
                    "dropless first (model.nn.moe.set_moe_dropless)"
                )
            return self._every_expert(tokens, probs).reshape(x.shape)
        capacity = (
            tokens.shape[0]
            if self.dropless
            else expert_capacity(
                tokens.shape[0], self.num_experts, self.top_k, self.capacity_factor
            )
        )
        routing = route(probs, self.top_k, capacity)
        self._record_statistics(clean_logits, noisy_logits, probs, routing)
        expert_out = self._run_experts(tokens[routing.token_index], routing.expert_counts)
        expert_out = expert_out * routing.gate_weight.to(expert_out.dtype).unsqueeze(1)
        combined = expert_out.new_zeros(tokens.shape[0], expert_out.shape[1])
        combined.index_add_(0, routing.token_index, expert_out)
        return combined.reshape(x.shape[:-1] + (expert_out.shape[1],))

    def _every_expert(self, tokens: Tensor, probs: Tensor) -> Tensor:
        """Dropless top-k output, with every expert run on every token (traceable).

        Args:
            tokens: (T, dim) tokens.
            probs: (T, E) gate probabilities.

        Returns:
            (T, dim) the sum over experts of each expert's output times the token's combine
            weight for it (:func:`route`'s weights; 0 for experts outside its top k).
        """
        top_probs, top_experts = probs.topk(self.top_k, dim=-1)
        weights = top_probs if self.top_k == 1 else top_probs / top_probs.sum(dim=-1, keepdim=True)
        combine = torch.zeros_like(probs).scatter(1, top_experts, weights)
        hidden = self.drop1(
            self.act(torch.einsum("td,edh->eth", tokens, self.w1) + self.b1[:, None])
        )
        outputs = self.drop2(torch.einsum("eth,ehd->etd", hidden, self.w2) + self.b2[:, None])
        return torch.einsum("te,etd->td", combine.to(outputs.dtype), outputs)

    def _run_experts(self, dispatched: Tensor, expert_counts: list[int]) -> Tensor:
        """Run each expert on its contiguous slice of the dispatched tokens.

        Args:
            dispatched: (A, dim) tokens grouped by expert.
            expert_counts: rows of ``dispatched`` per expert.

        Returns:
            (A, dim) expert outputs, row for row.
        """
        outputs = []
        experts = zip(
            dispatched.split(expert_counts), self.w1, self.b1, self.w2, self.b2, strict=True
        )
        for part, w1, b1, w2, b2 in experts:
            if part.shape[0]:
                hidden = self.drop1(self.act(torch.addmm(b1, part, w1)))
                outputs.append(torch.addmm(b2, hidden, w2))
        if not outputs:  # every assignment dropped
            return dispatched.new_zeros(0, self.w2.shape[-1])
        return self.drop2(torch.cat(outputs))

    def _record_statistics(
        self, clean_logits: Tensor, noisy_logits: Tensor, probs: Tensor, routing: Routing
    ) -> None:
        """Set ``aux_loss`` and the detached routing statistics of this forward."""
        if self.balance_loss == "switch":
            self.aux_loss = load_balancing_loss(probs, probs.detach().argmax(dim=-1))
        else:
            self.aux_loss = importance_load_loss(
                clean_logits, noisy_logits, self.top_k, self.noise_std
            )
        assignments = routing.routed_counts.sum()
        self.expert_load = routing.routed_counts / assignments
        self.dropped_tokens = assignments - routing.token_index.numel()
        self.dropped_fraction = self.dropped_tokens / assignments


def set_moe_dropless(module: nn.Module, dropless: bool = True) -> int:
    """Switch every :class:`SparseMoE` inside ``module`` to (or from) dropless inference.

    Args:
        module: a network, e.g. an encoder or a whole downstream network.
        dropless: True to keep every token (inference), False for capacity dropping.

    Returns:
        The number of MoE layers switched.
    """
    layers = [layer for layer in module.modules() if isinstance(layer, SparseMoE)]
    for layer in layers:
        layer.dropless = dropless
    return len(layers)


def _check_arguments(
    num_experts: int, top_k: int, capacity_factor: float, gate_noise: float
) -> None:
    """Raise ValueError for a routing set-up SparseMoE cannot run."""
    if top_k not in SUPPORTED_TOP_K:
        raise ValueError(f"top_k must be one of {SUPPORTED_TOP_K}, got {top_k}")
    if num_experts < top_k:
        raise ValueError(f"num_experts ({num_experts}) must be at least top_k ({top_k})")
    if capacity_factor <= 0:
        raise ValueError(f"capacity_factor must be positive, got {capacity_factor}")
    if gate_noise < 0:
        raise ValueError(f"gate_noise must be non-negative, got {gate_noise}")


def _step_seconds(module: nn.Module, tokens: Tensor) -> float:
    """Wall time of one forward + backward of ``module`` on ``tokens``."""
    module.zero_grad(set_to_none=True)
    start = time.perf_counter()
    loss = module(tokens).sum() + getattr(module, "aux_loss", 0.0)
    loss.backward()
    return time.perf_counter() - start


def moe_vs_dense_seconds(
    dim: int = 384,
    tokens: int = 4096,
    num_experts: int = 8,
    top_k: int = 1,
    repeats: int = 5,
    mlp_ratio: float = 4.0,
) -> tuple[float, float]:
    """Forward+backward seconds of SparseMoE and of a timm Mlp with the same active FLOPs.

    Each token runs k experts of hidden width ``mlp_ratio * dim``, so the dense baseline of the
    same per-token FLOPs has hidden width ``k * mlp_ratio * dim`` (top-1: the Swin MLP itself;
    top-2: twice as wide); the gate and the routing are the MoE's overhead. Both run in training
    mode in this process, their steps interleaved; each figure is the best of ``repeats`` steps
    after one warm-up step each.

    Args:
        dim: token width.
        tokens: tokens per step.
        num_experts: experts of the MoE.
        top_k: experts per token (1 or 2).
        repeats: timed steps per model.
        mlp_ratio: expert hidden width over ``dim``.

    Returns:
        (moe_seconds, dense_seconds); their ratio is the MoE overhead.
    """
    hidden_dim = int(mlp_ratio * dim)
    moe = SparseMoE(dim, hidden_dim, num_experts=num_experts, top_k=top_k)
    dense = Mlp(dim, hidden_features=top_k * hidden_dim)
    inputs = torch.randn(tokens, dim, generator=torch.Generator().manual_seed(0))
    _step_seconds(moe, inputs)  # warm-up
    _step_seconds(dense, inputs)
    moe_seconds = dense_seconds = math.inf
    for _ in range(repeats):  # interleaved, so a busy spell of the machine hits both alike
        moe_seconds = min(moe_seconds, _step_seconds(moe, inputs))
        dense_seconds = min(dense_seconds, _step_seconds(dense, inputs))
    return moe_seconds, dense_seconds
