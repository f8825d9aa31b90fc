"""Pretrained msGFM encoders as files: safetensors weights plus a STAC MLM model card.

:func:`export_pretrained` writes what a downstream user needs of a pretrained :class:`MsGFM`
into one folder: ``encoder.safetensors`` (the shared encoder under ``encoder.`` and every
sensor's patch embedding under ``embeddings.<sensor>.``; no decoders) and ``model_card.json``
(:mod:`model.model_card`). :func:`load_pretrained` rebuilds a :class:`PretrainedEncoder` from
those two files alone, checking every field it reads: a damaged or hostile export gives a
:class:`~model.model_card.ModelCardError` that names the file and the field.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import Tensor, nn

from catalogs.atomic_files import atomic_path, write_json
from catalogs.store_format import SensorManifest
from model.model_card import (
    CARD_FILE,
    EMBEDDINGS_PREFIX,
    ENCODER_PREFIX,
    WEIGHTS_ASSET,
    WEIGHTS_FILE,
    ModelCardError,
    model_card,
    read_model_card,
    weights_path,
)
from model.nn.encoder import EncoderConfig, SwinEncoder
from model.nn.sensors import SensorPatchEmbed

if TYPE_CHECKING:
    from model.nn.msgfm import MsGFM

_SHOWN_KEYS = 8  # keys listed in an architecture-mismatch error before "... (N in all)"


class PretrainedEncoder(nn.Module):
    """A pretrained msGFM encoder: every sensor's patch embedding ``f_i`` and the shared ``En``.

    Attributes:
        encoder: the shared Swin encoder.
        embeddings: one :class:`SensorPatchEmbed` per sensor.
        sensors: the sensor names, in the card's order.
        normalisation: ``{sensor: (mean, std)}`` per band in the model's unit; an image is
            ``(x - mean) / std`` (NaN as 0 afterwards) before :meth:`forward`.
        card: the model card (STAC Item) it was loaded from; empty when built directly.
    """

    def __init__(
        self,
        config: EncoderConfig,
        channels: Mapping[str, int],
        normalisation: Mapping[str, tuple[Tensor, Tensor]],
        card: Mapping[str, Any] | None = None,
    ) -> None:
        """Build an untrained encoder of ``config`` with one patch embedding per sensor.

        Args:
            config: the shared encoder's configuration.
            channels: ``{sensor: channel count}``.
            normalisation: ``{sensor: (mean, std)}`` per band.
            card: the model card the encoder comes from.
        """
        super().__init__()
        self.encoder = SwinEncoder(config)
        self.embeddings = nn.ModuleDict(
            {
                sensor: SensorPatchEmbed(count, config.embed_dim, config.patch_px)
                for sensor, count in channels.items()
            }
        )
        self.sensors = tuple(channels)
        self.normalisation = dict(normalisation)
        self.card = dict(card or {})

    def forward(self, sensor: str, image: Tensor) -> Tensor:
        """``En(f_sensor(image))``.

        Args:
            sensor: which patch embedding to use.
            image: (B, C_sensor, H, W) normalised image.

        Returns:
            (B, C_last, H / stride, W / stride) features.

        Raises:
            KeyError: naming ``sensor`` and the known sensors, for a sensor without embedding.
        """
        if sensor not in self.embeddings:
            raise KeyError(
                f"no patch embedding for sensor {sensor!r}; known sensors: {list(self.sensors)}"
            )
        return self.encoder(self.embeddings[sensor](image))


def export_pretrained(
    model: MsGFM,
    out_dir: Path | str,
    sensors: Mapping[str, SensorManifest],
    training: Mapping[str, Any] | None = None,
    acquired: tuple[str, str] | None = None,
) -> Path:
    """Write a model's encoder and patch embeddings with their model card.

    Args:
        model: the pretrained network (its decoders are left out).
        out_dir: folder to write ``encoder.safetensors`` and ``model_card.json`` into
            (created if missing; both files replaced atomically).
        sensors: the pretraining store's sensors (``read_manifest(store).sensors``): band names
            and the statistics of the normalisation; one for each sensor of ``model``.
        training: how the model was trained (store path, steps, ...), recorded as
            ``msgfm:training``; JSON-serialisable, paths written as strings.
        acquired: first and last acquisition times of the pretraining chips (ISO 8601,
            :func:`catalogs.store_format.acquisition_range`), the card's time range; None when
            unknown. The card holds no time of its own making, so the same training writes
            the same bytes.

    Returns:
        The model card's path.

    Raises:
        ValueError: for a sensor of ``model`` without manifest, or whose band count differs
            from its embedding's, or whose statistics are not in the model's unit.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    embeddings = model.heads.embeddings
    _check_manifests(embeddings, sensors)
    tensors = exported_tensors(model)
    card = model_card(
        model.encoder.config,
        {name: sensors[name] for name in embeddings},
        sum(t.numel() for t in tensors.values()),
        training,
        acquired,
    )
    write_weights(tensors, out_dir / WEIGHTS_FILE)
    return write_json(out_dir / CARD_FILE, card)


def exported_tensors(model: MsGFM) -> dict[str, Tensor]:
    """The encoder's and patch embeddings' state as saved: prefixed keys, contiguous, CPU."""
    parts = {ENCODER_PREFIX: model.encoder}
    for sensor, embedding in model.heads.embeddings.items():
        parts[f"{EMBEDDINGS_PREFIX}{sensor}."] = embedding
    return state_tensors(parts)


def state_tensors(parts: Mapping[str, nn.Module]) -> dict[str, Tensor]:
    """The state of each ``{prefix: module}`` as saved: prefixed keys, contiguous, on the CPU."""
    return {
        prefix + key: value.detach().to("cpu").clone(memory_format=torch.contiguous_format)
        for prefix, module in parts.items()
        for key, value in module.state_dict().items()
    }


def write_weights(tensors: Mapping[str, Tensor], path: Path) -> Path:
    """Write ``tensors`` as a safetensors file, replaced atomically; returns ``path``."""
    with atomic_path(path) as partial:
        save_file(dict(tensors), str(partial), metadata={"format": "pt"})
    return path


def load_weights(card: Mapping[str, Any], card_path: Path) -> tuple[Path, dict[str, Tensor]]:
    """The weights file a card names and its tensors.

    Raises:
        FileNotFoundError: when the weights are missing.
        ModelCardError: naming both files, for a weights href that leads outside the card's
            folder, or weights that are not a whole safetensors file.
    """
    weights = weights_path(card, card_path)
    try:
        return weights, load_file(str(weights))
    except SafetensorError as error:
        raise ModelCardError(
            f"{weights} (assets.{WEIGHTS_ASSET}.href of {card_path}): "
            f"not a whole safetensors file: {error}"
        ) from error


def load_pretrained(path: Path | str) -> PretrainedEncoder:
    """Rebuild an exported encoder from its model card and weights alone.

    Args:
        path: the export folder, or its ``model_card.json``.

    Returns:
        The encoder with its weights, in eval mode.

    Raises:
        FileNotFoundError: when the card or the weights it names are missing.
        ModelCardError: naming the file and the field, for a card that is not JSON or lacks a
            field, a field of the wrong type, a normalisation std that is not a finite number
            above 0, a weights href that leads outside the card's folder, weights that are not
            a whole safetensors file, lack a sensor's embedding or are of another architecture.
    """
    card_path = Path(path) / CARD_FILE if Path(path).is_dir() else Path(path)
    card, config, inputs = read_model_card(card_path)
    try:
        encoder = PretrainedEncoder(
            config, {s: len(mean) for s, (mean, _) in inputs.items()}, inputs, card
        )
    except ValueError as error:
        raise ModelCardError(f"{card_path}: properties.mlm:hyperparameters: {error}") from error
    weights, tensors = load_weights(card, card_path)
    _check_embeddings(tensors, encoder, weights, card_path)
    check_architecture(tensors, encoder.state_dict(), weights, card_path)
    encoder.load_state_dict(tensors, strict=True)
    return encoder.eval()


def _check_manifests(embeddings: nn.ModuleDict, sensors: Mapping[str, SensorManifest]) -> None:
    for name, embedding in embeddings.items():
        if name not in sensors:
            raise ValueError(
                f"no manifest for sensor {name!r}: its bands and normalisation "
                f"are unknown; manifests: {sorted(sensors)}"
            )
        bands = sensors[name].band_names
        if len(bands) != embedding.in_channels:
            raise ValueError(
                f"sensor {name!r}: the manifest has {len(bands)} bands, its patch "
                f"embedding takes {embedding.in_channels} channels"
            )


def _check_embeddings(
    tensors: Mapping[str, Tensor], encoder: PretrainedEncoder, weights_path: Path, card_path: Path
) -> None:
    """Raise a clear error, naming the sensors, unless ``tensors`` hold every embedding."""
    absent = [
        sensor
        for sensor in encoder.sensors
        if not any(key.startswith(f"{EMBEDDINGS_PREFIX}{sensor}.") for key in tensors)
    ]
    if absent:
        raise ModelCardError(
            f"{weights_path}: checkpoint has no embedding for sensor(s) "
            f"{', '.join(map(repr, absent))}; {card_path} lists "
            f"{list(encoder.sensors)}"
        )


def check_architecture(
    tensors: Mapping[str, Tensor],
    expected: Mapping[str, Tensor],
    weights_path: Path,
    card_path: Path,
) -> None:
    """Raise a clear error unless ``tensors`` fit ``expected`` key for key and shape for shape.

    Raises:
        ModelCardError: naming both files and the keys that differ.
    """
    problems = [
        f"{label}: {_listing(keys)}"
        for label, keys in (
            ("missing keys", sorted(expected.keys() - tensors.keys())),
            ("unexpected keys", sorted(tensors.keys() - expected.keys())),
            (
                "shape mismatches",
                [
                    f"{key} {tuple(tensors[key].shape)} in the weights, "
                    f"{tuple(expected[key].shape)} in the card"
                    for key in sorted(expected.keys() & tensors.keys())
                    if tensors[key].shape != expected[key].shape
                ],
            ),
        )
        if keys
    ]
    if problems:
        raise ModelCardError(
            f"architecture mismatch between {card_path} and {weights_path}: " + "; ".join(problems)
        )


def _listing(items: list[str]) -> str:
    shown = ", ".join(items[:_SHOWN_KEYS])
    return shown if len(items) <= _SHOWN_KEYS else f"{shown}, ... ({len(items)} in all)"
