"""SimMIM masking and reconstruction loss (Xie et al., CVPR 2022), as msGFM pretrains with them.

:class:`MaskGenerator` draws SimMIM's random mask: the input is cut into square mask cells
(32 px by default), a fixed share of them is masked, and the mask is returned at the encoder's
token resolution (one token per 4 px patch). :func:`masked_l1_loss` is SimMIM's L1 loss on the
masked pixels only, extended so that nodata target pixels (NaN, or outside a validity mask) are
left out.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

LOSS_EPSILON = 1e-5  # SimMIM's guard against an empty mask in the loss denominator


def _require_positive(name: str, value: int) -> None:
    if value <= 0:
        raise ValueError(f"{name} must be a positive number of pixels, got {value}")


def _require_multiple(name: str, value: int, of_name: str, of_value: int) -> None:
    if value % of_value:
        raise ValueError(f"{name} ({value} px) must be a multiple of {of_name} ({of_value} px)")


def upsample_token_mask(token_mask: Tensor, model_patch_px: int) -> Tensor:
    """A token-resolution mask expanded to pixel resolution.

    Args:
        token_mask: (B, h, w) mask, one entry per model patch (True = masked).
        model_patch_px: side of a model patch (token) in pixels.

    Returns:
        (B, 1, h * model_patch_px, w * model_patch_px) boolean mask, each token repeated over
        the pixels of its patch.

    Raises:
        ValueError: if ``token_mask`` is not 3-dimensional.
    """
    if token_mask.dim() != 3:
        raise ValueError(f"token_mask must be (B, h, w), got shape {tuple(token_mask.shape)}")
    pixels = token_mask.bool().repeat_interleave(model_patch_px, dim=1)
    return pixels.repeat_interleave(model_patch_px, dim=2).unsqueeze(1)


class MaskGenerator:
    """SimMIM's random mask: whole mask cells masked, returned at token resolution.

    The ``input_px`` square input is cut into ``(input_px / mask_patch_px) ** 2`` cells; in every
    sample exactly ``mask_count`` of them, drawn uniformly without replacement, are masked.
    ``mask_count`` is ``mask_ratio * cells`` rounded to the nearest integer, halves up (SimMIM
    takes the ceiling; both give 22 of 36 cells at the defaults, 0.6 * 36 = 21.6). Each cell
    covers ``mask_patch_px / model_patch_px`` tokens per side.
    """

    def __init__(
        self,
        input_px: int = 192,
        mask_patch_px: int = 32,
        model_patch_px: int = 4,
        mask_ratio: float = 0.6,
    ) -> None:
        """Check the geometry and fix the number of masked cells.

        Args:
            input_px: side of the (square) input in pixels.
            mask_patch_px: side of a mask cell in pixels.
            model_patch_px: side of a model patch (token) in pixels.
            mask_ratio: share of the cells to mask, in [0, 1].

        Raises:
            ValueError: if a size is not positive, ``input_px`` is not a multiple of
                ``mask_patch_px``, ``mask_patch_px`` is not a multiple of ``model_patch_px``,
                or ``mask_ratio`` is outside [0, 1].
        """
        for name, value in (
            ("input_px", input_px),
            ("mask_patch_px", mask_patch_px),
            ("model_patch_px", model_patch_px),
        ):
            _require_positive(name, value)
        _require_multiple("input_px", input_px, "mask_patch_px", mask_patch_px)
        _require_multiple("mask_patch_px", mask_patch_px, "model_patch_px", model_patch_px)
        if not 0.0 <= mask_ratio <= 1.0:
            raise ValueError(f"mask_ratio must lie in [0, 1], got {mask_ratio}")
        self.input_px = input_px
        self.mask_patch_px = mask_patch_px
        self.model_patch_px = model_patch_px
        self.mask_ratio = mask_ratio
        self.cells_per_side = input_px // mask_patch_px
        self.tokens_per_cell_side = mask_patch_px // model_patch_px
        self.cell_count = self.cells_per_side**2
        self.mask_count = math.floor(mask_ratio * self.cell_count + 0.5)

    def __call__(
        self,
        batch_size: int,
        generator: torch.Generator | None = None,
        device: torch.device | str | None = None,
    ) -> Tensor:
        """Draw one mask per sample.

        Args:
            batch_size: number of masks to draw.
            generator: source of randomness, for reproducible masks; the global one if None.
            device: where to build the mask; the generator's device (or the CPU) if None.

        Returns:
            (batch_size, input_px / model_patch_px, input_px / model_patch_px) boolean mask at
            token resolution, True where a token is masked.
        """
        if device is None and generator is not None:
            device = generator.device
        scores = torch.rand(batch_size, self.cell_count, generator=generator, device=device)
        masked_cells = scores.argsort(dim=1)[:, : self.mask_count]
        cell_mask = torch.zeros(batch_size, self.cell_count, dtype=torch.bool, device=device)
        cell_mask.scatter_(1, masked_cells, True)
        cell_mask = cell_mask.view(batch_size, self.cells_per_side, self.cells_per_side)
        token_mask = cell_mask.repeat_interleave(self.tokens_per_cell_side, dim=1)
        return token_mask.repeat_interleave(self.tokens_per_cell_side, dim=2)

    def to_pixels(self, token_mask: Tensor) -> Tensor:
        """A mask from :meth:`__call__` at pixel resolution, (B, 1, input_px, input_px)."""
        return upsample_token_mask(token_mask, self.model_patch_px)


def masked_l1_loss(
    prediction: Tensor,
    target: Tensor,
    token_mask: Tensor,
    model_patch_px: int,
    valid: Tensor | None = None,
) -> Tensor:
    """SimMIM's L1 reconstruction loss over the masked, valid pixels.

    With ``m`` the token mask upsampled to pixels and broadcast over the channels, and
    ``M = m & ~isnan(target) & valid`` (B, C, H, W)::

        loss = sum(|prediction - target| * M) / (sum(M) + 1e-5)

    the mean absolute error over the masked values. Without NaN, ``sum(M) = C * sum(m)`` and
    this is SimMIM's ``sum(|p - t| * m) / (sum(m) + eps) / C`` (the epsilon aside, only
    there for an empty mask). Nodata target values (NaN, or False in ``valid``) count as
    unmasked: they add to neither sum, so neither the loss nor its gradient depends on (or
    becomes) their value. An empty mask gives 0.

    Args:
        prediction: (B, C, H, W) reconstruction.
        target: (B, C, H, W) normalised input, NaN where there is no data.
        token_mask: (B, H / model_patch_px, W / model_patch_px) mask, True = masked.
        model_patch_px: side of a model patch (token) in pixels.
        valid: bool, True where the target holds data, (B, C, H, W) or (B, 1, H, W) for every
            band alike (the datamodule's ``valid``: its nodata became 0 before the loss, so no
            NaN marks it); None: every non-NaN value.

    Returns:
        The scalar loss.

    Raises:
        ValueError: if the shapes of ``prediction``, ``target``, ``token_mask`` and ``valid``
            disagree.
    """
    if prediction.shape != target.shape or prediction.dim() != 4:
        raise ValueError(
            f"prediction {tuple(prediction.shape)} and target "
            f"{tuple(target.shape)} must be the same (B, C, H, W) shape"
        )
    pixel_mask = upsample_token_mask(token_mask, model_patch_px)
    batch, _, height, width = target.shape
    if pixel_mask.shape != (batch, 1, height, width):
        raise ValueError(
            f"token_mask {tuple(token_mask.shape)} at {model_patch_px} px per token "
            f"does not cover the target {tuple(target.shape)}"
        )
    missing = torch.isnan(target)
    if valid is not None:
        if valid.dim() != 4 or valid.shape[1] not in (1, target.shape[1]):
            raise ValueError(
                f"valid {tuple(valid.shape)} is neither (B, 1, H, W) nor (B, C, H, W) "
                f"of the target {tuple(target.shape)}"
            )
        missing = missing | ~valid.bool().expand_as(target)
    counted = pixel_mask & ~missing
    errors = (prediction - target.masked_fill(missing, 0.0)).abs()
    total = torch.where(counted, errors, torch.zeros_like(errors)).sum()
    return total / (counted.sum() + LOSS_EPSILON)
