"""Task heads on the shared encoder: a classifier, and UPerNet with a dense head.

The classifier sits on the last stage; UPerNet runs over all stages, with a full-resolution dense
head for segmentation and image-to-image tasks.

The convolution blocks normalise with GroupNorm, not BatchNorm: fine-tuning here runs with
batches of a few images (on CPU often one or two), whose batch statistics are noisy, and
BatchNorm cannot train at all on the 1x1 map of the pyramid pooling's global branch with one
image. GroupNorm (Wu & He, 2018) does not depend on the batch.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

PYRAMID_SCALES = (1, 2, 3, 6)  # the pooled grid sides of PSPNet's pyramid pooling module


class ClassificationHead(nn.Module):
    """Logits per image: global average pool of the last stage, LayerNorm, then a linear layer."""

    def __init__(self, in_channels: int, num_classes: int) -> None:
        """Build the head.

        Args:
            in_channels: channels of the encoder's last stage.
            num_classes: logits per image.
        """
        super().__init__()
        self.norm = nn.LayerNorm(in_channels)
        self.linear = nn.Linear(in_channels, num_classes)

    def forward(self, features: Tensor) -> Tensor:
        """(B, in_channels, h, w) last-stage features -> (B, num_classes) logits."""
        return self.linear(self.norm(features.mean(dim=(2, 3))))


class UPerNetDecoder(nn.Module):
    """UPerNet (Xiao et al., 2018) over the encoder's stages.

    Pyramid pooling on the last stage, a feature pyramid's top-down path over the others, every
    level brought to the finest one and fused.

    Attributes:
        pyramid_pooling: one pooled branch per :data:`PYRAMID_SCALES` on the last stage,
            concatenated with it and reduced by a 3x3 block: the top of the pyramid.
        laterals: a 1x1 block per other stage, to ``channels``.
        outputs: a 3x3 block per other level after the top-down sums.
        fuse: a 3x3 block over all levels concatenated at the finest level's size.
    """

    def __init__(
        self, in_channels: Sequence[int], channels: int = 128, num_groups: int = 32
    ) -> None:
        """Build the decoder.

        Args:
            in_channels: channels of each encoder stage, finest first.
            channels: width of every level and of the output.
            num_groups: GroupNorm groups of every block; ``channels`` must split into groups
                of at least two channels.

        Raises:
            ValueError: for no stages, or ``channels`` that do not split into ``num_groups``
                groups of two or more.
        """
        super().__init__()
        if not in_channels:
            raise ValueError("UPerNetDecoder needs at least one stage")
        if channels % num_groups or channels < 2 * num_groups:
            raise ValueError(
                f"{channels} channels do not split into {num_groups} groups of two "
                "or more (the pooling's 1x1 branch needs more than one value to "
                "normalise)"
            )
        self.pyramid_pooling = PyramidPooling(in_channels[-1], channels, num_groups)
        self.laterals = nn.ModuleList(
            _conv_block(stage_channels, channels, 1, num_groups)
            for stage_channels in in_channels[:-1]
        )
        self.outputs = nn.ModuleList(
            _conv_block(channels, channels, 3, num_groups) for _ in in_channels[:-1]
        )
        self.fuse = _conv_block(channels * len(in_channels), channels, 3, num_groups)

    def forward(self, features: Sequence[Tensor]) -> Tensor:
        """Fuse the stages' features.

        Args:
            features: per stage, (B, in_channels[i], H_i, W_i), finest first (as
                :meth:`SwinEncoder.forward_pyramid` returns them).

        Returns:
            (B, channels, H_0, W_0) fused features at the finest stage's size.

        Raises:
            ValueError: if the number of stages differs from the decoder's.
        """
        if len(features) != len(self.laterals) + 1:
            raise ValueError(f"expected {len(self.laterals) + 1} stages, got {len(features)}")
        levels = [
            lateral(stage) for lateral, stage in zip(self.laterals, features[:-1], strict=True)
        ]
        levels.append(self.pyramid_pooling(features[-1]))
        for i in range(len(levels) - 2, -1, -1):
            levels[i] = levels[i] + _resize(levels[i + 1], levels[i].shape[-2:])
        outputs = [conv(level) for conv, level in zip(self.outputs, levels[:-1], strict=True)]
        outputs.append(levels[-1])
        size = outputs[0].shape[-2:]
        return self.fuse(torch.cat([_resize(level, size) for level in outputs], dim=1))


class PyramidPooling(nn.Module):
    """PSPNet's pyramid pooling module: context pooled over 1x1 to 6x6 grids, added as channels."""

    def __init__(self, in_channels: int, channels: int, num_groups: int) -> None:
        """Build one branch per :data:`PYRAMID_SCALES` and the bottleneck.

        Args:
            in_channels: channels of the input map.
            channels: width of every branch and of the output.
            num_groups: GroupNorm groups of every block.
        """
        super().__init__()
        self.branches = nn.ModuleList(
            nn.Sequential(
                nn.AdaptiveAvgPool2d(scale), _conv_block(in_channels, channels, 1, num_groups)
            )
            for scale in PYRAMID_SCALES
        )
        self.bottleneck = _conv_block(
            in_channels + channels * len(PYRAMID_SCALES), channels, 3, num_groups
        )

    def forward(self, x: Tensor) -> Tensor:
        """(B, in_channels, h, w) -> (B, channels, h, w)."""
        pooled = [_resize(branch(x), x.shape[-2:]) for branch in self.branches]
        return self.bottleneck(torch.cat([x, *pooled], dim=1))


class DensePredictionHead(nn.Module):
    """A fused stride-``scale`` map and the input pixels to a full-resolution output.

    Resize, then convolve (Odena et al., 2016): a 1x1 convolution to ``hidden_channels`` maps
    at the fused map's resolution, a bilinear upsampling by ``scale``, then the normalised input
    pixels joined as channels, a 3x3 convolution over both and a 3x3 convolution to the output.

    Bilinear upsampling by ``scale`` cannot leave a pattern that repeats every ``scale`` pixels:
    its triangle kernel has zero response at the frequencies of such a pattern, whereas the
    pixel shuffle's ``scale**2`` independent sub-pixel filters leave one in every block when
    they disagree (the checkerboard of Aitken et al., 2017). Detail finer than a token (the
    PAN's sub-4-px edges in pan-sharpening, a cloud's edge) comes through the input pixels at
    full resolution, as in the pan-sharpening CNNs (PNN, PanNet), not through the upsampling.

    Measured with :class:`model.tasks.restoration.CheckerboardRatio` (its version on the raw
    DFT) on the sample world's pan-sharpening set (random init, seed 0, 150 steps, test split,
    163-px MS chips): the pixel shuffle with ICNR initialisation and a 3x3 convolution at full
    resolution (this head before) scored 3.76 at PSNR 34.29 dB; this head 1.51 at 36.94 dB
    (bicubic 2.25; the targets score 1). The current figures are in ``reports/benchmarks.md``.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        image_channels: int,
        scale: int = 4,
        hidden_channels: int = 16,
    ) -> None:
        """Build the head.

        Args:
            in_channels: channels of the fused map.
            out_channels: classes (segmentation) or bands (image output) per pixel.
            image_channels: channels of the input pixels joined at full resolution (all input
                sensors' bands).
            scale: input pixels per feature of the fused map (the patch size, 4).
            hidden_channels: channels of the full-resolution maps.
        """
        super().__init__()
        self.scale = scale
        self.projection = nn.Conv2d(in_channels, hidden_channels, kernel_size=1)
        self.mix = nn.Conv2d(hidden_channels + image_channels, hidden_channels, 3, padding=1)
        self.activation = nn.GELU()
        self.output = nn.Conv2d(hidden_channels, out_channels, kernel_size=3, padding=1)

    def forward(self, features: Tensor, pixels: Tensor) -> Tensor:
        """(B, in_channels, h, w) map, (B, image_channels, H, W) pixels -> (B, out_channels, H, W).

        ``H, W`` are ``scale`` times ``h, w``.

        Raises:
            ValueError: when the pixels are not ``scale`` times the map's size.
        """
        size = tuple(side * self.scale for side in features.shape[-2:])
        if tuple(pixels.shape[-2:]) != size:
            raise ValueError(
                f"input pixels of {tuple(pixels.shape[-2:])} px do not match the "
                f"{tuple(features.shape[-2:])} feature map upsampled by {self.scale} ({size})"
            )
        # The 1x1 projection first: it commutes with the (linear) upsampling, at 1/scale**2 the
        # cost of projecting the upsampled map.
        upsampled = _resize(self.projection(features), size)
        mixed = self.activation(self.mix(torch.cat([self.activation(upsampled), pixels], dim=1)))
        return self.output(mixed)


def _conv_block(
    in_channels: int, out_channels: int, kernel_size: int, num_groups: int
) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, kernel_size, padding=kernel_size // 2, bias=False),
        nn.GroupNorm(num_groups, out_channels),
        nn.ReLU(),
    )


def _resize(x: Tensor, size: Sequence[int]) -> Tensor:
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    return F.interpolate(x, size=tuple(size), mode="bilinear", align_corners=False)
