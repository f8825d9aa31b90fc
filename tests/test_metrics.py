"""Downstream metrics (in their task modules, model/tasks/) against exact reference values."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from skimage.metrics import peak_signal_noise_ratio, structural_similarity
from sklearn.metrics import accuracy_score, average_precision_score, jaccard_score
from torch import Tensor
from torchmetrics.functional.image import (
    spectral_angle_mapper,
    structural_similarity_index_measure,
)
from torchmetrics.image import ErrorRelativeGlobalDimensionlessSynthesis

from model.tasks.classification import ClassificationMetrics
from model.tasks.restoration import CheckerboardRatio, RestorationMetrics, hann_windowed
from model.tasks.segmentation import SegmentationMetrics


def _generator(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _images(seed: int, shape: tuple[int, ...] = (4, 3, 24, 20)) -> tuple[Tensor, Tensor]:
    """Float64 (preds, targets) in [0, 1] with a few preds out of range, to exercise clamping."""
    generator = _generator(seed)
    targets = 0.05 + 0.9 * torch.rand(*shape, generator=generator, dtype=torch.float64)
    preds = targets + 0.1 * torch.randn(*shape, generator=generator, dtype=torch.float64)
    return preds, targets


def _assert_same(left: dict[str, Tensor], right: dict[str, Tensor], tol: float = 1e-6) -> None:
    assert left.keys() == right.keys()
    for key in left:
        assert float(left[key]) == pytest.approx(float(right[key]), abs=tol, rel=tol), key


# --- classification ---------------------------------------------------------------------------

# Two classes, four samples, no tied scores. Class 0 ranks labels 1, 0, 1, 0: AP = (1 + 2/3) / 2.
# Class 1 ranks 0.85 (1), 0.4 (0), 0.35 (0), 0.1 (1): AP = (1 + 2/4) / 2. Micro ranks all eight:
# 0.9 (1), 0.85 (1), 0.8 (0), 0.7 (1), 0.6 (0), 0.4 (0), 0.35 (0), 0.1 (1): AP = (1 + 1 + 3/4 +
# 4/8) / 4.
HAND_SCORES = torch.tensor([[0.9, 0.1], [0.8, 0.4], [0.7, 0.35], [0.6, 0.85]])
HAND_TARGETS = torch.tensor([[1, 1], [0, 0], [1, 0], [0, 1]])


def test_map_hand_computed() -> None:
    metrics = ClassificationMetrics(2, from_logits=False)
    metrics.update(HAND_SCORES, HAND_TARGETS)
    result = metrics.compute()
    assert float(result["mAP_macro"]) == pytest.approx(((1 + 2 / 3) / 2 + 0.75) / 2, abs=1e-6)
    assert float(result["mAP_micro"]) == pytest.approx(0.8125, abs=1e-6)


def test_map_logits_keep_one_scale_across_batches() -> None:
    """A batch of logits that happens to lie in [0, 1] is ranked as logits with the others
    (torchmetrics alone would leave it as probabilities and sigmoid only the other batch)."""
    inside = torch.tensor([[0.2, 0.9], [0.5, 0.1]])
    outside = torch.tensor([[-1.0, 2.0], [3.0, -0.5], [0.7, 0.3], [-2.0, 0.6]])
    targets = torch.tensor([[1, 0], [0, 1], [0, 1], [1, 0], [1, 1], [0, 0]])
    metrics = ClassificationMetrics(2)
    metrics.update(inside, targets[:2])
    metrics.update(outside, targets[2:])
    result = metrics.compute()
    y_true, y_score = targets.numpy(), torch.cat([inside, outside]).numpy()
    for average in ("micro", "macro"):
        expected = average_precision_score(y_true, y_score, average=average)
        assert float(result[f"mAP_{average}"]) == pytest.approx(expected, abs=1e-6)


def test_map_matches_sklearn_over_batches() -> None:
    generator = _generator(0)
    num_classes = 19
    targets = (torch.rand(200, num_classes, generator=generator) < 0.3).long()
    logits = torch.randn(200, num_classes, generator=generator) + 1.5 * targets
    metrics = ClassificationMetrics(num_classes)
    for start in range(0, 200, 64):  # uneven batches: 64, 64, 64, 8
        metrics.update(logits[start : start + 64], targets[start : start + 64])
    result = metrics.compute()
    y_true, y_score = targets.numpy(), logits.numpy()
    for average in ("micro", "macro"):
        expected = average_precision_score(y_true, y_score, average=average)
        assert float(result[f"mAP_{average}"]) == pytest.approx(expected, abs=1e-5)


def test_classification_rejects_bad_inputs() -> None:
    metrics = ClassificationMetrics(3)
    with pytest.raises(ValueError, match="scores must have shape"):
        metrics.update(torch.zeros(2, 4), torch.zeros(2, 4, dtype=torch.long))
    with pytest.raises(ValueError, match="targets must have shape"):
        metrics.update(torch.zeros(2, 3), torch.zeros(3, 3, dtype=torch.long))
    with pytest.raises(ValueError, match="targets must be an integer tensor of 0 and 1"):
        metrics.update(torch.zeros(2, 3), torch.full((2, 3), 2))
    with pytest.raises(ValueError, match=r"scores must lie in \[0, 1\]"):
        ClassificationMetrics(3, from_logits=False).update(
            torch.full((2, 3), 2.0), torch.zeros(2, 3, dtype=torch.long)
        )


# --- restoration ------------------------------------------------------------------------------


def _constant_spectra(spectrum: list[float], size: int = 16) -> Tensor:
    return (
        torch.tensor(spectrum, dtype=torch.float64)
        .view(1, -1, 1, 1)
        .expand(1, -1, size, size)
        .clone()
    )


@pytest.mark.parametrize(
    ("pred", "target", "degrees"),
    [
        ([0.3, 0.6, 0.2], [0.3, 0.6, 0.2], 0.0),
        ([0.5, 0.0], [0.0, 0.5], 90.0),
        ([0.5, 0.0], [0.4, 0.4], 45.0),
        ([0.2, 0.4], [0.4, 0.8], 0.0),  # same direction, other magnitude
    ],
)
def test_sam_in_degrees(pred: list[float], target: list[float], degrees: float) -> None:
    metrics = RestorationMetrics(data_range=1.0)
    metrics.update(_constant_spectra(pred), _constant_spectra(target))
    assert float(metrics.compute()["SAM"]) == pytest.approx(degrees, abs=1e-4)


def test_sam_matches_torchmetrics_and_scores_a_zero_spectrum_90_degrees() -> None:
    preds, targets = _images(2)
    metrics = RestorationMetrics(data_range=1.0)
    metrics.update(preds, targets)
    reference = torch.rad2deg(spectral_angle_mapper(preds.clamp(0, 1), targets))  # as scored
    assert float(metrics.compute()["SAM"]) == pytest.approx(float(reference), abs=1e-5)
    dark = _constant_spectra([0.0, 0.0])
    metrics = RestorationMetrics(data_range=1.0)
    metrics.update(dark, _constant_spectra([0.3, 0.1]))
    assert float(metrics.compute()["SAM"]) == pytest.approx(90.0)


def test_psnr_per_image_mean_matches_skimage() -> None:
    preds, targets = _images(1)
    metrics = RestorationMetrics(data_range=1.0)
    metrics.update(preds, targets)
    clamped_preds = preds.clamp(0, 1).numpy()
    expected = np.mean(
        [
            peak_signal_noise_ratio(targets[i].numpy(), clamped_preds[i], data_range=1.0)
            for i in range(len(preds))
        ]
    )
    assert float(metrics.compute()["PSNR"]) == pytest.approx(expected, abs=1e-5)


def test_ssim_matches_torchmetrics_and_skimage_interior() -> None:
    """SSIM is torchmetrics' (reflect-padded borders kept in the mean); its map agrees with
    scikit-image's on the interior, where neither padding reaches (5 pixels from each edge)."""
    preds, targets = _images(2)
    clamped_preds = preds.clamp(0, 1)
    metrics = RestorationMetrics(data_range=1.0)
    metrics.update(preds, targets)
    expected = structural_similarity_index_measure(
        clamped_preds, targets, gaussian_kernel=True, sigma=1.5, kernel_size=11, data_range=1.0
    )
    assert float(metrics.compute()["SSIM"]) == pytest.approx(float(expected), abs=1e-5)

    _, ssim_map = structural_similarity_index_measure(
        clamped_preds,
        targets,
        gaussian_kernel=True,
        sigma=1.5,
        kernel_size=11,
        data_range=1.0,
        return_full_image=True,
    )
    border = 5
    for i in range(len(preds)):
        interior = ssim_map[i, :, border:-border, border:-border].mean()
        reference = structural_similarity(
            targets[i].numpy(),
            clamped_preds[i].numpy(),
            channel_axis=0,
            gaussian_weights=True,
            sigma=1.5,
            use_sample_covariance=False,
            data_range=1.0,
        )
        assert float(interior) == pytest.approx(reference, abs=1e-5)


def test_ergas_textbook_value() -> None:
    """ERGAS = 100 (h/l) sqrt(mean_b RMSE_b^2 / mu_b^2), h/l = 0.3 m / 1.2 m = 1/4.

    Band 0: target 0.5, error +0.1 everywhere (RMSE 0.1); band 1: target 0.25, error +-0.05
    (RMSE 0.05). Both RMSE / mu = 0.2, so ERGAS = 100 / 4 * 0.2 = 5.
    """
    targets = _constant_spectra([0.5, 0.25])
    preds = targets.clone()
    preds[:, 0] += 0.1
    preds[:, 1, :, 0::2] += 0.05
    preds[:, 1, :, 1::2] -= 0.05
    metrics = RestorationMetrics(data_range=1.0, ergas_ratio=4)
    metrics.update(preds, targets)
    result = metrics.compute()
    assert float(result["ERGAS"]) == pytest.approx(5.0, abs=1e-6)
    assert float(result["MAE"]) == pytest.approx((0.1 + 0.05) / 2, abs=1e-6)
    assert float(result["RMSE"]) == pytest.approx(math.sqrt((0.01 + 0.0025) / 2), abs=1e-6)


@pytest.mark.filterwarnings("ignore:Metric `UniversalImageQualityIndex` will save all")
def test_ergas_equals_torchmetrics_class_over_batches() -> None:
    """The running mean of per-image ERGAS equals torchmetrics' class, which stores all images."""
    preds, targets = _images(8)
    metrics = RestorationMetrics(data_range=1.0, ergas_ratio=4)
    metrics.update(preds[:3], targets[:3])
    metrics.update(preds[3:], targets[3:])
    reference = ErrorRelativeGlobalDimensionlessSynthesis(ratio=4)
    reference.update(preds.clamp(0, 1), targets)
    assert float(metrics.compute()["ERGAS"]) == pytest.approx(float(reference.compute()), rel=1e-6)


def test_restoration_keys_and_clamping() -> None:
    targets = _constant_spectra([0.5, 0.25])
    metrics = RestorationMetrics(data_range=1.0)
    metrics.update(targets + 2.0, targets)  # clamped to 1: error 0.5 and 0.75
    result = metrics.compute()
    assert set(result) == {"MAE", "RMSE", "PSNR", "SAM", "SSIM", "checkerboard_ratio"}
    assert float(result["MAE"]) == pytest.approx(0.625, abs=1e-6)
    assert "ERGAS" in RestorationMetrics(1.0, ergas_ratio=4).keys()


def test_restoration_accumulates_over_batches() -> None:
    preds, targets = _images(3)
    batched = RestorationMetrics(data_range=1.0, ergas_ratio=4)
    batched.update(preds[:1], targets[:1])
    batched.update(preds[1:], targets[1:])
    whole = RestorationMetrics(data_range=1.0, ergas_ratio=4)
    whole.update(preds, targets)
    _assert_same(batched.compute(), whole.compute())


def _smooth_image(seed: int, shape: tuple[int, ...] = (2, 3, 36, 44)) -> Tensor:
    """Low-frequency images (3x3-cell noise, bilinear upsampled) plus fine noise, in (0, 1)."""
    generator = _generator(seed)
    coarse = torch.rand(*shape[:2], 3, 3, generator=generator, dtype=torch.float64)
    smooth = torch.nn.functional.interpolate(coarse, size=shape[2:], mode="bilinear")
    return 0.2 + 0.5 * smooth + 0.02 * torch.rand(*shape, generator=generator, dtype=torch.float64)


def _fft_periodic_energy(images: Tensor, period: int) -> float:
    """Orthonormal 2-D DFT energy at the bins (k H/p, l W/p), (k, l) != (0, 0), after cropping
    to multiples of the period: the definition, computed independently of the metric."""
    height, width = (side - side % period for side in images.shape[-2:])
    spectrum = torch.fft.fft2(images[..., :height, :width], norm="ortho")
    rows = torch.arange(0, height, height // period)
    cols = torch.arange(0, width, width // period)
    power = spectrum[..., rows[:, None], cols].abs().square()
    return float(power.sum() - power[..., 0, 0].sum())


def _ratio(preds: Tensor, targets: Tensor, period: int = 4) -> float:
    metric = CheckerboardRatio(period)
    metric.update(preds, targets)
    return float(metric.compute())


@pytest.mark.parametrize("period", [2, 4])
def test_checkerboard_peak_energy_is_the_dft_energy_at_the_period_bins(period: int) -> None:
    image = _smooth_image(0, (1, 3, 38, 45))  # cropped to 36 x 44 for period 4
    peak, _ = CheckerboardRatio(period).spectral_energies(image[0])
    height, width = 36 if period == 4 else 38, 44
    window = torch.outer(
        torch.tensor(np.hanning(height)), torch.tensor(np.hanning(width))
    )  # numpy's Hann window, as an independent reference
    cropped = image[..., :height, :width]
    windowed = (cropped - cropped.mean(dim=(-2, -1), keepdim=True)) * window
    assert float(peak) == pytest.approx(_fft_periodic_energy(windowed, period), rel=1e-10)


def test_hann_window_falls_to_zero_at_the_borders() -> None:
    image = _smooth_image(7, (2, 3, 20, 28))
    windowed = hann_windowed(image)
    for border in (windowed[..., 0, :], windowed[..., -1, :], windowed[..., 0], windowed[..., -1]):
        assert float(border.abs().max()) == 0.0
    # The centre keeps the image less its mean (the window is 1 there only for odd sides).
    centre = hann_windowed(image[..., :19, :27])[..., 9, 13]
    torch.testing.assert_close(centre, image[..., 9, 13] - image[..., :19, :27].mean((-2, -1)))


def test_checkerboard_ratio_of_a_blurred_prediction_is_about_one() -> None:
    # Blurring keeps the borders' jumps and removes fine content, so on the raw DFT the
    # jumps' cross along the axes dominates the peak bins on the axes: a blur without any
    # periodic pattern scored well above 1. Windowed, the cross is gone.
    targets = _smooth_image(8, (4, 3, 96, 96)) + 0.05 * torch.randn(
        4, 3, 96, 96, generator=_generator(9), dtype=torch.float64
    )
    kernel = torch.tensor([1.0, 4.0, 6.0, 4.0, 1.0], dtype=torch.float64) / 16
    blurred = torch.nn.functional.conv2d(
        torch.nn.functional.pad(targets.reshape(12, 1, 96, 96), (2, 2, 2, 2), mode="replicate"),
        (kernel[:, None] * kernel[None, :])[None, None],
    ).reshape(targets.shape)
    raw_dft = _raw_dft_peak(blurred, 4) / _raw_dft_peak(targets, 4)
    assert raw_dft > 1.5
    assert 0.8 < _ratio(blurred, targets) < 1.25


def _raw_dft_peak(images: Tensor, period: int) -> float:
    """The metric's peak (peak-bin energy over mean neighbour energy) on the raw DFT.

    The bins are the metric's own (``peak_and_near``, tested on hand-built spectra below).
    """
    power = torch.fft.fft2(images, norm="ortho").abs().square().sum(dim=(0, 1))
    peak, near = CheckerboardRatio(period).peak_and_near(power)
    return float(peak / near)


def test_checkerboard_neighbour_energy_holds_the_bins_next_to_the_peaks() -> None:
    metric = CheckerboardRatio(4)
    power = torch.zeros(48, 40, dtype=torch.float64)
    power[12, 10] = 3.0  # a peak bin (H / 4, W / 4)
    power[13, 0] = 2.0  # one bin below the peak (12, 0)
    power[14, 0] = 5.0  # two bins away: neither
    power[47, 39] = 4.0  # next to DC only (across the wrap-around), which is no peak: neither
    peak, near = metric.peak_and_near(power)
    assert float(peak) == 3.0
    assert float(near) == pytest.approx(2.0 / 8)
    # Across the wrap-around: (47, 29) neighbours the peak (0, 30).
    power[47, 29] = 8.0
    assert float(metric.peak_and_near(power)[1]) == pytest.approx((2.0 + 8.0) / 8)
    with pytest.raises(ValueError, match="smaller than 3 periods"):
        metric.spectral_energies(torch.zeros(1, 11, 40))


def test_checkerboard_ratio_of_a_checkerboard_and_of_artefact_free_predictions() -> None:
    targets = _smooth_image(1)
    assert _ratio(targets, targets) == 1.0
    # A 4x4-periodic pattern of amplitude 0.05 (a pixel shuffle's sub-pixel disagreement).
    tile = 0.05 * torch.randn(4, 4, generator=_generator(2), dtype=torch.float64)
    checkered = targets + tile.repeat(9, 11)
    assert _ratio(checkered, targets) > 4  # a pure pattern scores at most 6.4 (the window)
    # A smooth addition (2.5 cycles across, so with a jump between the borders) puts next to
    # no energy at the period's frequencies, and moving the pattern's phase keeps its score.
    rows = torch.arange(36, dtype=torch.float64)[:, None]
    smooth = 0.1 * torch.sin(2 * math.pi * 2.5 * rows / 36)
    assert _ratio(targets + smooth, targets) == pytest.approx(1.0, rel=0.05)
    shifted = targets + tile.roll((1, 2), dims=(0, 1)).repeat(9, 11)
    assert _ratio(shifted, targets) == pytest.approx(_ratio(checkered, targets), rel=0.03)


def test_checkerboard_ratio_ignores_broadband_noise() -> None:
    # Noise has as much energy next to the peak bins as on them: a noisy but artefact-free
    # prediction keeps about the target's peak, where the energy at the peak bins alone (the
    # earlier definition) grows with the noise.
    targets = _smooth_image(5, (4, 3, 96, 96))
    noisy = targets + 0.1 * torch.randn(4, 3, 96, 96, generator=_generator(6), dtype=torch.float64)
    assert _fft_periodic_energy(noisy, 4) / _fft_periodic_energy(targets, 4) > 5
    assert 0.6 < _ratio(noisy, targets) < 1.4


def test_checkerboard_ratio_sums_over_batches() -> None:
    preds, targets = (
        _smooth_image(3)
        + 0.01 * torch.randn(2, 3, 36, 44, generator=_generator(4), dtype=torch.float64),
        _smooth_image(3),
    )
    batched = CheckerboardRatio()
    batched.update(preds[:1], targets[:1])
    batched.update(preds[1:], targets[1:])
    whole = CheckerboardRatio()
    sums = [
        torch.stack([torch.stack(whole.spectral_energies(image)) for image in images]).sum(0)
        for images in (preds, targets)
    ]
    expected = (sums[0][0] / sums[0][1]) / (sums[1][0] / sums[1][1])
    assert float(batched.compute()) == pytest.approx(float(expected), rel=1e-10)


def test_restoration_rejects_bad_inputs() -> None:
    metrics = RestorationMetrics(1.0)
    with pytest.raises(ValueError, match="preds must have shape"):
        metrics.update(torch.zeros(1, 1, 16, 16), torch.zeros(1, 1, 16, 16))
    with pytest.raises(ValueError, match="targets must have shape"):
        metrics.update(torch.zeros(1, 2, 16, 16), torch.zeros(1, 2, 8, 8))
    with pytest.raises(ValueError, match="targets must be a float tensor"):
        metrics.update(torch.zeros(1, 2, 16, 16), torch.zeros(1, 2, 16, 16, dtype=torch.long))
    with pytest.raises(ValueError, match="ergas_ratio"):
        RestorationMetrics(1.0, ergas_ratio=0.25)


# --- segmentation -----------------------------------------------------------------------------


def test_segmentation_hand_built_confusion() -> None:
    """Classes 0 (ignored), 1, 2 on six pixels:

    target  0 0 1 1 1 2      pixels 0-1 ignored (whatever is predicted there);
    pred    1 2 1 0 2 2      pixel 3: class 0 predicted on a class-1 pixel, an error.
    IoU_1 = 1 / (3 + 1 - 1) = 1/3, IoU_2 = 1 / (1 + 2 - 1) = 1/2, OA = 2 / 4.
    """
    target = torch.tensor([[[0, 0, 1, 1, 1, 2]]])
    pred = torch.tensor([[[1, 2, 1, 0, 2, 2]]])
    metrics = SegmentationMetrics(num_classes=3, ignore_index=0)
    metrics.update(pred, target)
    result = metrics.compute()
    assert set(result) == {"IoU_1", "IoU_2", "mIoU", "OA"}
    assert float(result["IoU_1"]) == pytest.approx(1 / 3)
    assert float(result["IoU_2"]) == pytest.approx(1 / 2)
    assert float(result["mIoU"]) == pytest.approx((1 / 3 + 1 / 2) / 2)
    assert float(result["OA"]) == pytest.approx(0.5)


def _segmentation_batch(seed: int) -> tuple[Tensor, Tensor]:
    """(logits (B, 6, H, W), target (B, H, W)): logits favour the target class, with noise."""
    generator = _generator(seed)
    target = torch.randint(0, 6, (3, 12, 10), generator=generator)
    logits = torch.randn(3, 6, 12, 10, generator=generator)
    logits += 1.5 * torch.nn.functional.one_hot(target, 6).permute(0, 3, 1, 2)
    return logits, target


def test_segmentation_ignored_pixels_change_nothing() -> None:
    logits, target = _segmentation_batch(4)
    base = SegmentationMetrics()
    base.update(logits, target)
    changed_logits = logits.clone()
    ignored = (target == 0).unsqueeze(1).expand_as(logits)
    changed_logits[ignored] = torch.randn(int(ignored.sum()), generator=_generator(5)) * 10
    changed = SegmentationMetrics()
    changed.update(changed_logits, target)
    _assert_same(base.compute(), changed.compute(), tol=0.0)


def test_segmentation_matches_sklearn_over_batches() -> None:
    batches = [_segmentation_batch(seed) for seed in (6, 7)]
    metrics = SegmentationMetrics()
    for logits, target in batches:
        metrics.update(logits, target)
    result = metrics.compute()
    pred = torch.cat([logits.argmax(1) for logits, _ in batches]).flatten().numpy()
    true = torch.cat([target for _, target in batches]).flatten().numpy()
    valid = true != 0
    labels = [1, 2, 3, 4, 5]
    per_class = jaccard_score(true[valid], pred[valid], labels=labels, average=None)
    for k, iou in zip(labels, per_class, strict=True):
        assert float(result[f"IoU_{k}"]) == pytest.approx(iou, abs=1e-6)
    assert float(result["mIoU"]) == pytest.approx(
        jaccard_score(true[valid], pred[valid], labels=labels, average="macro"), abs=1e-6
    )
    assert float(result["OA"]) == pytest.approx(accuracy_score(true[valid], pred[valid]), abs=1e-6)

    whole = SegmentationMetrics()
    whole.update(
        torch.cat([logits for logits, _ in batches]), torch.cat([target for _, target in batches])
    )
    _assert_same(result, whole.compute(), tol=0.0)


def test_segmentation_rejects_bad_inputs() -> None:
    metrics = SegmentationMetrics()
    with pytest.raises(ValueError, match="target must be an integer tensor"):
        metrics.update(torch.zeros(1, 4, 4, dtype=torch.long), torch.zeros(1, 4, 4))
    with pytest.raises(ValueError, match=r"preds \(logits\) must have shape \(1, 6, 4, 4\)"):
        metrics.update(torch.zeros(1, 5, 4, 4), torch.zeros(1, 4, 4, dtype=torch.long))
    with pytest.raises(ValueError, match=r"preds \(class indices\) must have shape"):
        metrics.update(
            torch.zeros(1, 4, 5, dtype=torch.long), torch.zeros(1, 4, 4, dtype=torch.long)
        )
