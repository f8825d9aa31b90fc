"""Classical, training-free baselines of the four downstream benchmarks.

Each baseline is a pure tensor function; scoring goes through :mod:`model.evaluation.metrics`.

- BigEarthNet: :func:`majority_scores`, the label prior as a constant score.
- Vaihingen: :func:`majority_class`, the most frequent class predicted everywhere.
- SEN12MS-CR: :func:`cloudy_input`, the cloudy image taken as the cloud-free one (the
  "no removal" reference of Ebel et al., 2021).
- SpaceNet2 pan-sharpening: :func:`bicubic_upsample` (the "EXP" interpolation reference of
  Vivone et al., 2015, "A critical comparison among pansharpening algorithms", IEEE TGRS), and the
  component-substitution methods :func:`brovey` and :func:`gram_schmidt` on top of it.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["bicubic_upsample", "brovey", "cloudy_input", "gram_schmidt", "majority_class",
           "majority_scores"]


def majority_scores(train_targets: Tensor) -> Tensor:
    """The multi-label prior: how often each class is present in the training set.

    Used as the same score vector for every evaluation sample, it ranks classes by training
    frequency and carries no information about the sample: the per-class AP it reaches is the
    class prevalence of the evaluation set, the chance level of ``mAP_macro``.

    Args:
        train_targets: (N, K) labels in {0, 1} of the training set, N >= 1.

    Returns:
        (K,) float32 label frequencies in [0, 1].

    Raises:
        ValueError: if ``train_targets`` is not (N, K) of 0 and 1.
    """
    if train_targets.ndim != 2 or train_targets.shape[0] == 0:
        raise ValueError(f"train_targets must have shape (N, K) with N >= 1, "
                         f"got {tuple(train_targets.shape)}")
    if not bool(((train_targets == 0) | (train_targets == 1)).all()):
        raise ValueError("train_targets must hold only 0 and 1")
    return train_targets.float().mean(dim=0)


def majority_class(train_masks: Tensor | Sequence[Tensor], ignore_index: int | None = 0) -> int:
    """The most frequent class of the training masks, ``ignore_index`` left out.

    The segmentation baseline predicts it on every pixel. Ties go to the smallest class index.

    Args:
        train_masks: (N, H, W) integer class indices, or a sequence of (H, W) or (N, H, W)
            masks of different sizes (e.g. Vaihingen tiles).
        ignore_index: class never returned (Vaihingen: 0, clutter/background), or None.

    Returns:
        The class index.

    Raises:
        ValueError: if a mask is not an integer (H, W) / (N, H, W) tensor of non-negative
            indices, or no pixel has a class other than ``ignore_index``.
    """
    masks = [train_masks] if isinstance(train_masks, Tensor) else list(train_masks)
    counts = torch.zeros(0, dtype=torch.long)
    for i, mask in enumerate(masks):
        if mask.ndim not in (2, 3) or mask.is_floating_point() or mask.dtype == torch.bool:
            raise ValueError(f"train_masks[{i}] must be an integer (H, W) or (N, H, W) tensor, "
                             f"got {mask.dtype} {tuple(mask.shape)}")
        if mask.numel() and int(mask.min()) < 0:
            raise ValueError(f"train_masks[{i}] holds negative class indices")
        mask_counts = torch.bincount(mask.flatten().long().cpu(), minlength=len(counts))
        mask_counts[: len(counts)] += counts
        counts = mask_counts
    if ignore_index is not None and ignore_index < len(counts):
        counts[ignore_index] = 0
    if not bool((counts > 0).any()):
        raise ValueError(f"train_masks hold no pixel of a class other than {ignore_index}")
    return int(counts.argmax())


def cloudy_input(cloudy: Tensor) -> Tensor:
    """The cloud-removal baseline: the cloudy image itself, unchanged.

    Args:
        cloudy: (B, C, H, W) cloudy optical image, in the units of the target.

    Returns:
        ``cloudy`` (the same tensor).

    Raises:
        ValueError: if ``cloudy`` is not (B, C, H, W).
    """
    if cloudy.ndim != 4:
        raise ValueError(f"cloudy must have shape (B, C, H, W), got {tuple(cloudy.shape)}")
    return cloudy


def bicubic_upsample(ms_low: Tensor, size: int | tuple[int, int]) -> Tensor:
    """Bicubic interpolation of the low-resolution MS image onto the PAN grid.

    ``torch.nn.functional.interpolate`` (Keys cubic convolution, a = -0.75, align_corners=False:
    pixel areas, not pixel centres, line up). The output is not clamped: bicubic overshoots near
    edges, and the interpolator is kept as it is, as the pan-sharpening literature uses it;
    :class:`~model.evaluation.metrics.RestorationMetrics` clamps to the valid range at scoring.

    Args:
        ms_low: (B, C, h, w) float MS image.
        size: output (H, W), or one int for a square output.

    Returns:
        (B, C, H, W) upsampled image, dtype of ``ms_low``.

    Raises:
        ValueError: if ``ms_low`` is not a float (B, C, h, w) tensor or ``size`` is not positive.
    """
    if ms_low.ndim != 4 or not ms_low.is_floating_point():
        raise ValueError(f"ms_low must be a float tensor (B, C, h, w), "
                         f"got {ms_low.dtype} {tuple(ms_low.shape)}")
    out_size = (size, size) if isinstance(size, int) else tuple(size)
    if len(out_size) != 2 or any(int(s) <= 0 for s in out_size):
        raise ValueError(f"size must be a positive int or (H, W), got {size}")
    return F.interpolate(ms_low, size=out_size, mode="bicubic", align_corners=False)


def _check_pansharpening_inputs(ms_up: Tensor, pan: Tensor) -> None:
    if ms_up.ndim != 4 or not ms_up.is_floating_point():
        raise ValueError(f"ms_up must be a float tensor (B, C, H, W), "
                         f"got {ms_up.dtype} {tuple(ms_up.shape)}")
    expected = (ms_up.shape[0], 1, *ms_up.shape[2:])
    if pan.shape != expected or not pan.is_floating_point():
        raise ValueError(f"pan must be a float tensor of shape {expected} (B, 1, H, W) as ms_up, "
                         f"got {pan.dtype} {tuple(pan.shape)}")


def _intensity(ms_up: Tensor, weights: Tensor | None) -> Tensor:
    """(B, 1, H, W) weighted mean of the MS bands; weights are normalised to sum 1."""
    channels = ms_up.shape[1]
    if weights is None:
        return ms_up.mean(dim=1, keepdim=True)
    if weights.shape != (channels,) or bool((weights < 0).any()) or not float(weights.sum()) > 0:
        raise ValueError(f"weights must be ({channels},) non-negative with a positive sum, "
                         f"got {tuple(weights.shape)}")
    weights = (weights / weights.sum()).to(ms_up)
    return (ms_up * weights.view(1, channels, 1, 1)).sum(dim=1, keepdim=True)


def brovey(ms_up: Tensor, pan: Tensor, weights: Tensor | None = None,
           eps: float = 1e-6) -> Tensor:
    """Brovey transform: scale every MS band by PAN over the MS intensity.

    ``out_b = ms_b * pan / I`` with ``I = sum_b w_b ms_b`` the weighted mean of the upsampled MS
    bands (Gillespie et al., 1987, with the intensity as a mean rather than a sum so the output
    keeps the MS radiometry; Tu et al., 2004, "Fast IHS", and Vivone et al., 2015). Band ratios
    of the MS image are kept and the output's intensity equals ``pan``. PAN is used as given
    (match it to ``I`` beforehand if the sensors' gains differ). The default weights are equal;
    per-band weights can follow the overlap of each MS band's spectral response with the PAN
    band (e.g. a small weight for a NIR band PAN barely covers).

    Args:
        ms_up: (B, C, H, W) MS image on the PAN grid (e.g. :func:`bicubic_upsample`).
        pan: (B, 1, H, W) panchromatic image.
        weights: (C,) non-negative band weights, normalised to sum 1; None for equal weights.
        eps: smallest intensity divided by; where ``I`` < ``eps`` the division uses ``eps``.

    Returns:
        (B, C, H, W) pan-sharpened image.

    Raises:
        ValueError: if a shape does not match or ``weights`` are not valid.
    """
    _check_pansharpening_inputs(ms_up, pan)
    intensity = _intensity(ms_up, weights)
    return ms_up * (pan / intensity.clamp_min(eps))


def gram_schmidt(ms_up: Tensor, pan: Tensor, weights: Tensor | None = None,
                 eps: float = 1e-12) -> Tensor:
    """Gram-Schmidt component substitution in its "GS mode 1" form (Laben and Brower, 2000).

    Written as the injection scheme it equals (Aiazzi et al., 2007, "Improving component
    substitution pansharpening through multivariate regression of MS+Pan data", IEEE TGRS):
    per image, ``I`` is the weighted mean of the MS bands, PAN is matched to ``I`` (same mean
    and standard deviation) as ``P``, and ``out_b = ms_b + g_b (P - I)`` with
    ``g_b = cov(ms_b, I) / var(I)``. The output's intensity (same weights) equals ``P``; where
    PAN already equals ``I``, the MS image is returned.

    Args:
        ms_up: (B, C, H, W) MS image on the PAN grid (e.g. :func:`bicubic_upsample`).
        pan: (B, 1, H, W) panchromatic image.
        weights: (C,) non-negative band weights, normalised to sum 1; None for equal weights.
        eps: guard for a constant image (zero variance of ``I`` or PAN).

    Returns:
        (B, C, H, W) pan-sharpened image.

    Raises:
        ValueError: if a shape does not match or ``weights`` are not valid.
    """
    _check_pansharpening_inputs(ms_up, pan)
    intensity = _intensity(ms_up, weights)
    dims = (2, 3)
    intensity_centred = intensity - intensity.mean(dim=dims, keepdim=True)
    intensity_var = intensity_centred.square().mean(dim=dims, keepdim=True)
    pan_centred = pan - pan.mean(dim=dims, keepdim=True)
    pan_std = pan_centred.square().mean(dim=dims, keepdim=True).sqrt()
    matched_pan = (pan_centred * intensity_var.sqrt() / pan_std.clamp_min(eps)
                   + intensity.mean(dim=dims, keepdim=True))
    ms_centred = ms_up - ms_up.mean(dim=dims, keepdim=True)
    covariance = (ms_centred * intensity_centred).mean(dim=dims, keepdim=True)
    gains = covariance / intensity_var.clamp_min(eps)
    return ms_up + gains * (matched_pan - intensity)
