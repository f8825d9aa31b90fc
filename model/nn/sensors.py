"""Per-sensor parts of msGFM: patch embeddings f_i into the shared encoder, SimMIM decoders D_i.

Every sensor ``i`` has its own patch embedding ``f_i`` (``C_i`` channels -> the encoder's shared
width ``C_e``) and its own decoder ``D_i`` (the encoder's last-stage features -> ``C_i`` channels
at the input resolution); the Swin encoder between them is shared by all sensors.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any

from torch import Tensor, nn

from catalogs.sensors import get_sensor
from catalogs.store_format import SensorManifest


class SensorPatchEmbed(nn.Module):
    """f_i: one sensor's non-overlapping patches projected to the encoder's width.

    A ``patch_px`` x ``patch_px`` convolution with the same stride, then a norm over the
    channels; the output is channels-last, as timm's Swin V2 stages take it.
    """

    def __init__(
        self,
        in_channels: int,
        embed_dim: int,
        patch_px: int = 4,
        norm_layer: Callable[[int], nn.Module] | None = nn.LayerNorm,
    ) -> None:
        """Build the projection.

        Args:
            in_channels: the sensor's channel count ``C_i``.
            embed_dim: the encoder's embedding width ``C_e``.
            patch_px: side of a patch (token) in pixels.
            norm_layer: norm applied to each token, built as ``norm_layer(embed_dim)``;
                None for none.
        """
        super().__init__()
        self.in_channels = in_channels
        self.patch_px = patch_px
        self.projection = nn.Conv2d(in_channels, embed_dim, kernel_size=patch_px, stride=patch_px)
        self.norm = norm_layer(embed_dim) if norm_layer is not None else nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        """Embed an image batch.

        Args:
            x: (B, C_i, H, W) image, H and W multiples of ``patch_px``.

        Returns:
            (B, H / patch_px, W / patch_px, embed_dim) token grid.

        Raises:
            ValueError: if the channel count or the size does not fit.
        """
        if x.dim() != 4 or x.shape[1] != self.in_channels:
            raise ValueError(
                f"expected a (B, {self.in_channels}, H, W) image, got shape {tuple(x.shape)}"
            )
        if x.shape[2] % self.patch_px or x.shape[3] % self.patch_px:
            raise ValueError(
                f"image size {tuple(x.shape[2:])} is not a multiple of the {self.patch_px} px patch"
            )
        return self.norm(self.projection(x).permute(0, 2, 3, 1))


class SensorDecoder(nn.Module):
    """D_i: SimMIM's decoder, a 1x1 convolution then a pixel shuffle to the input resolution."""

    def __init__(self, encoder_channels: int, out_channels: int, stride: int = 32) -> None:
        """Build the decoder.

        Args:
            encoder_channels: channels of the encoder's last stage ``C_last``.
            out_channels: the sensor's channel count ``C_i``.
            stride: the encoder's total stride, input pixels per last-stage feature.
        """
        super().__init__()
        self.projection = nn.Conv2d(encoder_channels, stride**2 * out_channels, kernel_size=1)
        self.shuffle = nn.PixelShuffle(stride)

    def forward(self, features: Tensor) -> Tensor:
        """Reconstruct the image from the encoder's features.

        Args:
            features: (B, C_last, h, w) last-stage features.

        Returns:
            (B, out_channels, h * stride, w * stride) reconstruction.
        """
        return self.shuffle(self.projection(features))


class SensorHeads(nn.Module):
    """Every sensor's f_i and D_i, keyed by sensor name."""

    def __init__(
        self,
        channels: Mapping[str, int],
        embed_dim: int,
        encoder_channels: int,
        patch_px: int = 4,
        stride: int = 32,
        norm_layer: Callable[[int], nn.Module] | None = nn.LayerNorm,
    ) -> None:
        """Build one patch embedding and one decoder per sensor.

        Args:
            channels: ``{sensor name: channel count}``.
            embed_dim: the encoder's embedding width ``C_e``.
            encoder_channels: channels of the encoder's last stage ``C_last``.
            patch_px: side of a patch (token) in pixels.
            stride: the encoder's total stride.
            norm_layer: norm of the patch embeddings (see :class:`SensorPatchEmbed`).

        Raises:
            ValueError: if ``channels`` is empty.
        """
        super().__init__()
        if not channels:
            raise ValueError("SensorHeads needs at least one sensor")
        self.embeddings = nn.ModuleDict(
            {
                name: SensorPatchEmbed(count, embed_dim, patch_px, norm_layer)
                for name, count in channels.items()
            }
        )
        self.decoders = nn.ModuleDict(
            {
                name: SensorDecoder(encoder_channels, count, stride)
                for name, count in channels.items()
            }
        )

    @classmethod
    def from_manifest(
        cls,
        sensors: Mapping[str, SensorManifest],
        embed_dim: int,
        encoder_channels: int,
        **kwargs: Any,
    ) -> SensorHeads:
        """Heads for the sensors of a store, one channel per band.

        Args:
            sensors: the store's sensors (``StoreManifest.sensors``), keyed by name.
            embed_dim: the encoder's embedding width ``C_e``.
            encoder_channels: channels of the encoder's last stage ``C_last``.
            **kwargs: the other arguments of :class:`SensorHeads`.

        Returns:
            The heads, keyed as ``sensors``.
        """
        channels = {name: len(manifest.band_names) for name, manifest in sensors.items()}
        return cls(channels, embed_dim, encoder_channels, **kwargs)

    @classmethod
    def from_registry(
        cls, names: Iterable[str], embed_dim: int, encoder_channels: int, **kwargs: Any
    ) -> SensorHeads:
        """Heads for sensors of the registry (``catalogs/sensors.yaml``), one channel per band.

        Args:
            names: registry names of the sensors.
            embed_dim: the encoder's embedding width ``C_e``.
            encoder_channels: channels of the encoder's last stage ``C_last``.
            **kwargs: the other arguments of :class:`SensorHeads`.

        Returns:
            The heads, keyed by ``names``.

        Raises:
            KeyError: for a name the registry does not know.
        """
        channels = {name: get_sensor(name).num_bands for name in names}
        return cls(channels, embed_dim, encoder_channels, **kwargs)

    @property
    def sensor_names(self) -> tuple[str, ...]:
        """The sensors these heads serve, in construction order."""
        return tuple(self.embeddings.keys())

    def embed(self, sensor: str, x: Tensor) -> Tensor:
        """f_sensor(x): (B, C_i, H, W) -> (B, H / patch_px, W / patch_px, C_e).

        Raises:
            KeyError: naming ``sensor`` and the known sensors, if it has no heads.
        """
        return self.embeddings[self._known(sensor)](x)

    def decode(self, sensor: str, features: Tensor) -> Tensor:
        """D_sensor(features): (B, C_last, h, w) -> (B, C_i, h * stride, w * stride).

        Raises:
            KeyError: naming ``sensor`` and the known sensors, if it has no heads.
        """
        return self.decoders[self._known(sensor)](features)

    def _known(self, sensor: str) -> str:
        if sensor not in self.embeddings:
            raise KeyError(
                f"no heads for sensor {sensor!r}; known sensors: {list(self.sensor_names)}"
            )
        return sensor
