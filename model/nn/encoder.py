"""The shared encoder of msGFM: Swin stages, SimMIM's mask token and sparse MoE MLPs.

timm's Swin (V2 by default, V1 selectable) stages over a token grid from any sensor's patch
embedding, SimMIM's mask token, and sparse MoE MLPs in chosen blocks.

The stages are timm's own (attention, windows, shifts, patch merging are not rewritten); the
encoder starts after the patch embedding, because every sensor brings its own (``f_i`` in
:mod:`model.nn.sensors`), and an MoE layer takes the place of a block's ``mlp`` attribute.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field, replace

import torch
from timm.layers import trunc_normal_
from timm.models.swin_transformer import SwinTransformerStage
from timm.models.swin_transformer_v2 import SwinTransformerV2Stage
from torch import Tensor, nn

from model.nn.moe import SparseMoE

VERSIONS = ("v1", "v2")
# Parameters of timm's Swin stages that timm's own models exempt from weight decay
# (SwinTransformer.no_weight_decay, SwinTransformerV2.no_weight_decay), matched in the name.
NO_WEIGHT_DECAY_KEYWORDS = {
    "v1": ("relative_position_bias_table",),
    "v2": ("cpb_mlp", "logit_scale"),
}


@dataclass(frozen=True)
class MoEConfig:
    """Where and how MoE layers replace MLPs.

    Defaults as Swin-MoE: 8 experts, top-1, capacity factor 1.25, in every other block of stages 3
    and 4, starting with each stage's second.

    Attributes:
        num_experts: experts per MoE layer.
        top_k: experts per token (1 or 2).
        capacity_factor: expert capacity over an even share of the tokens.
        gate_noise: the gate's training noise, std ``gate_noise / num_experts`` on the logits
            as in Tutel (0: none).
        balance_loss: the load-balancing loss, ``"switch"`` (Switch's ``E * sum f * P``) or
            ``"importance_load"`` (Shazeer et al.'s CV^2 of importance and load, Swin-MoE's
            default); see :mod:`model.nn.moe`.
        stages: 0-based stages whose blocks get MoE layers.
        first_block: first block of such a stage with an MoE layer.
        every: then every ``every``-th block.
    """

    num_experts: int = 8
    top_k: int = 1
    capacity_factor: float = 1.25
    gate_noise: float = 1.0
    balance_loss: str = "switch"
    stages: tuple[int, ...] = (2, 3)
    first_block: int = 1
    every: int = 2

    def blocks(self, stage: int, depth: int) -> list[int]:
        """The blocks of ``stage`` (with ``depth`` blocks) that get an MoE layer."""
        return list(range(self.first_block, depth, self.every)) if stage in self.stages else []


@dataclass(frozen=True)
class EncoderConfig:
    """A Swin encoder for ``input_px`` inputs cut in ``patch_px`` tokens.

    Attributes:
        version: ``"v2"`` (Swin V2, as msGFM) or ``"v1"``.
        embed_dim: width of the first stage (doubling each stage).
        depths: blocks per stage.
        num_heads: attention heads per stage.
        window_size: attention window in tokens.
        input_px: input side in pixels.
        patch_px: token side in pixels.
        mlp_ratio: MLP (and expert) hidden width over the block width.
        drop_path_rate: stochastic depth at the last block (linear from 0).
        moe: MoE placement, or None for a dense encoder.
    """

    version: str = "v2"
    embed_dim: int = 128
    depths: tuple[int, ...] = (2, 2, 18, 2)
    num_heads: tuple[int, ...] = (4, 8, 16, 32)
    window_size: int = 6
    input_px: int = 192
    patch_px: int = 4
    mlp_ratio: float = 4.0
    drop_path_rate: float = 0.1
    moe: MoEConfig | None = field(default_factory=MoEConfig)

    @property
    def out_channels(self) -> int:
        """Width of the last stage."""
        return self.embed_dim * 2 ** (len(self.depths) - 1)

    @property
    def stride(self) -> int:
        """Input pixels per output feature (32 for patch 4 and four stages)."""
        return self.patch_px * 2 ** (len(self.depths) - 1)


PRESETS: dict[str, EncoderConfig] = {
    # Swin-B at 192 px, window 6, patch 4: the paper's encoder.
    "base": EncoderConfig(),
    # A few-million-parameter Swin for CPU runs and tests; same layout, same MoE placement.
    "tiny": EncoderConfig(
        embed_dim=32, depths=(2, 2, 4, 2), num_heads=(1, 2, 4, 8), drop_path_rate=0.0
    ),
}


def encoder_config(preset: str, **overrides: object) -> EncoderConfig:
    """A preset of :data:`PRESETS` with some fields replaced.

    Raises:
        KeyError: naming the presets, for an unknown one.
    """
    if preset not in PRESETS:
        raise KeyError(f"unknown encoder preset {preset!r}; presets: {sorted(PRESETS)}")
    return replace(PRESETS[preset], **overrides)


class SwinEncoder(nn.Module):
    """Token grid (B, H/4, W/4, C_e) -> features (B, C_last, H/32, W/32)."""

    def __init__(self, config: EncoderConfig) -> None:
        """Build the stages of ``config``.

        Raises:
            ValueError: for an unknown version, mismatched depths and heads, or an input the
                windows do not tile.
        """
        super().__init__()
        if config.version not in VERSIONS:
            raise ValueError(f"Swin version {config.version!r} is not one of {VERSIONS}")
        if len(config.depths) != len(config.num_heads):
            raise ValueError(
                f"{len(config.depths)} stage depths but {len(config.num_heads)} head counts"
            )
        if config.input_px % config.stride:
            raise ValueError(
                f"input of {config.input_px} px is not a multiple of the "
                f"encoder's stride {config.stride}"
            )
        self.config = config
        self.mask_token = nn.Parameter(torch.zeros(1, 1, 1, config.embed_dim))
        trunc_normal_(self.mask_token, std=0.02)
        self.stages = nn.Sequential(*self._stages(config))
        self.norm = nn.LayerNorm(config.out_channels)

    def _stages(self, config: EncoderConfig) -> Iterator[nn.Module]:
        grid = config.input_px // config.patch_px
        rates = torch.linspace(0, config.drop_path_rate, sum(config.depths)).tolist()
        in_dim = config.embed_dim
        for i, (depth, heads) in enumerate(zip(config.depths, config.num_heads, strict=True)):
            out_dim = config.embed_dim * 2**i
            common = dict(
                dim=in_dim,
                out_dim=out_dim,
                input_resolution=(grid, grid),
                depth=depth,
                downsample=i > 0,
                num_heads=heads,
                window_size=config.window_size,
                mlp_ratio=config.mlp_ratio,
                drop_path=rates[sum(config.depths[:i]) : sum(config.depths[: i + 1])],
            )
            stage_class = SwinTransformerV2Stage if config.version == "v2" else SwinTransformerStage
            stage = stage_class(**common)
            for block in config.moe.blocks(i, depth) if config.moe else ():
                stage.blocks[block].mlp = SparseMoE(
                    out_dim,
                    int(out_dim * config.mlp_ratio),
                    num_experts=config.moe.num_experts,
                    top_k=config.moe.top_k,
                    capacity_factor=config.moe.capacity_factor,
                    gate_noise=config.moe.gate_noise,
                    balance_loss=config.moe.balance_loss,
                )
            yield stage
            in_dim = out_dim
            grid = grid // 2 if i > 0 else grid

    def no_weight_decay(self) -> set[str]:
        """Names of the parameters AdamW should not decay, as timm's Swin models list them.

        Returns:
            The mask token and, per Swin version, the attention's position-bias parameters
            (V1: the relative-position tables; V2: the continuous position-bias MLP and the
            logit scales). Norms and biases are left to the optimiser's 1-D rule.
        """
        keywords = NO_WEIGHT_DECAY_KEYWORDS[self.config.version]
        return {"mask_token"} | {
            name
            for name, _ in self.named_parameters()
            if any(keyword in name for keyword in keywords)
        }

    def moe_layers(self) -> list[SparseMoE]:
        """The MoE layers, in depth order."""
        return [module for module in self.modules() if isinstance(module, SparseMoE)]

    def aux_loss(self) -> Tensor:
        """Sum of the MoE layers' load-balancing losses of the last forward (0 when dense)."""
        losses = [layer.aux_loss for layer in self.moe_layers()]
        return torch.stack(losses).sum() if losses else self.mask_token.new_zeros(())

    def forward(self, tokens: Tensor, mask: Tensor | None = None) -> Tensor:
        """Encode a token grid, masked tokens replaced by the mask token.

        Args:
            tokens: (B, h, w, embed_dim) from a sensor's patch embedding.
            mask: (B, h, w) bool, True where a token is masked; None for none.

        Returns:
            (B, out_channels, h / 8, w / 8) features of the last stage, normalised.
        """
        return self.forward_pyramid(tokens, mask)[-1]

    def forward_pyramid(self, tokens: Tensor, mask: Tensor | None = None) -> list[Tensor]:
        """Encode a token grid and keep every stage's output, for dense prediction heads.

        Args:
            tokens: (B, h, w, embed_dim) from a sensor's patch embedding.
            mask: (B, h, w) bool, True where a token is masked; None for none.

        Returns:
            Per stage i, (B, embed_dim * 2**i, h / 2**i, w / 2**i) features; the last one
            normalised, as :meth:`forward` returns it.
        """
        if mask is not None:
            weight = mask.unsqueeze(-1).to(tokens.dtype)
            tokens = tokens * (1.0 - weight) + self.mask_token.to(tokens.dtype) * weight
        features = []
        for stage in self.stages:
            tokens = stage(tokens)
            features.append(tokens)
        features[-1] = self.norm(features[-1])
        return [stage_features.permute(0, 3, 1, 2) for stage_features in features]
