"""Pretrained msGFM encoders as files: safetensors weights plus a STAC MLM model card.

:func:`export_pretrained` writes what a downstream user needs of a pretrained :class:`MsGFM`
into one folder: ``encoder.safetensors`` (the shared encoder under ``encoder.`` and every
sensor's patch embedding under ``embeddings.<sensor>.``; no decoders) and ``model_card.json``, a
STAC 1.1 Item with the Machine Learning Model extension (:data:`MLM_SCHEMA`, v1.4.0) that holds
the encoder's configuration (``mlm:hyperparameters``), one ``mlm:input`` per sensor (registry
band names, shape and per-band z-score ``value_scaling``: the normalisation the model was
trained with) and the feature map it returns (``mlm:output``). :func:`load_pretrained` rebuilds
a :class:`PretrainedEncoder` from those two files alone, checking every field it reads: a damaged
or hostile card gives a :class:`ModelCardError` that names the file and the field.
"""

from __future__ import annotations

import json
import math
import pickle
from collections.abc import Iterable, Mapping
from dataclasses import asdict, fields, is_dataclass
from pathlib import Path
from types import UnionType
from typing import TYPE_CHECKING, Any, get_args, get_origin, get_type_hints
from urllib.parse import urlsplit

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import Tensor, nn

from catalogs.atomic_files import atomic_path, write_json
from catalogs.sensors import get_sensor
from catalogs.stac import EXTENSIONS
from catalogs.store_format import SensorManifest
from model.datasets.transforms import band_moments
from model.nn.encoder import EncoderConfig, SwinEncoder
from model.nn.sensors import SensorPatchEmbed

if TYPE_CHECKING:
    from model.nn.msgfm import MsGFM

MLM_SCHEMA = "https://stac-extensions.github.io/mlm/v1.4.0/schema.json"
WEIGHTS_FILE = "encoder.safetensors"
CARD_FILE = "model_card.json"
WEIGHTS_ASSET = "weights"
TRAINING_FIELD = "msgfm:training"
ENCODER_PREFIX = "encoder."
EMBEDDINGS_PREFIX = "embeddings."
MODEL_NAME = "msGFM"
ITEM_ID = "msgfm-encoder"
# The downstream tasks of the msGFM paper: BigEarthNet, Vaihingen, SpaceNet2 pan-sharpening and
# SEN12MS-CR cloud removal.
TASKS = ("scene-classification", "semantic-segmentation", "super-resolution", "generative")
DIM_ORDER = ("batch", "channel", "height", "width")
GLOBAL_BBOX = (-180.0, -90.0, 180.0, 90.0)
# The card's start/end_datetime say when the pretraining data was acquired (as MLM's best
# practices advise, with "the world" as bbox); without any known acquisition time, MLM's generic
# context for a model of any period, closed at the far end because a STAC Item needs both ends.
ANY_TIME = ("1900-01-01T00:00:00Z", "9999-12-31T23:59:59Z")
_SHOWN_KEYS = 8  # keys listed in an architecture-mismatch error before "... (N in all)"
_JSON_KINDS = {dict: "an object", list: "a list", str: "a string", int: "an integer",
               float: "a finite number"}


class ModelCardError(ValueError):
    """A model card, or the weights it names, that cannot be loaded; the message names the
    file and the field."""


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

    def __init__(self, config: EncoderConfig, channels: Mapping[str, int],
                 normalisation: Mapping[str, tuple[Tensor, Tensor]],
                 card: Mapping[str, Any] | None = None) -> None:
        """Build an untrained encoder of ``config`` with one patch embedding per sensor.

        Args:
            config: the shared encoder's configuration.
            channels: ``{sensor: channel count}``.
            normalisation: ``{sensor: (mean, std)}`` per band.
            card: the model card the encoder comes from.
        """
        super().__init__()
        self.encoder = SwinEncoder(config)
        self.embeddings = nn.ModuleDict({
            sensor: SensorPatchEmbed(count, config.embed_dim, config.patch_px)
            for sensor, count in channels.items()})
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
            raise KeyError(f"no patch embedding for sensor {sensor!r}; known sensors: "
                           f"{list(self.sensors)}")
        return self.encoder(self.embeddings[sensor](image))


def export_pretrained(model: MsGFM, out_dir: Path | str, sensors: Mapping[str, SensorManifest],
                      training: Mapping[str, Any] | None = None,
                      acquired: tuple[str, str] | None = None) -> Path:
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
    card = model_card(model.encoder.config, {name: sensors[name] for name in embeddings},
                      sum(t.numel() for t in tensors.values()), training, acquired)
    with atomic_path(out_dir / WEIGHTS_FILE) as path:
        save_file(tensors, str(path), metadata={"format": "pt"})
    return write_json(out_dir / CARD_FILE, card)


def exported_tensors(model: MsGFM) -> dict[str, Tensor]:
    """The encoder's and patch embeddings' state as saved: prefixed keys, contiguous, CPU."""
    parts = {ENCODER_PREFIX: model.encoder.state_dict()}
    for sensor, embedding in model.heads.embeddings.items():
        parts[f"{EMBEDDINGS_PREFIX}{sensor}."] = embedding.state_dict()
    return {prefix + key: value.detach().to("cpu").clone(memory_format=torch.contiguous_format)
            for prefix, state in parts.items() for key, value in state.items()}


def model_card(config: EncoderConfig, sensors: Mapping[str, SensorManifest],
               total_parameters: int, training: Mapping[str, Any] | None = None,
               acquired: tuple[str, str] | None = None) -> dict[str, Any]:
    """The STAC MLM Item describing an exported encoder.

    Args:
        config: the encoder's configuration.
        sensors: the manifests of the model's sensors, in the model's order.
        total_parameters: the exported tensors' element count.
        training: ``msgfm:training`` metadata, if any.
        acquired: when the pretraining data was acquired (first, last), or None: any time.

    Returns:
        The Item as a JSON-ready dict.
    """
    bands = _stac_bands(sensors.values())
    start, end = acquired or ANY_TIME
    properties: dict[str, Any] = {
        "datetime": None,
        "start_datetime": start,
        "end_datetime": end,
        "description": (f"{MODEL_NAME} encoder pretrained on GeoPile-2: a patch embedding per "
                        "sensor and the shared Swin encoder (the SimMIM decoders are not "
                        "included)."),
        "mlm:name": MODEL_NAME,
        "mlm:architecture": _architecture(config),
        "mlm:tasks": list(TASKS),
        "mlm:framework": "PyTorch",
        "mlm:framework_version": torch.__version__,
        "mlm:pretrained": True,
        "mlm:pretrained_source": "GeoPile-2",
        "mlm:total_parameters": total_parameters,
        "mlm:input": [_model_input(config, manifest) for manifest in sensors.values()],
        "mlm:output": [_model_output(config)],
        "mlm:hyperparameters": asdict(config),
    }
    if training is not None:  # as JSON holds it: paths (and other objects) as strings
        properties[TRAINING_FIELD] = json.loads(json.dumps(dict(training), default=str))
    extensions = {key.split(":")[0] for band in bands for key in band if ":" in key}
    west, south, east, north = GLOBAL_BBOX
    return {
        "type": "Feature",
        "stac_version": "1.1.0",
        "stac_extensions": [MLM_SCHEMA, *sorted(EXTENSIONS[name] for name in extensions)],
        "id": ITEM_ID,
        "geometry": {"type": "Polygon", "coordinates": [[
            [west, south], [east, south], [east, north], [west, north], [west, south]]]},
        "bbox": list(GLOBAL_BBOX),
        "properties": properties,
        "links": [],
        "assets": {WEIGHTS_ASSET: {
            "href": f"./{WEIGHTS_FILE}",
            "type": "application/octet-stream; application=safetensors",
            "title": f"{MODEL_NAME} encoder and patch embedding weights",
            "roles": ["mlm:model", "mlm:weights"],
            "mlm:artifact_type": "safetensors",
            "bands": bands,
        }},
    }


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
    card = _read_card(card_path)
    properties = _field(card, "properties", dict, "", card_path)
    entries = _field(properties, "mlm:input", list, "properties", card_path)
    inputs = dict(_model_input_entry(entry, f"properties.mlm:input[{index}]", card_path)
                  for index, entry in enumerate(entries))
    hyperparameters = _field(properties, "mlm:hyperparameters", dict, "properties", card_path)
    config = _typed(hyperparameters, EncoderConfig, "properties.mlm:hyperparameters", card_path)
    try:
        encoder = PretrainedEncoder(config, {s: len(mean) for s, (mean, _) in inputs.items()},
                                    inputs, card)
    except ValueError as error:
        raise ModelCardError(f"{card_path}: properties.mlm:hyperparameters: {error}") from error
    weights_path = _weights_path(card, card_path)
    try:
        tensors = load_file(str(weights_path))
    except SafetensorError as error:
        raise ModelCardError(f"{weights_path} (assets.{WEIGHTS_ASSET}.href of {card_path}): "
                             f"not a whole safetensors file: {error}") from error
    _check_weights(tensors, encoder, weights_path, card_path)
    encoder.load_state_dict(tensors, strict=True)
    return encoder.eval()


def load_checkpoint_state(path: Path | str) -> dict[str, Any]:
    """A training checkpoint (Lightning's or a torch state dict), loaded onto the CPU without
    running arbitrary pickled code (``weights_only=True``).

    Args:
        path: the checkpoint file.

    Returns:
        Its contents.

    Raises:
        ValueError: naming ``path``, when it holds objects a weights-only load refuses, or is
            not a dict.
    """
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        raise refused_checkpoint(path, error) from error
    if not isinstance(state, dict):
        raise ValueError(f"{path}: a checkpoint holds a dict, not a {type(state).__name__}")
    return state


def refused_checkpoint(path: Path | str, error: pickle.UnpicklingError) -> ValueError:
    """The error for a checkpoint that a weights-only load refused, naming ``path``."""
    return ValueError(f"{path}: refused by a weights-only load (it holds pickled objects other "
                      f"than tensors and plain containers): {error}")


def _check_manifests(embeddings: nn.ModuleDict, sensors: Mapping[str, SensorManifest]) -> None:
    for name, embedding in embeddings.items():
        if name not in sensors:
            raise ValueError(f"no manifest for sensor {name!r}: its bands and normalisation "
                             f"are unknown; manifests: {sorted(sensors)}")
        bands = sensors[name].band_names
        if len(bands) != embedding.in_channels:
            raise ValueError(f"sensor {name!r}: the manifest has {len(bands)} bands, its patch "
                             f"embedding takes {embedding.in_channels} channels")


def _architecture(config: EncoderConfig) -> str:
    swin = f"Swin Transformer {config.version.upper()}"
    return f"{swin} with sparse mixture-of-experts MLPs" if config.moe else swin


def _stac_bands(sensors: Iterable[SensorManifest]) -> list[dict[str, Any]]:
    """STAC 1.1 ``bands`` of the inputs' registry bands, for the model asset (core STAC 1.1
    allows no ``bands`` in Item properties); a band name shared by sensors is listed once."""
    bands: dict[str, dict[str, Any]] = {}
    for manifest in sensors:
        sensor = get_sensor(manifest.name)
        for name in manifest.band_names:
            bands.setdefault(name, sensor.band(name).stac())
    return list(bands.values())


def _model_input(config: EncoderConfig, manifest: SensorManifest) -> dict[str, Any]:
    mean, std = band_moments(manifest)
    gsd = f", {manifest.gsd_m:g} m GSD" if manifest.gsd_m is not None else ""
    return {
        "name": manifest.name,
        "description": (
            f"{manifest.title}{gsd}. Stored values * {manifest.scale:g} + {manifest.offset:g} "
            f"give {manifest.model_unit}; each band is then z-scored with value_scaling "
            "(GeoPile-2 statistics) and nodata (NaN) becomes 0."),
        "bands": list(manifest.band_names),
        "input": {"shape": [-1, len(manifest.band_names), config.input_px, config.input_px],
                  "dim_order": list(DIM_ORDER), "data_type": "float32"},
        "value_scaling": [{"type": "z-score", "mean": m, "stddev": s}
                          for m, s in zip(mean.tolist(), std.tolist(), strict=True)],
        "resize_type": None,
    }


def _model_output(config: EncoderConfig) -> dict[str, Any]:
    side = config.input_px // config.stride
    return {
        "name": "features",
        "description": (f"Normalised last-stage features, one per {config.stride} x "
                        f"{config.stride} input pixels."),
        "tasks": list(TASKS),
        "result": {"shape": [-1, config.out_channels, side, side],
                   "dim_order": list(DIM_ORDER), "data_type": "float32"},
    }


def _read_card(card_path: Path) -> dict[str, Any]:
    try:
        card = json.loads(card_path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ModelCardError(f"{card_path}: not a JSON model card: {error}") from error
    if not isinstance(card, dict):
        raise ModelCardError(f"{card_path}: a model card is a JSON object (a STAC Item), "
                             f"not {type(card).__name__}")
    return card


def _field(document: Mapping[str, Any], key: str, kind: type, where: str,
           card_path: Path) -> Any:
    """``document[key]``, required and of JSON type ``kind``; ``where`` is the document's
    place in the card (``properties``), for the error."""
    place = f"{where}.{key}" if where else key
    if key not in document:
        raise ModelCardError(f"{card_path}: {place} is missing")
    value = document[key]
    if not isinstance(value, kind):
        raise ModelCardError(f"{card_path}: {place} must be {_JSON_KINDS[kind]}, not {value!r}")
    return value


def _typed(value: Any, kind: Any, place: str, card_path: Path) -> Any:
    """A card's JSON ``value`` as the configuration type ``kind`` (a dataclass, ``X | None``,
    ``tuple[int, ...]``, int, float or str), checked field by field."""
    if is_dataclass(kind):
        if not isinstance(value, dict):
            raise ModelCardError(f"{card_path}: {place} must be an object, not {value!r}")
        expected = {item.name for item in fields(kind)}
        missing, unexpected = expected - set(value), set(value) - expected
        if missing or unexpected:
            raise ModelCardError(f"{card_path}: {place} does not hold the fields of "
                                 f"{kind.__name__}; missing {sorted(missing)}, unexpected "
                                 f"{sorted(unexpected)}")
        return kind(**{name: _typed(value[name], hint, f"{place}.{name}", card_path)
                       for name, hint in get_type_hints(kind).items()})
    if isinstance(kind, UnionType):  # X | None
        if value is None:
            return None
        (kind,) = (arg for arg in get_args(kind) if arg is not type(None))
        return _typed(value, kind, place, card_path)
    if get_origin(kind) is tuple:
        if isinstance(value, list):
            return tuple(_typed(item, get_args(kind)[0], f"{place}[{index}]", card_path)
                         for index, item in enumerate(value))
        raise ModelCardError(f"{card_path}: {place} must be a list, not {value!r}")
    if kind is float and _finite_number(value):
        return float(value)
    if isinstance(value, kind) and not isinstance(value, bool):
        return value
    raise ModelCardError(f"{card_path}: {place} must be {_JSON_KINDS[kind]}, not {value!r}")


def _finite_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _model_input_entry(entry: Any, place: str,
                       card_path: Path) -> tuple[str, tuple[Tensor, Tensor]]:
    """(sensor, (mean, std)) of an ``mlm:input``, from its per-band z-score ``value_scaling``."""
    if not isinstance(entry, dict):
        raise ModelCardError(f"{card_path}: {place} must be an object, not {entry!r}")
    name = _field(entry, "name", str, place, card_path)
    place = f"{place} ({name!r})"
    shape = _field(_field(entry, "input", dict, place, card_path), "shape", list,
                   f"{place}.input", card_path)
    channels = shape[1] if len(shape) == len(DIM_ORDER) else None
    if not isinstance(channels, int) or isinstance(channels, bool) or channels < 1:
        raise ModelCardError(f"{card_path}: {place}.input.shape must be [batch, channels, "
                             f"height, width] with channels >= 1, not {shape!r}")
    scaling = _field(entry, "value_scaling", list, place, card_path)
    if len(scaling) != channels or any(
            not isinstance(band, dict) or band.get("type") != "z-score" for band in scaling):
        raise ModelCardError(f"{card_path}: {place}.value_scaling needs one z-score per "
                             f"channel ({channels}), not {scaling}")
    for index, band in enumerate(scaling):
        where = f"{place}.value_scaling[{index}]"
        if not _finite_number(band.get("mean")):
            raise ModelCardError(f"{card_path}: {where}.mean must be a finite number, "
                                 f"not {band.get('mean')!r}")
        if not _finite_number(band.get("stddev")) or band["stddev"] <= 0:
            raise ModelCardError(f"{card_path}: {where}.stddev must be a finite number above "
                                 f"0, not {band.get('stddev')!r}")
    return name, (torch.tensor([band["mean"] for band in scaling], dtype=torch.float32),
                  torch.tensor([band["stddev"] for band in scaling], dtype=torch.float32))


def _weights_path(card: Mapping[str, Any], card_path: Path) -> Path:
    """The weights file the card's ``assets.weights.href`` names, required to lie inside the
    card's folder once symbolic links are resolved."""
    assets = _field(card, "assets", dict, "", card_path)
    asset = _field(assets, WEIGHTS_ASSET, dict, "assets", card_path)
    href = _field(asset, "href", str, f"assets.{WEIGHTS_ASSET}", card_path)
    folder = card_path.parent.resolve()
    weights_path = (folder / href).resolve()
    if urlsplit(href).scheme or not weights_path.is_relative_to(folder):
        raise ModelCardError(f"{card_path}: assets.{WEIGHTS_ASSET}.href {href!r} leads outside "
                             f"the export folder {folder}; weights must lie beside the card")
    return weights_path


def _check_weights(tensors: Mapping[str, Tensor], encoder: PretrainedEncoder,
                   weights_path: Path, card_path: Path) -> None:
    """Raise a clear error unless ``tensors`` fit ``encoder`` key for key and shape for shape."""
    absent = [sensor for sensor in encoder.sensors
              if not any(key.startswith(f"{EMBEDDINGS_PREFIX}{sensor}.") for key in tensors)]
    if absent:
        raise ModelCardError(f"{weights_path}: checkpoint has no embedding for sensor(s) "
                         f"{', '.join(map(repr, absent))}; {card_path} lists "
                         f"{list(encoder.sensors)}")
    expected = encoder.state_dict()
    problems = [f"{label}: {_listing(keys)}" for label, keys in (
        ("missing keys", sorted(expected.keys() - tensors.keys())),
        ("unexpected keys", sorted(tensors.keys() - expected.keys())),
        ("shape mismatches", [
            f"{key} {tuple(tensors[key].shape)} in the weights, "
            f"{tuple(expected[key].shape)} in the card"
            for key in sorted(expected.keys() & tensors.keys())
            if tensors[key].shape != expected[key].shape])) if keys]
    if problems:
        raise ModelCardError(f"architecture mismatch between {card_path} and {weights_path}: "
                         + "; ".join(problems))


def _listing(items: list[str]) -> str:
    shown = ", ".join(items[:_SHOWN_KEYS])
    return shown if len(items) <= _SHOWN_KEYS else f"{shown}, ... ({len(items)} in all)"
