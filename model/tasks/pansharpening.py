"""SpaceNet 2 pan-sharpening at reduced resolution (Wald's protocol).

The task, its picture and baselines (bicubic, Brovey); the metrics are
:class:`~model.tasks.restoration.RestorationMetrics` with ERGAS.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from lightning import LightningDataModule
from matplotlib import pyplot as plt
from torch import Tensor
from torch.nn import functional as F

from model.tasks.downstream import Scores, TaskSpec, score
from model.tasks.panels import restoration_figure
from model.tasks.restoration import MAIN_METRIC, RestorationMetrics, RestorationTask

ERGAS_RATIO = 4.0  # 1.2 m MS sharpened to 0.3 m PAN


class PanSharpeningTask(RestorationTask):
    """SpaceNet 2 pan-sharpening at reduced resolution (Wald's protocol).

    MS upsampled to the PAN grid + PAN in, MS at the PAN grid out; PSNR, SSIM, SAM, ERGAS on the
    real (unpadded) pixels over the whole evaluation set.
    """

    ergas_ratio = ERGAS_RATIO
    mlm_task = "super-resolution"

    def scored(self, prediction: Tensor, batch: dict[str, Any]) -> tuple[Tensor, Tensor]:
        """Prediction and target cropped to the real (unpadded) pixels."""
        return valid_crop(prediction, batch["valid"]), valid_crop(batch["target"], batch["valid"])

    def figure(self, batch: dict[str, Any], prediction: Tensor) -> plt.Figure:
        """Upsampled low-resolution MS, PAN, prediction and the full-resolution MS target."""
        return pansharpening_figure(batch, prediction, self.target_info["sensor"])


def pansharpening_figure(batch: dict[str, Any], prediction: Tensor, sensor: str) -> plt.Figure:
    """Upsampled low-resolution MS, PAN, prediction and the full-resolution MS target."""
    pan = next(s for s in batch["inputs"] if s != sensor)
    return restoration_figure(
        batch,
        prediction,
        sensor,
        pan,
        ["MS upsampled (input)", "PAN (input)", "predicted", "target"],
    )


def valid_crop(image: Tensor, valid: Tensor) -> Tensor:
    """The top-left block of real pixels of a padded batch (padding is at the bottom/right).

    Args:
        image: (B, C, H, W).
        valid: (B, 1, H, W) bool, True on real pixels.

    Raises:
        ValueError: when the samples of the batch have real blocks of different sizes.
    """
    rows = valid[:, 0].any(dim=2).sum(dim=1)
    cols = valid[:, 0].any(dim=1).sum(dim=1)
    if (rows != rows[0]).any() or (cols != cols[0]).any():
        raise ValueError(
            "the batch mixes images of different real sizes: "
            f"{sorted(set(zip(rows.tolist(), cols.tolist(), strict=True)))}"
        )
    return image[..., : int(rows[0]), : int(cols[0])]


def bicubic_upsample(ms_low: Tensor, size: int | tuple[int, int]) -> Tensor:
    """Bicubic interpolation of the low-resolution MS image onto the PAN grid.

    ``torch.nn.functional.interpolate`` (Keys cubic convolution, a = -0.75, align_corners=False:
    pixel areas, not pixel centres, line up). The output is not clamped: bicubic overshoots near
    edges, and the interpolator is kept as it is, as the pan-sharpening literature uses it;
    :class:`~model.tasks.restoration.RestorationMetrics` clamps to the valid range at scoring.

    Args:
        ms_low: (B, C, h, w) float MS image.
        size: output (H, W), or one int for a square output.

    Returns:
        (B, C, H, W) upsampled image, dtype of ``ms_low``.

    Raises:
        ValueError: if ``ms_low`` is not a float (B, C, h, w) tensor or ``size`` is not positive.
    """
    if ms_low.ndim != 4 or not ms_low.is_floating_point():
        raise ValueError(
            f"ms_low must be a float tensor (B, C, h, w), got {ms_low.dtype} {tuple(ms_low.shape)}"
        )
    out_size = (size, size) if isinstance(size, int) else tuple(size)
    if len(out_size) != 2 or any(int(s) <= 0 for s in out_size):
        raise ValueError(f"size must be a positive int or (H, W), got {size}")
    return F.interpolate(ms_low, size=out_size, mode="bicubic", align_corners=False)


def _check_pansharpening_inputs(ms_up: Tensor, pan: Tensor) -> None:
    if ms_up.ndim != 4 or not ms_up.is_floating_point():
        raise ValueError(
            f"ms_up must be a float tensor (B, C, H, W), got {ms_up.dtype} {tuple(ms_up.shape)}"
        )
    expected = (ms_up.shape[0], 1, *ms_up.shape[2:])
    if pan.shape != expected or not pan.is_floating_point():
        raise ValueError(
            f"pan must be a float tensor of shape {expected} (B, 1, H, W) as ms_up, "
            f"got {pan.dtype} {tuple(pan.shape)}"
        )


def _intensity(ms_up: Tensor, weights: Tensor | None) -> Tensor:
    """(B, 1, H, W) weighted mean of the MS bands; weights are normalised to sum 1."""
    channels = ms_up.shape[1]
    if weights is None:
        return ms_up.mean(dim=1, keepdim=True)
    if weights.shape != (channels,) or bool((weights < 0).any()) or not float(weights.sum()) > 0:
        raise ValueError(
            f"weights must be ({channels},) non-negative with a positive sum, "
            f"got {tuple(weights.shape)}"
        )
    weights = (weights / weights.sum()).to(ms_up)
    return (ms_up * weights.view(1, channels, 1, 1)).sum(dim=1, keepdim=True)


def brovey(ms_up: Tensor, pan: Tensor, weights: Tensor | None = None, eps: float = 1e-6) -> Tensor:
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


def pansharpening_baselines(data: LightningDataModule) -> Scores:
    """Bicubic upsampling of the degraded MS, and the Brovey transform with the degraded PAN."""
    info = data.target_info
    methods: dict[str, Callable[[dict[str, Any]], torch.Tensor]] = {
        "bicubic": lambda b: _upsampled(b),
        "brovey": lambda b: brovey(_upsampled(b), valid_crop(b["pan_low"], b["valid"])),
    }
    results = {}
    for name, method in methods.items():
        pairs = ((method(b), valid_crop(b["target"], b["valid"])) for b in data.test_dataloader())
        results[name] = score(
            RestorationMetrics(info["data_range"], ergas_ratio=ERGAS_RATIO), pairs
        )
    return results


def _upsampled(batch: dict[str, Any]) -> torch.Tensor:
    """The degraded MS (its real block) upsampled bicubically to the target's real size."""
    height, width = valid_crop(batch["target"], batch["valid"]).shape[-2:]
    ratio = batch["target"].shape[-1] // batch["ms_low"].shape[-1]
    real_low = batch["ms_low"][..., : height // ratio, : width // ratio]
    return bicubic_upsample(real_low, (height, width))


SPEC = TaskSpec(
    name="pansharpening",
    task_class=PanSharpeningTask,
    title="SpaceNet 2 (WorldView-3)",
    columns=(("PSNR", True), ("SSIM", True), ("SAM", False), ("ERGAS", False)),
    main_metric=MAIN_METRIC,
    baselines=pansharpening_baselines,
    paper="PSNR 22.85",
)
