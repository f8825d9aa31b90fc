"""Fine-tuned msGFM models as files: safetensors weights plus a STAC MLM model card.

:func:`export_finetuned` writes a fine-tuned :class:`~model.tasks.DownstreamTask` into
``<out_dir>/model/``: ``model.safetensors`` (the whole :class:`DownstreamNetwork` state) and
``model_card.json``, a STAC MLM Item as :mod:`model.model_card` builds for the encoder, with what
rebuilding and running the task takes without its training data: the task (a key of
:data:`model.tasks.TASKS`, its class and constructor arguments), the encoder configuration, the
head, the input sensors in batch order with their registry bands and normalisation, the target
(``msgfm:target_info``) and the inputs the data module made relative to their lowest valid value
(``msgfm:relative_inputs``). The card holds no time of its own making: the same weights give the
same bytes.

:func:`load_finetuned` rebuilds a :class:`FinetunedModel` from those files alone, checking every
field it reads; the task class comes from :data:`model.tasks.TASKS`, never from an import path
in the file.
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from catalogs.atomic_files import write_json
from catalogs.sensors import get_sensor
from model.export import check_architecture, load_weights, state_tensors, write_weights
from model.model_card import (
    ANY_TIME,
    CARD_FILE,
    DIM_ORDER,
    MODEL_NAME,
    ModelCardError,
    architecture,
    card_field,
    json_safe,
    model_input,
    read_model_card,
    stac_item,
    typed_value,
)
from model.nn.moe import set_moe_dropless
from model.tasks import TASKS, DownstreamTask

EXPORT_DIR = "model"
WEIGHTS_FILE = "model.safetensors"
TASK_FIELD = "msgfm:task"
HEAD_FIELD = "msgfm:head"
TARGET_FIELD = "msgfm:target_info"
RELATIVE_FIELD = "msgfm:relative_inputs"
EMBEDDINGS_FIELD = "msgfm:embeddings"
# Constructor arguments that are paths of the training run, not part of the model.
RUN_PATHS = ("pretrained", "out_dir")


def task_class_path(task_class: type[DownstreamTask]) -> str:
    """``module.Class`` of a task class, as the card names it."""
    return f"{task_class.__module__}.{task_class.__qualname__}"


@dataclass(frozen=True)
class FinetunedModel:
    """A fine-tuned task, rebuilt from its export, ready for inference.

    The task is in eval mode, its MoE layers dropless (a token's output does not depend on the
    rest of the batch).

    Attributes:
        task: the task, with its network, normalisation and ``target_info``.
        name: the task's name (a key of :data:`model.tasks.TASKS`).
        card: the model card it was loaded from.
    """

    task: DownstreamTask
    name: str
    card: dict[str, Any]

    @property
    def input_sensors(self) -> tuple[str, ...]:
        """The input sensors' registry names, in batch order."""
        return tuple(self.task.network.embeddings)

    @property
    def target_info(self) -> dict[str, Any]:
        """What the task predicts (class names, sensor, data range, ...), as JSON holds it."""
        return self.task.target_info

    @property
    def input_px(self) -> int:
        """Side of the inputs in pixels."""
        return self.task.network.encoder.config.input_px

    @property
    def relative_inputs(self) -> tuple[str, ...]:
        """Input sensors to make relative to the lowest valid value of the scene first."""
        return self.task.relative_inputs

    def __call__(self, inputs: Mapping[str, Tensor]) -> Tensor:
        """The task's prediction, without gradients.

        Args:
            inputs: ``{sensor: (B, C, input_px, input_px)}`` float32 in the model's unit,
                missing values already filled, for every input sensor.

        Returns:
            What :meth:`DownstreamTask.forward` gives: logits for classification and
            segmentation, the image in its model unit for restoration.
        """
        with torch.no_grad():
            return self.task({"inputs": dict(inputs)})


def constructor_arguments(task: DownstreamTask) -> dict[str, Any]:
    """The task's constructor arguments that make the model, without the run's paths.

    Only the constructor's parameters: LightningCLI adds keys of its own (``_class_path``).
    """
    parameters = inspect.signature(type(task)).parameters
    return {
        key: value
        for key, value in task.hparams.items()
        if key in parameters and key not in RUN_PATHS
    }


def export_finetuned(task: DownstreamTask, out_dir: Path | str) -> Path:
    """Write a fine-tuned task's network and model card to ``<out_dir>/model/``.

    Args:
        task: a task of :data:`model.tasks.TASKS` with its network built.
        out_dir: the run's folder (``model/`` is created in it; both files replaced
            atomically).

    Returns:
        The model card's path.

    Raises:
        ValueError: for a task whose network is not built, or whose class no task spec names.
    """
    if task.network is None:
        raise ValueError("the task has no network yet: build it (configure_model) first")
    name = next((n for n, spec in TASKS.items() if spec.task_class is type(task)), None)
    if name is None:
        raise ValueError(
            f"{task_class_path(type(task))} is not a task of model.tasks.TASKS "
            f"({', '.join(TASKS)}); only those can be exported"
        )
    folder = Path(out_dir) / EXPORT_DIR
    folder.mkdir(parents=True, exist_ok=True)
    tensors = state_tensors({"": task.network})
    write_weights(tensors, folder / WEIGHTS_FILE)
    card = finetuned_card(task, name, sum(t.numel() for t in tensors.values()))
    return write_json(folder / CARD_FILE, card)


def finetuned_card(task: DownstreamTask, name: str, total_parameters: int) -> dict[str, Any]:
    """The STAC MLM Item describing a fine-tuned task (see the module docstring).

    Args:
        task: the task, its network built.
        name: its name in :data:`model.tasks.TASKS`.
        total_parameters: the exported tensors' element count.

    Returns:
        The Item as a JSON-ready dict.
    """
    network = task.network
    config = network.encoder.config
    spec = TASKS[name]
    sensors = [get_sensor(sensor) for sensor in network.embeddings]
    pretrained = task.hparams["init"] == "pretrained"
    out_channels = task.output_channels(task.target_info)
    side = config.input_px
    shape = (
        [-1, out_channels]
        if network.head_kind == "classification"
        else [-1, out_channels, side, side]
    )
    properties = {
        "datetime": None,
        "start_datetime": ANY_TIME[0],
        "end_datetime": ANY_TIME[1],
        "description": (
            f"{MODEL_NAME} fine-tuned for {name.replace('_', ' ')} on {spec.title}: the "
            "input sensors' patch embeddings, the shared Swin encoder and the task head."
        ),
        "mlm:name": f"{MODEL_NAME} {name}",
        "mlm:architecture": f"{architecture(config)} and a {network.head_kind} head",
        "mlm:tasks": [task.mlm_task],
        "mlm:framework": "PyTorch",
        "mlm:framework_version": torch.__version__,
        "mlm:pretrained": pretrained,
        "mlm:pretrained_source": "GeoPile-2" if pretrained else None,
        "mlm:total_parameters": total_parameters,
        "mlm:input": [
            model_input(
                sensor,
                sensor.band_names,
                task.normalisation[sensor.name],
                side,
                "the downstream training set's statistics",
                " relative to the lowest valid value of the scene"
                if sensor.name in task.relative_inputs
                else "",
            )
            for sensor in sensors
        ],
        "mlm:output": [
            {
                "name": "prediction",
                "description": task.prediction,
                "tasks": [task.mlm_task],
                "result": {
                    "shape": shape,
                    "dim_order": ["batch", "class"] if len(shape) == 2 else list(DIM_ORDER),
                    "data_type": "float32",
                },
            }
        ],
        "mlm:hyperparameters": asdict(config),
        TASK_FIELD: {
            "name": name,
            "class": task_class_path(type(task)),
            "hparams": json_safe(constructor_arguments(task)),
        },
        HEAD_FIELD: {"kind": network.head_kind, "out_channels": out_channels},
        TARGET_FIELD: json_safe(task.target_info),
        RELATIVE_FIELD: list(task.relative_inputs),
        EMBEDDINGS_FIELD: dict(network.provenance),
    }
    return stac_item(
        f"msgfm-{name.replace('_', '-')}",
        properties,
        sensors,
        WEIGHTS_FILE,
        f"{MODEL_NAME} fine-tuned for {name.replace('_', ' ')}: network weights",
    )


def load_finetuned(path: Path | str) -> FinetunedModel:
    """Rebuild an exported fine-tuned model from its model card and weights alone.

    Args:
        path: the run's folder (holding ``model/``), the ``model/`` folder, or its
            ``model_card.json``.

    Returns:
        The model, in eval mode with dropless MoE layers.

    Raises:
        FileNotFoundError: when the card or the weights it names are missing.
        ModelCardError: naming the file and the field, for a card that is not JSON or lacks a
            field, a field of the wrong type, a task or task class that :data:`model.tasks.TASKS`
            does not hold, constructor arguments the task refuses, a head that does not fit
            the task and target, or weights of another architecture.
    """
    card_path = card_location(Path(path))
    card, config, normalisation = read_model_card(card_path)
    properties = card["properties"]
    entry = card_field(properties, TASK_FIELD, dict, "properties", card_path)
    place = f"properties.{TASK_FIELD}"
    name = card_field(entry, "name", str, place, card_path)
    class_path = card_field(entry, "class", str, place, card_path)
    hparams = card_field(entry, "hparams", dict, place, card_path)
    task_class = _task_class(name, class_path, card_path)
    target_info = card_field(properties, TARGET_FIELD, dict, "properties", card_path)
    relative = typed_value(
        card_field(properties, RELATIVE_FIELD, list, "properties", card_path),
        tuple[str, ...],
        f"properties.{RELATIVE_FIELD}",
        card_path,
    )
    provenance = card_field(properties, EMBEDDINGS_FIELD, dict, "properties", card_path)
    try:  # the weights come from the file, so no pretrained export is read
        task = task_class(**{**hparams, "init": "random"})
    except (TypeError, ValueError) as error:
        raise ModelCardError(f"{card_path}: {place}.hparams: {error}") from error
    _check_head(properties, task, target_info, card_path)
    task.build(
        config,
        {sensor: len(mean) for sensor, (mean, _) in normalisation.items()},
        normalisation,
        target_info,
        relative,
    )
    weights, tensors = load_weights(card, card_path)
    check_architecture(tensors, task.network.state_dict(), weights, card_path)
    task.network.load_state_dict(tensors, strict=True)
    task.network.provenance = {str(key): str(value) for key, value in provenance.items()}
    set_moe_dropless(task.network, True)
    return FinetunedModel(task=task.eval(), name=name, card=card)


def card_location(path: Path) -> Path:
    """The card of an export given as a run folder, the export folder or the card itself."""
    if not path.is_dir():
        return path
    nested = path / EXPORT_DIR / CARD_FILE
    return nested if nested.is_file() else path / CARD_FILE


def _task_class(name: str, class_path: str, card_path: Path) -> type[DownstreamTask]:
    """The task class a card names, from the allow-list :data:`model.tasks.TASKS`."""
    if name not in TASKS:
        raise ModelCardError(
            f"{card_path}: properties.{TASK_FIELD}.name {name!r} is not a task; "
            f"known tasks: {', '.join(TASKS)}"
        )
    task_class = TASKS[name].task_class
    if class_path != task_class_path(task_class):
        raise ModelCardError(
            f"{card_path}: properties.{TASK_FIELD}.class {class_path!r} is not the class of "
            f"task {name!r} ({task_class_path(task_class)}); only the classes of "
            "model.tasks.TASKS are loaded"
        )
    return task_class


def _check_head(
    properties: Mapping[str, Any],
    task: DownstreamTask,
    target_info: Mapping[str, Any],
    card_path: Path,
) -> None:
    """Raise a ModelCardError unless the card's head is the one the task builds for the target."""
    head = card_field(properties, HEAD_FIELD, dict, "properties", card_path)
    place = f"properties.{HEAD_FIELD}"
    kind = card_field(head, "kind", str, place, card_path)
    out_channels = card_field(head, "out_channels", int, place, card_path)
    try:
        expected = task.output_channels(dict(target_info))
    except (KeyError, TypeError, ValueError) as error:
        raise ModelCardError(
            f"{card_path}: properties.{TARGET_FIELD} lacks what the task's head needs: {error!r}"
        ) from error
    if (kind, out_channels) != (task.head_kind, expected):
        raise ModelCardError(
            f"{card_path}: {place} is a {kind} head of {out_channels} channels; the task "
            f"builds a {task.head_kind} head of {expected} for its target"
        )
