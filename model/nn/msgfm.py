"""msGFM (Han et al., CVPR 2024): one shared Swin encoder for every sensor.

Per-sensor patch embeddings, one shared Swin encoder, per-sensor SimMIM decoders and cross-sensor
reconstruction.

For a batch holding every sensor (:func:`model.datasets.batching.collate_by_sensor`), each
sensor's chips are masked (SimMIM), embedded by their own ``f_i``, encoded by the shared ``En``
and decoded. A chip with a partner (a chip of another sensor over the same ground) is, with
probability ``cross_sensor_rate``, decoded by the partner's decoder and compared with the
partner image, ``D_j(En(f_i(I_i)))`` against ``I_j``; every other chip reconstructs itself.
The loss is ``L_MIM + aux_weight * L_aux``: ``L_MIM`` combines each sensor's masked L1 (each of its
decoders' losses weighted by their rows; nodata targets, ``valid`` False, left out), by
``sensor_weighting``: ``"sensor"`` their mean (each sensor weighs the same, whatever its
share of the batch), ``"sample"`` their mean weighted by each sensor's rows (each chip weighs
the same); ``L_aux`` the mean over the sensors' encoder passes of the MoE load-balancing losses.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import torch
from torch import Tensor, nn

from model.datasets.batching import ROWS_PREFIX, SENSORS_KEY, VALID_KEY, valid_key
from model.datasets.geopile2 import PARTNER_PREFIX
from model.nn.encoder import EncoderConfig, SwinEncoder
from model.nn.sensors import SensorHeads
from model.nn.simmim import MaskGenerator, masked_l1_loss


@dataclass
class Reconstruction:
    """One decoded group of a sensor's chips: for the loss and for the Figure-3 pictures.

    Attributes:
        source: the sensor whose chips were encoded.
        target_sensor: the sensor decoded (``source`` itself, or a partner).
        rows: rows of the source sub-batch in this group.
        image: the encoded chips (rows of the source images).
        mask: (rows, h, w) token mask of those chips.
        prediction: the decoder's output.
        target: what it is compared with.
        valid: where ``target`` holds data (bool, per band), None if the batch has no masks.
    """

    source: str
    target_sensor: str
    rows: Tensor
    image: Tensor
    mask: Tensor
    prediction: Tensor
    target: Tensor
    valid: Tensor | None = None


@dataclass
class PretrainOutput:
    """The loss of a batch and what the logs and figures show of it."""

    loss: Tensor
    mim_loss: Tensor
    aux_loss: Tensor
    mim_per_sensor: dict[str, Tensor] = field(default_factory=dict)
    cross_share: float = 0.0
    reconstructions: list[Reconstruction] = field(default_factory=list)


SensorWeighting = Literal["sensor", "sample"]
SENSOR_WEIGHTINGS: tuple[str, ...] = ("sensor", "sample")


class MsGFM(nn.Module):
    """The pretraining network: sensor heads around one shared encoder."""

    def __init__(
        self,
        channels: Mapping[str, int],
        encoder: EncoderConfig,
        cross_sensor_rate: float = 0.5,
        mask_ratio: float = 0.6,
        mask_patch_px: int = 32,
        aux_weight: float = 0.01,
        sensor_weighting: SensorWeighting = "sensor",
    ) -> None:
        """Build the network.

        Args:
            channels: channel count of each sensor (one ``f_i`` and ``D_i`` each).
            encoder: the shared encoder's configuration.
            cross_sensor_rate: probability that a paired chip reconstructs its partner.
            mask_ratio: share of the ``mask_patch_px`` cells masked.
            mask_patch_px: side of a mask cell in pixels.
            aux_weight: weight of the MoE load-balancing loss.
            sensor_weighting: how the sensors' losses combine: ``"sensor"``, their mean;
                ``"sample"``, weighted by each sensor's rows in the batch.

        Raises:
            ValueError: for a cross-sensor rate outside [0, 1] or an unknown weighting.
        """
        super().__init__()
        if not 0.0 <= cross_sensor_rate <= 1.0:
            raise ValueError(f"cross_sensor_rate {cross_sensor_rate} is not in [0, 1]")
        if sensor_weighting not in SENSOR_WEIGHTINGS:
            raise ValueError(
                f"sensor_weighting {sensor_weighting!r} is not one of {SENSOR_WEIGHTINGS}"
            )
        self.sensor_weighting = sensor_weighting
        self.heads = SensorHeads(
            channels,
            embed_dim=encoder.embed_dim,
            encoder_channels=encoder.out_channels,
            patch_px=encoder.patch_px,
            stride=encoder.stride,
        )
        self.encoder = SwinEncoder(encoder)
        self.masks = MaskGenerator(encoder.input_px, mask_patch_px, encoder.patch_px, mask_ratio)
        self.cross_sensor_rate, self.aux_weight = cross_sensor_rate, aux_weight

    def features(self, sensor: str, image: Tensor, mask: Tensor | None = None) -> Tensor:
        """``En(f_i(image))``: (B, C_last, H/32, W/32) features of ``sensor`` chips."""
        return self.encoder(self.heads.embed(sensor, image), mask)

    def forward(
        self, batch: Mapping[str, Any], generator: torch.Generator | None = None, keep: bool = False
    ) -> PretrainOutput:
        """The loss of one batch of every sensor.

        Args:
            batch: ``{"sensors": {name: sub_batch}}`` with normalised, cropped images (and
                their ``valid`` masks, where nodata is to be left out of the loss).
            generator: draws the masks and the cross-sensor choices (default: torch's global).
            keep: keep every decoded group in the output (for figures).

        Returns:
            The loss and its parts.
        """
        per_sensor, sensor_rows, aux, groups = {}, {}, [], []
        cross_rows = total_rows = 0
        for sensor, sub_batch in batch[SENSORS_KEY].items():
            image = sub_batch["image"]
            mask = self.masks(image.shape[0], generator=generator, device=image.device)
            features = self.features(sensor, image, mask)
            aux.append(self.encoder.aux_loss())
            sensor_groups = self._groups(sensor, sub_batch, image, mask, features, generator)
            rows = sum(len(g.rows) for g in sensor_groups)
            per_sensor[sensor] = (
                sum(
                    masked_l1_loss(
                        g.prediction, g.target, g.mask, self.encoder.config.patch_px, g.valid
                    )
                    * len(g.rows)
                    for g in sensor_groups
                )
                / rows
            )
            sensor_rows[sensor] = rows
            cross_rows += sum(len(g.rows) for g in sensor_groups if g.target_sensor != sensor)
            total_rows += rows
            groups += sensor_groups if keep else []
        losses = torch.stack(list(per_sensor.values()))
        if self.sensor_weighting == "sample":
            weights = losses.new_tensor([sensor_rows[s] for s in per_sensor])
            mim = (losses * weights).sum() / weights.sum()
        else:
            mim = losses.mean()
        aux_loss = torch.stack(aux).mean()
        return PretrainOutput(
            loss=mim + self.aux_weight * aux_loss,
            mim_loss=mim,
            aux_loss=aux_loss,
            mim_per_sensor=per_sensor,
            cross_share=cross_rows / max(total_rows, 1),
            reconstructions=groups,
        )

    def _groups(
        self,
        sensor: str,
        sub_batch: Mapping[str, Any],
        image: Tensor,
        mask: Tensor,
        features: Tensor,
        generator: torch.Generator | None,
    ) -> list[Reconstruction]:
        """Split a sensor's rows by the decoder they go to, and decode each group."""
        size = image.shape[0]
        decoder = torch.full((size,), -1, dtype=torch.long)  # -1: itself, k: partner k
        partners = sorted(
            k.removeprefix(PARTNER_PREFIX) for k in sub_batch if k.startswith(PARTNER_PREFIX)
        )
        partner_row: dict[str, dict[int, int]] = {}
        for k, partner in enumerate(partners):
            rows = sub_batch[ROWS_PREFIX + partner].tolist()
            partner_row[partner] = {row: i for i, row in enumerate(rows)}
            draw = torch.rand(len(rows), generator=generator) < self.cross_sensor_rate
            for row, crossed in zip(rows, draw.tolist(), strict=True):
                if crossed and decoder[row] < 0:  # a row with several partners takes the first
                    decoder[row] = k
        groups = []
        for k in decoder.unique().tolist():
            rows = (decoder == k).nonzero().squeeze(1).to(image.device)
            target_sensor = sensor if k < 0 else partners[k]
            if k < 0:
                target, valid = image[rows], sub_batch.get(VALID_KEY)
                valid = None if valid is None else valid[rows]
            else:
                index = [partner_row[target_sensor][r] for r in rows.tolist()]
                key = PARTNER_PREFIX + target_sensor
                target, valid = sub_batch[key][index], sub_batch.get(valid_key(key))
                valid = None if valid is None else valid[index]
            prediction = self.heads.decode(target_sensor, features[rows])
            groups.append(
                Reconstruction(
                    sensor, target_sensor, rows, image[rows], mask[rows], prediction, target, valid
                )
            )
        return groups
