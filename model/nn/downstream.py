"""The fine-tuning network: msGFM's encoder with a task head on top.

The pretrained (or freshly initialised) patch embeddings and Swin encoder of msGFM, with a task head
on top.

Several input sensors (S1 + S2, cloudy S2 + S1, PAN + MS, IR-R-G + DSM) each go through their
own patch embedding; their token grids are averaged into one grid, which the shared encoder
reads once. A sensor the pretrained model never saw gets an embedding initialised from the
closest pretrained optical embedding by band wavelengths (:mod:`model.nn.band_matching`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Literal

import torch
from torch import Tensor, nn

from catalogs.sensors import get_sensor
from model.export import PretrainedEncoder
from model.nn.band_matching import closest_optical_sensor, init_embedding_by_wavelength
from model.nn.encoder import EncoderConfig, SwinEncoder
from model.nn.heads import ClassificationHead, DensePredictionHead, UPerNetDecoder
from model.nn.sensors import SensorPatchEmbed

HeadKind = Literal["classification", "dense"]
MissingEmbeddings = Literal["error", "random"]
DECODER_CHANNELS = 128


class MissingEmbeddingError(ValueError):
    """A pretrained model lacks an input sensor's embedding and cannot derive one."""


class DownstreamNetwork(nn.Module):
    """Patch embeddings of the input sensors, the shared encoder and one task head.

    Attributes:
        embeddings: one :class:`SensorPatchEmbed` per input sensor.
        encoder: the Swin encoder.
        head: :class:`ClassificationHead` (``classification``) or a UPerNet decoder with a
            full-resolution :class:`DensePredictionHead` (``dense``), which also reads the
            input pixels.
        provenance: per input sensor, where its embedding came from (``pretrained``,
            ``wavelength-matched from <sensor>``, ``random`` before loading, or
            ``random (not in the pretrained model)``).
    """

    def __init__(
        self,
        config: EncoderConfig,
        input_channels: Mapping[str, int],
        head: HeadKind,
        out_channels: int,
    ) -> None:
        """Build an untrained network.

        Args:
            config: the encoder's configuration.
            input_channels: ``{sensor: channels}`` of the inputs, in a fixed order.
            head: ``classification`` (logits per image) or ``dense`` (a map per pixel).
            out_channels: classes (classification, segmentation) or output bands.
        """
        super().__init__()
        self.embeddings = nn.ModuleDict(
            {
                sensor: SensorPatchEmbed(channels, config.embed_dim, config.patch_px)
                for sensor, channels in input_channels.items()
            }
        )
        self.encoder = SwinEncoder(config)
        self.head_kind = head
        if head == "classification":
            self.head: nn.Module = ClassificationHead(config.out_channels, out_channels)
        else:
            stage_channels = [config.embed_dim * 2**i for i in range(len(config.depths))]
            self.head = nn.Sequential(
                UPerNetDecoder(stage_channels, DECODER_CHANNELS),
                DensePredictionHead(
                    DECODER_CHANNELS,
                    out_channels,
                    image_channels=sum(input_channels.values()),
                    scale=config.patch_px,
                ),
            )
        self.provenance = {sensor: "random" for sensor in input_channels}

    def group_matcher(self, coarse: bool = False) -> dict[str, Any]:
        """Layer groups for layer-wise learning-rate decay, as timm's Swin models define them.

        Read by :func:`timm.optim.param_groups_layer_decay`: the patch embeddings (and the
        unused mask token) are layer 0; with ``coarse=False`` each Swin block is one layer, in
        order, the downsampling at the start of a stage sharing its first block's layer; the
        encoder's final norm and the head, matched by nothing, share the last layer.

        Args:
            coarse: one group per stage instead of per block.

        Returns:
            timm's matcher: ``{group: regex or [(regex, suffix)]}``.
        """
        stage = r"^encoder\.stages\.(\d+)"
        return {
            "stem": r"^embeddings\.|^encoder\.mask_token",
            "blocks": stage
            if coarse
            else [(stage + r"\.downsample", (0,)), (stage + r"\.blocks\.(\d+)", None)],
        }

    def forward(self, inputs: Mapping[str, Tensor]) -> Tensor:
        """Logits (B, K) or a dense map (B, K, H, W) from normalised inputs.

        Args:
            inputs: ``{sensor: (B, C, H, W)}`` normalised images, one per input sensor.

        Raises:
            KeyError: naming the missing input sensors.
        """
        missing = [sensor for sensor in self.embeddings if sensor not in inputs]
        if missing:
            raise KeyError(
                f"inputs lack sensors {missing}; the network reads {list(self.embeddings)}"
            )
        tokens = torch.stack(
            [embed(inputs[sensor]) for sensor, embed in self.embeddings.items()]
        ).mean(dim=0)
        if self.head_kind == "classification":
            return self.head(self.encoder(tokens))
        decoder, dense = self.head
        pixels = torch.cat([inputs[sensor] for sensor in self.embeddings], dim=1)
        return dense(decoder(self.encoder.forward_pyramid(tokens)), pixels)

    def load_pretrained(
        self, pretrained: PretrainedEncoder, missing: MissingEmbeddings = "error"
    ) -> None:
        """Copy the encoder and, per input sensor, a pretrained or band-matched embedding.

        Per input sensor: its pretrained embedding, or one matched by band wavelengths from the
        closest pretrained optical sensor, or (``missing="random"``) its random init.

        Args:
            pretrained: the pretrained export.
            missing: for a sensor with neither: ``error`` (raise) or ``random`` (keep the
                random init; provenance ``random (not in the pretrained model)``).

        Raises:
            MissingEmbeddingError: with ``missing="error"``, naming the sensor, what the
                checkpoint has and why no embedding can be derived (a non-optical sensor the
                checkpoint lacks); and for a pretrained embedding of other bands.
            ValueError: naming the differing keys, for an encoder of another architecture.
        """
        _load_encoder(self.encoder, pretrained.encoder)
        for sensor in self.embeddings:
            if sensor in pretrained.embeddings:
                source = pretrained.embeddings[sensor]
                if source.in_channels != self.embeddings[sensor].in_channels:
                    raise MissingEmbeddingError(
                        f"the pretrained embedding of {sensor!r} takes {source.in_channels} "
                        f"bands, the data gives {self.embeddings[sensor].in_channels}"
                    )
                self.embeddings[sensor].load_state_dict(source.state_dict())
                self.provenance[sensor] = "pretrained"
                continue
            target = get_sensor(sensor)
            try:
                closest = closest_optical_sensor(pretrained.sensors, target)
            except ValueError as error:
                if missing == "random":
                    self.provenance[sensor] = "random (not in the pretrained model)"
                    continue
                raise MissingEmbeddingError(
                    f"the pretrained model has no patch embedding for {sensor!r} (it has "
                    f"{list(pretrained.sensors)}) and none can be matched by wavelength: "
                    f"{error}"
                ) from error
            matched = init_embedding_by_wavelength(
                pretrained.embeddings[closest], get_sensor(closest), target
            )
            self.embeddings[sensor].load_state_dict(matched.state_dict())
            self.provenance[sensor] = f"wavelength-matched from {closest}"


def _load_encoder(target: SwinEncoder, source: SwinEncoder) -> None:
    """Copy ``source``'s weights into ``target``, naming the keys that differ."""
    ours, theirs = target.state_dict(), source.state_dict()
    missing = sorted(set(ours) - set(theirs))
    unexpected = sorted(set(theirs) - set(ours))
    mismatched = sorted(k for k in set(ours) & set(theirs) if ours[k].shape != theirs[k].shape)
    if missing or unexpected or mismatched:
        raise ValueError(
            "the pretrained encoder has another architecture: "
            f"missing {_first(missing)}, unexpected {_first(unexpected)}, "
            f"other shapes {_first(mismatched)}"
        )
    target.load_state_dict(theirs)


def _first(keys: Sequence[str], shown: int = 5) -> str:
    listed = ", ".join(keys[:shown])
    return f"[{listed}{', ...' if len(keys) > shown else ''}] ({len(keys)})"
