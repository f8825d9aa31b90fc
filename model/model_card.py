"""The model card of an exported msGFM encoder: a STAC 1.1 Item with the MLM extension.

The Machine Learning Model extension (:data:`MLM_SCHEMA`, v1.4.0); the card is built from the
encoder's configuration and the pretraining sensors, and read back with every field it names
checked. The parts every msGFM card shares (the Item around the properties, an ``mlm:input``,
the checked reading of a field) serve the fine-tuned models' cards too (:mod:`model.finetuned`).

The card holds the encoder's configuration (``mlm:hyperparameters``), one ``mlm:input`` per sensor
(registry band names, shape and per-band z-score ``value_scaling``: the normalisation the model
was trained with), the feature map it returns (``mlm:output``) and the weights asset. A damaged
or hostile card gives a :class:`ModelCardError` that names the file and the field.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping
from dataclasses import asdict, fields, is_dataclass
from pathlib import Path
from types import UnionType
from typing import Any, get_args, get_origin, get_type_hints
from urllib.parse import urlsplit

import torch
from torch import Tensor

from catalogs.sensors import Sensor, SensorDescription, get_sensor
from catalogs.stac import EXTENSIONS
from catalogs.store_format import SensorManifest
from model.datasets.transforms import band_moments
from model.nn.encoder import EncoderConfig

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
MLM_TASKS = ("scene-classification", "semantic-segmentation", "super-resolution", "generative")
DIM_ORDER = ("batch", "channel", "height", "width")
GLOBAL_BBOX = (-180.0, -90.0, 180.0, 90.0)
# The card's start/end_datetime say when the pretraining data was acquired (as MLM's best
# practices advise, with "the world" as bbox); without any known acquisition time, MLM's generic
# context for a model of any period, closed at the far end because a STAC Item needs both ends.
ANY_TIME = ("1900-01-01T00:00:00Z", "9999-12-31T23:59:59Z")
_JSON_KINDS = {
    dict: "an object",
    list: "a list",
    str: "a string",
    int: "an integer",
    float: "a finite number",
}


class ModelCardError(ValueError):
    """A model card, or the weights it names, that cannot be loaded.

    The message names the file and the field.
    """


def model_card(
    config: EncoderConfig,
    sensors: Mapping[str, SensorManifest],
    total_parameters: int,
    training: Mapping[str, Any] | None = None,
    acquired: tuple[str, str] | None = None,
) -> dict[str, Any]:
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
    start, end = acquired or ANY_TIME
    properties: dict[str, Any] = {
        "datetime": None,
        "start_datetime": start,
        "end_datetime": end,
        "description": (
            f"{MODEL_NAME} encoder pretrained on GeoPile-2: a patch embedding per "
            "sensor and the shared Swin encoder (the SimMIM decoders are not "
            "included)."
        ),
        "mlm:name": MODEL_NAME,
        "mlm:architecture": architecture(config),
        "mlm:tasks": list(MLM_TASKS),
        "mlm:framework": "PyTorch",
        "mlm:framework_version": torch.__version__,
        "mlm:pretrained": True,
        "mlm:pretrained_source": "GeoPile-2",
        "mlm:total_parameters": total_parameters,
        "mlm:input": [
            model_input(
                manifest,
                manifest.band_names,
                band_moments(manifest),
                config.input_px,
                "GeoPile-2 statistics",
            )
            for manifest in sensors.values()
        ],
        "mlm:output": [_model_output(config)],
        "mlm:hyperparameters": asdict(config),
    }
    if training is not None:
        properties[TRAINING_FIELD] = json_safe(training)
    return stac_item(
        ITEM_ID,
        properties,
        sensors.values(),
        WEIGHTS_FILE,
        f"{MODEL_NAME} encoder and patch embedding weights",
    )


def json_safe(value: Any) -> Any:
    """``value`` as JSON holds it: tuples as lists, paths (and other objects) as strings."""
    return json.loads(json.dumps(value, default=str))


def stac_item(
    item_id: str,
    properties: Mapping[str, Any],
    sensors: Iterable[SensorManifest | Sensor],
    weights_file: str,
    weights_title: str,
) -> dict[str, Any]:
    """A model card: the STAC MLM Item of ``properties`` and its safetensors weights asset.

    Args:
        item_id: the Item's id.
        properties: its properties (``mlm:*`` and the rest).
        sensors: the input sensors, whose registry bands the weights asset lists.
        weights_file: the weights' file name, beside the card.
        weights_title: the weights asset's title.

    Returns:
        The Item as a JSON-ready dict.
    """
    bands = _stac_bands(sensors)
    extensions = {key.split(":")[0] for band in bands for key in band if ":" in key}
    west, south, east, north = GLOBAL_BBOX
    return {
        "type": "Feature",
        "stac_version": "1.1.0",
        "stac_extensions": [MLM_SCHEMA, *sorted(EXTENSIONS[name] for name in extensions)],
        "id": item_id,
        "geometry": {
            "type": "Polygon",
            "coordinates": [
                [[west, south], [east, south], [east, north], [west, north], [west, south]]
            ],
        },
        "bbox": list(GLOBAL_BBOX),
        "properties": dict(properties),
        "links": [],
        "assets": {
            WEIGHTS_ASSET: {
                "href": f"./{weights_file}",
                "type": "application/octet-stream; application=safetensors",
                "title": weights_title,
                "roles": ["mlm:model", "mlm:weights"],
                "mlm:artifact_type": "safetensors",
                "bands": bands,
            }
        },
    }


def read_model_card(
    card_path: Path,
) -> tuple[dict[str, Any], EncoderConfig, dict[str, tuple[Tensor, Tensor]]]:
    """Read and check a model card.

    Args:
        card_path: the ``model_card.json``.

    Returns:
        The card, the encoder's configuration and ``{sensor: (mean, std)}`` per band of every
        input, in the card's order.

    Raises:
        FileNotFoundError: when the card is missing.
        ModelCardError: naming the file and the field, for a card that is not JSON or lacks a
            field, a field of the wrong type, or a normalisation std that is not a finite
            number above 0.
    """
    card = _read_card(card_path)
    properties = card_field(card, "properties", dict, "", card_path)
    entries = card_field(properties, "mlm:input", list, "properties", card_path)
    inputs = dict(
        _model_input_entry(entry, f"properties.mlm:input[{index}]", card_path)
        for index, entry in enumerate(entries)
    )
    hyperparameters = card_field(properties, "mlm:hyperparameters", dict, "properties", card_path)
    config = typed_value(
        hyperparameters, EncoderConfig, "properties.mlm:hyperparameters", card_path
    )
    return card, config, inputs


def architecture(config: EncoderConfig) -> str:
    """The encoder's ``mlm:architecture``: its Swin version, and MoE where it has MoE layers."""
    swin = f"Swin Transformer {config.version.upper()}"
    return f"{swin} with sparse mixture-of-experts MLPs" if config.moe else swin


def _stac_bands(sensors: Iterable[SensorManifest | Sensor]) -> list[dict[str, Any]]:
    """STAC 1.1 ``bands`` of the inputs' registry bands, for the model asset.

    Core STAC 1.1 allows no ``bands`` in Item properties. A band name shared by sensors is listed
    once.
    """
    bands: dict[str, dict[str, Any]] = {}
    for manifest in sensors:
        sensor = get_sensor(manifest.name)
        for name in manifest.band_names:
            bands.setdefault(name, sensor.band(name).stac())
    return list(bands.values())


def model_input(
    sensor: SensorDescription,
    band_names: Iterable[str],
    moments: tuple[Tensor, Tensor],
    input_px: int,
    statistics: str,
    note: str = "",
) -> dict[str, Any]:
    """One ``mlm:input``: a sensor's bands, input shape and per-band z-score normalisation.

    Args:
        sensor: the sensor (registry entry or store manifest): title, GSD, scale and units.
        band_names: its registry band names, in channel order.
        moments: per-band (mean, std) in the model's unit.
        input_px: side of the input.
        statistics: where the moments come from, for the description.
        note: a sentence added to the description (e.g. how values are made relative).

    Returns:
        The JSON-ready entry.
    """
    mean, std = moments
    band_names = list(band_names)
    gsd = f", {sensor.gsd_m:g} m GSD" if sensor.gsd_m is not None else ""
    return {
        "name": sensor.name,
        "description": (
            f"{sensor.title}{gsd}. Stored values * {sensor.scale:g} + {sensor.offset:g} "
            f"give {sensor.model_unit}{note}; each band is then z-scored with value_scaling "
            f"({statistics}) and nodata (NaN) becomes 0."
        ),
        "bands": band_names,
        "input": {
            "shape": [-1, len(band_names), input_px, input_px],
            "dim_order": list(DIM_ORDER),
            "data_type": "float32",
        },
        "value_scaling": [
            {"type": "z-score", "mean": m, "stddev": s}
            for m, s in zip(mean.tolist(), std.tolist(), strict=True)
        ],
        "resize_type": None,
    }


def _model_output(config: EncoderConfig) -> dict[str, Any]:
    side = config.input_px // config.stride
    return {
        "name": "features",
        "description": (
            f"Normalised last-stage features, one per {config.stride} x "
            f"{config.stride} input pixels."
        ),
        "tasks": list(MLM_TASKS),
        "result": {
            "shape": [-1, config.out_channels, side, side],
            "dim_order": list(DIM_ORDER),
            "data_type": "float32",
        },
    }


def _read_card(card_path: Path) -> dict[str, Any]:
    try:
        card = json.loads(card_path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ModelCardError(f"{card_path}: not a JSON model card: {error}") from error
    if not isinstance(card, dict):
        raise ModelCardError(
            f"{card_path}: a model card is a JSON object (a STAC Item), not {type(card).__name__}"
        )
    return card


def card_field(
    document: Mapping[str, Any], key: str, kind: type, where: str, card_path: Path
) -> Any:
    """``document[key]``, required and of JSON type ``kind``.

    ``where`` is the document's place in the card (``properties``), for the error.
    """
    place = f"{where}.{key}" if where else key
    if key not in document:
        raise ModelCardError(f"{card_path}: {place} is missing")
    value = document[key]
    if not isinstance(value, kind):
        raise ModelCardError(f"{card_path}: {place} must be {_JSON_KINDS[kind]}, not {value!r}")
    return value


def typed_value(value: Any, kind: Any, place: str, card_path: Path) -> Any:
    """A card's JSON ``value`` as the configuration type ``kind``, checked field by field.

    ``kind`` is a dataclass, ``X | None``, ``tuple[int, ...]``, int, float or str.
    """
    if is_dataclass(kind):
        if not isinstance(value, dict):
            raise ModelCardError(f"{card_path}: {place} must be an object, not {value!r}")
        expected = {item.name for item in fields(kind)}
        missing, unexpected = expected - set(value), set(value) - expected
        if missing or unexpected:
            raise ModelCardError(
                f"{card_path}: {place} does not hold the fields of "
                f"{kind.__name__}; missing {sorted(missing)}, unexpected "
                f"{sorted(unexpected)}"
            )
        return kind(
            **{
                name: typed_value(value[name], hint, f"{place}.{name}", card_path)
                for name, hint in get_type_hints(kind).items()
            }
        )
    if isinstance(kind, UnionType):  # X | None
        if value is None:
            return None
        (kind,) = (arg for arg in get_args(kind) if arg is not type(None))
        return typed_value(value, kind, place, card_path)
    if get_origin(kind) is tuple:
        if isinstance(value, list):
            return tuple(
                typed_value(item, get_args(kind)[0], f"{place}[{index}]", card_path)
                for index, item in enumerate(value)
            )
        raise ModelCardError(f"{card_path}: {place} must be a list, not {value!r}")
    if kind is float and _finite_number(value):
        return float(value)
    if isinstance(value, kind) and not isinstance(value, bool):
        return value
    raise ModelCardError(f"{card_path}: {place} must be {_JSON_KINDS[kind]}, not {value!r}")


def _finite_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _model_input_entry(
    entry: Any, place: str, card_path: Path
) -> tuple[str, tuple[Tensor, Tensor]]:
    """(sensor, (mean, std)) of an ``mlm:input``, from its per-band z-score ``value_scaling``."""
    if not isinstance(entry, dict):
        raise ModelCardError(f"{card_path}: {place} must be an object, not {entry!r}")
    name = card_field(entry, "name", str, place, card_path)
    place = f"{place} ({name!r})"
    shape = card_field(
        card_field(entry, "input", dict, place, card_path),
        "shape",
        list,
        f"{place}.input",
        card_path,
    )
    channels = shape[1] if len(shape) == len(DIM_ORDER) else None
    if not isinstance(channels, int) or isinstance(channels, bool) or channels < 1:
        raise ModelCardError(
            f"{card_path}: {place}.input.shape must be [batch, channels, "
            f"height, width] with channels >= 1, not {shape!r}"
        )
    scaling = card_field(entry, "value_scaling", list, place, card_path)
    if len(scaling) != channels or any(
        not isinstance(band, dict) or band.get("type") != "z-score" for band in scaling
    ):
        raise ModelCardError(
            f"{card_path}: {place}.value_scaling needs one z-score per "
            f"channel ({channels}), not {scaling}"
        )
    for index, band in enumerate(scaling):
        where = f"{place}.value_scaling[{index}]"
        if not _finite_number(band.get("mean")):
            raise ModelCardError(
                f"{card_path}: {where}.mean must be a finite number, not {band.get('mean')!r}"
            )
        if not _finite_number(band.get("stddev")) or band["stddev"] <= 0:
            raise ModelCardError(
                f"{card_path}: {where}.stddev must be a finite number above "
                f"0, not {band.get('stddev')!r}"
            )
    return name, (
        torch.tensor([band["mean"] for band in scaling], dtype=torch.float32),
        torch.tensor([band["stddev"] for band in scaling], dtype=torch.float32),
    )


def weights_path(card: Mapping[str, Any], card_path: Path) -> Path:
    """The weights file the card's ``assets.weights.href`` names.

    It is required to lie inside the card's folder once symbolic links are resolved.
    """
    assets = card_field(card, "assets", dict, "", card_path)
    asset = card_field(assets, WEIGHTS_ASSET, dict, "assets", card_path)
    href = card_field(asset, "href", str, f"assets.{WEIGHTS_ASSET}", card_path)
    folder = card_path.parent.resolve()
    weights_path = (folder / href).resolve()
    if urlsplit(href).scheme or not weights_path.is_relative_to(folder):
        raise ModelCardError(
            f"{card_path}: assets.{WEIGHTS_ASSET}.href {href!r} leads outside "
            f"the export folder {folder}; weights must lie beside the card"
        )
    return weights_path
