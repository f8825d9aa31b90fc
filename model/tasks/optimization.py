"""The optimiser and learning-rate schedule every task trains with.

AdamW whose weight decay spares what the network itself lists in ``no_weight_decay()`` (timm's
convention: Swin V2's ``logit_scale`` and continuous position-bias MLP, Swin V1's
relative-position tables, SimMIM's mask token) as well as every norm and bias (timm's
:func:`~timm.optim.param_groups_weight_decay`), then a linear warm-up and a cosine decay to 0 from
torch's schedulers, stepped once per optimiser step.
"""

from __future__ import annotations

from typing import Any

import torch
from timm.optim import param_groups_layer_decay, param_groups_weight_decay
from torch import nn
from torch.optim import Optimizer
from torch.optim.lr_scheduler import CosineAnnealingLR, LinearLR, LRScheduler, SequentialLR


def no_weight_decay_names(module: nn.Module) -> set[str]:
    """The full names of the parameters that ``module``'s submodules exempt from weight decay.

    Every submodule (``module`` included) with a ``no_weight_decay()`` method, as timm's models
    have, contributes the names it returns, prefixed with its own place in ``module``.

    Args:
        module: the network to train.

    Returns:
        Parameter names as ``module.named_parameters()`` gives them.
    """
    names: set[str] = set()
    for prefix, submodule in module.named_modules():
        listed = getattr(submodule, "no_weight_decay", None)
        if callable(listed):
            names.update(f"{prefix}.{name}" if prefix else name for name in listed())
    return names


def warmup_cosine(optimizer: Optimizer, warmup_steps: int, total_steps: int) -> LRScheduler:
    """Learning-rate factor: linear warm-up, then a cosine from 1 to 0 at ``total_steps``.

    Linear from ``1 / warmup_steps`` to 1 over the warm-up: ``(step + 1) / warmup_steps`` for a
    step before ``warmup_steps``, then ``0.5 (1 + cos(pi progress))`` with ``progress`` the share
    of the remaining steps done.

    Args:
        optimizer: whose learning rates are scaled.
        warmup_steps: steps of linear warm-up (0: none).
        total_steps: steps of the whole run.

    Returns:
        The scheduler, to step once per optimiser step.

    Raises:
        ValueError: naming both, if ``warmup_steps`` is negative or above ``total_steps``.
    """
    if not 0 <= warmup_steps <= total_steps:
        raise ValueError(
            f"warmup_steps must lie in [0, total_steps={total_steps}], got {warmup_steps}"
        )
    cosine = CosineAnnealingLR(optimizer, T_max=max(total_steps - warmup_steps, 1))
    if warmup_steps == 0:
        return cosine
    warmup = LinearLR(
        optimizer, start_factor=1 / warmup_steps, end_factor=1.0, total_iters=warmup_steps - 1
    )
    return SequentialLR(optimizer, [warmup, cosine], milestones=[warmup_steps])


def adamw_warmup_cosine(
    module: nn.Module,
    lr: float,
    weight_decay: float,
    warmup_steps: int,
    total_steps: int,
    layer_decay: float | None = None,
) -> dict[str, Any]:
    """What a LightningModule's ``configure_optimizers`` returns.

    AdamW over ``module`` (no decay on its :func:`no_weight_decay_names`, norms and biases) with
    :func:`warmup_cosine`. With ``layer_decay``, each parameter group's peak learning rate is
    ``lr`` times timm's ``lr_scale`` of its layer (kept in the group as ``lr_scale``); the
    schedule scales every group's rate by the same factor.

    Args:
        module: the network to train; with ``layer_decay`` it needs timm's
            ``group_matcher(coarse=False)``.
        lr: peak learning rate (of the last layer, the head, with ``layer_decay``).
        weight_decay: AdamW weight decay of the other parameters.
        warmup_steps: optimiser steps of linear warm-up.
        total_steps: optimiser steps of the whole run (at least 1 is assumed).
        layer_decay: learning-rate factor per layer below the head (e.g. 0.9); None or 1.0
            for one learning rate everywhere.

    Returns:
        ``{"optimizer": ..., "lr_scheduler": {"scheduler": ..., "interval": "step"}}``.

    Raises:
        TypeError: if ``warmup_steps`` is not an int (a share of the steps was passed).
        ValueError: if ``layer_decay`` is given and ``module`` has no ``group_matcher``.
    """
    if isinstance(warmup_steps, bool) or not isinstance(warmup_steps, int):
        raise TypeError(
            f"warmup_steps must be an int number of optimiser steps, got {warmup_steps!r}"
        )
    total = max(total_steps, 1)
    no_decay = no_weight_decay_names(module)
    if layer_decay is None or layer_decay == 1.0:
        groups = param_groups_weight_decay(
            module, weight_decay=weight_decay, no_weight_decay_list=no_decay
        )
    else:
        if not callable(getattr(module, "group_matcher", None)):
            raise ValueError(
                f"layer_decay={layer_decay} needs layer ids, but {type(module).__name__} has no "
                "group_matcher(coarse=False)"
            )
        groups = param_groups_layer_decay(
            module,
            weight_decay=weight_decay,
            no_weight_decay_list=no_decay,
            layer_decay=layer_decay,
        )
        for group in groups:  # timm's schedulers read lr_scale; torch's read each group's lr
            group["lr"] = lr * group["lr_scale"]
    optimizer = torch.optim.AdamW(groups, lr=lr, weight_decay=weight_decay)
    schedule = warmup_cosine(optimizer, warmup_steps, total)
    return {"optimizer": optimizer, "lr_scheduler": {"scheduler": schedule, "interval": "step"}}
