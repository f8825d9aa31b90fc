"""What cloud removal and pan-sharpening share.

Image-to-image regression as a residual over an input of the target's sensor, and its metrics
(MAE, RMSE, PSNR, SSIM, SAM, ERGAS, and the checkerboard ratio of the head's upsampling)
accumulated over a whole evaluation set.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor
from torchmetrics import MeanAbsoluteError, MeanSquaredError, Metric, MetricCollection
from torchmetrics.functional.image import error_relative_global_dimensionless_synthesis
from torchmetrics.image import (
    PeakSignalNoiseRatio,
    StructuralSimilarityIndexMeasure,
)

from model.tasks.downstream import DownstreamTask

MAIN_METRIC = "PSNR"


class _MeanSpectralAngle(Metric):
    """Mean spectral angle over all pixels of all images, in degrees, with bounded memory.

    The angle of a pixel is ``arccos(<p, t> / (|p| |t|))``, as torchmetrics'
    ``SpectralAngleMapper`` computes it; that class keeps every image until ``compute`` (tens
    of GB for SEN12MS-CR's test set) and gives NaN for an all-zero spectrum. Here a running sum
    is kept, and a pixel whose spectrum is all zero in either image scores 90 degrees (no
    direction in common), so one dark predicted pixel cannot turn the set's SAM into NaN.
    """

    full_state_update = False

    def __init__(self) -> None:
        super().__init__()
        self.add_state("sum_degrees", torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("num_pixels", torch.tensor(0), dist_reduce_fx="sum")

    def update(self, preds: Tensor, target: Tensor) -> None:
        """Add the angles of every pixel of a (B, C, H, W) batch."""
        preds, target = preds.double(), target.double()
        dot = (preds * target).sum(dim=1)
        norms = preds.norm(dim=1) * target.norm(dim=1)
        cosine = torch.where(
            norms > 0, dot / norms.clamp(min=torch.finfo(norms.dtype).tiny), torch.zeros_like(dot)
        )
        self.sum_degrees += torch.rad2deg(torch.arccos(cosine.clamp(-1.0, 1.0))).sum()
        self.num_pixels += dot.numel()

    def compute(self) -> Tensor:
        """Mean angle in degrees."""
        return self.sum_degrees / self.num_pixels


class _MeanERGAS(Metric):
    """ERGAS per image (torchmetrics' formula), averaged over images with bounded memory.

    torchmetrics' ``ErrorRelativeGlobalDimensionlessSynthesis`` stores every image until
    ``compute``; its score is the mean of per-image ERGAS, so a running sum gives the same value.
    """

    full_state_update = False

    def __init__(self, ratio: float) -> None:
        super().__init__()
        self.ratio = ratio
        self.add_state("sum_ergas", torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("num_images", torch.tensor(0), dist_reduce_fx="sum")

    def update(self, preds: Tensor, target: Tensor) -> None:
        """Add the per-image ERGAS of a batch."""
        self.sum_ergas += error_relative_global_dimensionless_synthesis(
            preds, target, ratio=self.ratio, reduction="sum"
        )
        self.num_images += preds.shape[0]

    def compute(self) -> Tensor:
        """Mean ERGAS over the images seen."""
        return self.sum_ergas / self.num_images


def hann_windowed(image: Tensor) -> Tensor:
    """(..., H, W) images less their mean, times a 2-D Hann window (``torch.hann_window``).

    The DFT treats an image as one tile of a periodic plane, so the jumps (and kinks) between
    opposite borders leak energy along the frequency axes, slowly decaying; the window falls to
    0 with zero slope at every border, so that leakage stays within a bin or two of DC (Harris,
    "On the use of windows for harmonic analysis with the DFT", Proc. IEEE 66, 1978).
    """
    height, width = image.shape[-2:]
    rows = torch.hann_window(height, periodic=False, dtype=image.dtype, device=image.device)
    cols = torch.hann_window(width, periodic=False, dtype=image.dtype, device=image.device)
    centred = image - image.mean(dim=(-2, -1), keepdim=True)
    return centred * (rows[:, None] * cols[None, :])


class CheckerboardRatio(Metric):
    """Spectral peak of the predictions at the upsampler's period, over the targets' peak.

    A head that upsamples by ``period`` (a pixel shuffle, a transposed convolution) leaves, when
    its sub-pixel filters disagree, the same pattern in every ``period`` x ``period`` block of
    its output: the checkerboard artefact (Odena et al., 2016; Aitken et al., 2017). The
    spectrum of a ``period``-periodic pattern lies on the bins of frequencies that are multiples
    of ``1 / period`` cycles per pixel along rows and columns, ``(k H / period, l W / period)``
    for ``(k, l) != (0, 0)`` (the *peak bins*), so the artefact is a set of sharp peaks there.

    Content and noise have smooth spectra: a bin one step away (``1 / H`` cycles per pixel)
    holds about as much energy as the peak bin. So the measure is the *peak*: the energy at the
    peak bins over the mean energy at their 8 neighbouring bins (orthonormal 2-D DFT, each
    image and band apart, summed over the set), about 1 without a periodic pattern whatever the
    image's noise, cloud or sharpness; the ratio is the predictions' peak over the targets'. An
    earlier version divided the energies at the peak bins alone; it counted whatever broadband
    content an image has there, so a cloudy Sentinel-2 input scored 6.4 against its clear
    target and a restoration that keeps some of the input's texture could not reach 1.

    The DFT is taken of the image windowed (:func:`hann_windowed`), not of the image itself.
    Unwindowed, the borders' jumps put a cross of energy along the frequency axes, which holds
    the peak bins on the axes but few of their neighbours, and the smoother an image, the less
    its own content hides the cross: on the sample world's pan-sharpening test split, the raw
    DFT scored a Gaussian blur (sigma 1 px) of the targets 1.71 and bicubic upsampling 2.18,
    though neither adds a periodic pattern; windowed, 1.05 and 0.53 (bicubic's interpolation
    kernel is near zero at the peak bins). The window spreads each peak over its 3 x 3 bins,
    so a pure pattern scores at most 6.4 times a flat spectrum, and small ones still show: a
    4x4-periodic pattern with 1 % (3 %) of the targets' standard deviation added to the
    prediction of a 300-step pan-sharpening fine-tune raised its score from 1.06 to 1.41 (3.58).

    Identical images score exactly 1, a checkerboard well above 1; shifting the pattern's phase
    or adding smooth content barely changes the score. Images are cropped to a multiple of
    ``period`` from the top-left corner (the upsampler's grid starts there, also after the
    valid-pixel crop of padded tasks) and must be at least ``3 * period`` pixels a side, so
    that the neighbourhoods of peak bins do not touch. Constant targets give NaN.

    Args:
        period: the upsampling factor, in pixels (the patch size, 4).
    """

    full_state_update = False
    higher_is_better = False
    NEIGHBOURS = 8

    def __init__(self, period: int = 4) -> None:
        """Initialize the sums (``period`` as on the class; at least 2)."""
        super().__init__()
        if period < 2:
            raise ValueError(f"period must be at least 2 px, got {period}")
        self.period = period
        for name in ("prediction_peak", "prediction_near", "target_peak", "target_near"):
            self.add_state(name, torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")

    def update(self, preds: Tensor, target: Tensor) -> None:
        """Add the energies of a (B, C, H, W) batch, H and W at least ``3 * period``."""
        for image in preds:
            peak, near = self.spectral_energies(image)
            self.prediction_peak += peak
            self.prediction_near += near
        for image in target:
            peak, near = self.spectral_energies(image)
            self.target_peak += peak
            self.target_near += near

    def spectral_energies(self, image: Tensor) -> tuple[Tensor, Tensor]:
        """DFT energy of a (C, H, W) image at the peak bins and, per peak bin, at their neighbours.

        Both summed over bands; the second is the energy of the neighbouring bins over 8, so that
        the two are equal for a locally flat spectrum.
        """
        p = self.period
        height, width = (side - side % p for side in image.shape[-2:])
        if min(height, width) < 3 * p:
            raise ValueError(
                f"images of {tuple(image.shape[-2:])} px are smaller than 3 periods ({3 * p} px)"
            )
        cropped = hann_windowed(image[..., :height, :width].double())
        return self.peak_and_near(torch.fft.fft2(cropped, norm="ortho").abs().square().sum(dim=0))

    def peak_and_near(self, power: Tensor) -> tuple[Tensor, Tensor]:
        """Energy of an (H, W) power spectrum at the peak bins, and at their neighbours over 8.

        H and W are multiples of the period.
        """
        p = self.period
        height, width = power.shape
        peak = torch.zeros(height, width, dtype=torch.bool, device=power.device)
        peak[0 :: height // p, 0 :: width // p] = True
        peak[0, 0] = False
        near = torch.zeros_like(peak)
        for shift in ((-1, -1), (-1, 0), (-1, 1), (0, -1), (0, 1), (1, -1), (1, 0), (1, 1)):
            near |= peak.roll(shift, dims=(0, 1))
        return power[peak].sum(), power[near].sum() / self.NEIGHBOURS

    def compute(self) -> Tensor:
        """Predictions' peak (peak-bin energy over neighbour energy) over the targets'."""
        return (self.prediction_peak / self.prediction_near) / (self.target_peak / self.target_near)


class RestorationMetrics(MetricCollection):
    """Image restoration scores: cloud removal (SEN12MS-CR) and pan-sharpening (SpaceNet2).

    Inputs are (B, C, H, W) float images in physical units (e.g. S2 reflectance, ``data_range``
    1); both are clamped to [0, ``data_range``] before scoring, so out-of-range predictions (and
    saturated targets) count at the edge of the range. Keys of ``compute()``:

    - ``MAE``, ``RMSE``: global, over all pixels and bands of the set
      (``sqrt(sum of squared errors / number of values)``).
    - ``PSNR`` (dB): per image, ``10 log10(data_range^2 / MSE_image)``, then averaged over the
      images of the set, as the SEN12MS-CR literature reports it (Ebel et al., 2021 and 2023);
      a perfect image scores +inf, and so does the mean.
    - ``SSIM``: torchmetrics' SSIM (Gaussian window of 11 taps, sigma 1.5, K1 = 0.01, K2 = 0.03,
      ``data_range``) per image, mean of the SSIM map over bands and pixels, then averaged over
      images. torchmetrics reflect-pads the images and keeps the border in that mean, whereas
      scikit-image crops a 5-pixel border; the interior SSIM maps agree.
    - ``SAM`` (degrees): the angle between the predicted and target spectra of each pixel,
      ``arccos(<p, t> / (|p| |t|))``, averaged over all pixels of all images (torchmetrics'
      ``SpectralAngleMapper``, which it equals on spectra that are not all zero). Needs C >= 2; a
      pixel whose spectrum is all zero in either image counts as 90 degrees.
    - ``ERGAS`` (only with ``ergas_ratio``): per image
      ``100 / ergas_ratio * sqrt(mean_b(RMSE_b^2 / mu_b^2))`` with ``mu_b`` the target mean of
      band b (torchmetrics' formula), averaged over images. The textbook ERGAS (Wald, 2002) is
      ``100 (h / l) sqrt(...)`` with h / l the high- over low-resolution pixel size, so
      ``ergas_ratio`` is l / h, the pixel size of the low-resolution input over that of the
      output: 4 for 1.2 m MS sharpened to 0.3 m PAN. A band of zero target mean gives +inf.
    - ``checkerboard_ratio``: :class:`CheckerboardRatio` with ``checkerboard_period``: the
      predictions' spectral peak at the head's upsampling period over the targets' (about 1
      without artefacts).

    Args:
        data_range: upper bound of valid values (the lower bound is 0).
        ergas_ratio: low- over high-resolution pixel size (>= 1), or None to skip ERGAS.
        checkerboard_period: the prediction head's upsampling factor, in pixels.

    Raises:
        ValueError: if ``data_range`` <= 0 or ``ergas_ratio`` < 1.
    """

    def __init__(
        self, data_range: float, ergas_ratio: float | None = None, checkerboard_period: int = 4
    ) -> None:
        """Initialize a new RestorationMetrics instance (arguments as on the class)."""
        if not data_range > 0:
            raise ValueError(f"data_range must be > 0, got {data_range}")
        if ergas_ratio is not None and not ergas_ratio >= 1:
            raise ValueError(
                f"ergas_ratio must be the low- over high-resolution pixel size (>= 1, e.g. 4 for "
                f"1.2 m MS to 0.3 m PAN), got {ergas_ratio}"
            )
        metrics: dict[str, Metric] = {
            "MAE": MeanAbsoluteError(),
            "RMSE": MeanSquaredError(squared=False),
            "PSNR": PeakSignalNoiseRatio(data_range=data_range, dim=(1, 2, 3)),
            "SSIM": StructuralSimilarityIndexMeasure(
                gaussian_kernel=True, sigma=1.5, kernel_size=11, data_range=data_range
            ),
            "SAM": _MeanSpectralAngle(),
            "checkerboard_ratio": CheckerboardRatio(checkerboard_period),
        }
        if ergas_ratio is not None:
            metrics["ERGAS"] = _MeanERGAS(ergas_ratio)
        super().__init__(metrics, compute_groups=False)
        self.data_range = data_range

    def update(self, preds: Tensor, targets: Tensor) -> None:  # type: ignore[override]
        """Add a batch.

        Args:
            preds: (B, C, H, W) float predictions, C >= 2.
            targets: (B, C, H, W) float references.

        Raises:
            ValueError: if a shape or dtype does not match.
        """
        super().update(*self._prepare(preds, targets))

    def forward(self, preds: Tensor, targets: Tensor) -> dict[str, Any]:  # type: ignore[override]
        """Add a batch and return the metrics of that batch alone."""
        return super().forward(*self._prepare(preds, targets))

    def _prepare(self, preds: Tensor, targets: Tensor) -> tuple[Tensor, Tensor]:
        if preds.ndim != 4 or preds.shape[1] < 2:
            raise ValueError(
                f"preds must have shape (B, C, H, W) with C >= 2, got {tuple(preds.shape)}"
            )
        if targets.shape != preds.shape:
            raise ValueError(
                f"targets must have shape {tuple(preds.shape)} as preds, got {tuple(targets.shape)}"
            )
        for name, tensor in (("preds", preds), ("targets", targets)):
            if not tensor.is_floating_point():
                raise ValueError(f"{name} must be a float tensor, got {tensor.dtype}")
        dtype = torch.promote_types(preds.dtype, targets.dtype)
        return (
            preds.to(dtype).clamp(0, self.data_range),
            targets.to(dtype).clamp(0, self.data_range),
        )


class RestorationTask(DownstreamTask):
    """Image-to-image regression as a residual over an input of the target's sensor.

    The head predicts, in normalised units, what to add to that input; the loss is L1 there.
    """

    ergas_ratio: float | None = None
    prediction = "The restored image of the target sensor, in its model unit."

    def output_channels(self, info: dict[str, Any]) -> int:
        """The target's channels."""
        return int(info["channels"])

    def configure_metrics(self, info: dict[str, Any]) -> MetricCollection:
        """Restoration metrics over the target's data range; ERGAS if the task sets a ratio.

        The checkerboard ratio's period is the encoder's patch size, the dense head's upsampling.
        """
        return RestorationMetrics(
            float(info["data_range"]),
            ergas_ratio=self.ergas_ratio,
            checkerboard_period=self.network.encoder.config.patch_px,
        )

    def predict_from(self, output: Tensor, batch: dict[str, Any]) -> Tensor:
        """The input of the target's sensor plus the head's output, added in normalised units."""
        sensor = self.target_info["sensor"]
        base = self.normalise(sensor, batch["inputs"][sensor])
        return self.denormalise(sensor, base + output)

    def loss(self, prediction: Tensor, batch: dict[str, Any]) -> Tensor:
        """L1 in normalised units, over the ``valid`` pixels where the batch marks them."""
        sensor = self.target_info["sensor"]
        error = (self.normalise(sensor, prediction) - self.normalise(sensor, batch["target"])).abs()
        valid = batch.get("valid")
        if valid is None:
            return error.mean()
        weight = valid.to(error.dtype).expand_as(error)
        return (error * weight).sum() / weight.sum().clamp(min=1.0)
