"""Fine-tuned models as files: the export round-trips exactly, re-exports byte for byte, and a
damaged card names the file and the field."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from catalogs.sensors import get_sensor
from model.export_onnx import example_inputs
from model.finetuned import (
    CARD_FILE,
    EXPORT_DIR,
    HEAD_FIELD,
    TASK_FIELD,
    WEIGHTS_FILE,
    export_finetuned,
    load_finetuned,
)
from model.model_card import ModelCardError
from model.nn.moe import set_moe_dropless
from model.tasks import TASKS
from model.tasks.untrained import INPUT_PX, SETUPS, tiny_task


@pytest.mark.parametrize("name", TASKS)
def test_an_export_loads_back_to_the_same_predictions(name: str, tmp_path: Path) -> None:
    task = tiny_task(name)
    card_path = export_finetuned(task, tmp_path)
    assert card_path == tmp_path / EXPORT_DIR / CARD_FILE
    inputs = example_inputs(task, 2)
    set_moe_dropless(task.network)
    with torch.no_grad():
        expected = task.eval()({"inputs": inputs})
    sensors, target_info, relative = SETUPS[name]
    for path in (tmp_path, tmp_path / EXPORT_DIR, card_path):  # run folder, export, card
        model = load_finetuned(path)
        assert torch.equal(model(inputs), expected)
    assert (model.name, model.input_sensors, model.relative_inputs) == (name, sensors, relative)
    assert model.input_px == INPUT_PX
    assert model.target_info == json.loads(json.dumps(target_info))
    assert type(model.task) is TASKS[name].task_class and not model.task.training
    assert all(layer.dropless for layer in model.task.network.encoder.moe_layers())
    for sensor, (mean, std) in task.normalisation.items():
        assert torch.equal(model.task.normalisation[sensor][0], mean)
        assert torch.equal(model.task.normalisation[sensor][1], std)


def test_the_card_holds_what_running_the_task_needs_and_no_clock_time(tmp_path: Path) -> None:
    task = tiny_task("segmentation")
    card = json.loads(export_finetuned(task, tmp_path / "first").read_text())
    export_finetuned(task, tmp_path / "again")
    export_finetuned(load_finetuned(tmp_path / "first").task, tmp_path / "reloaded")
    for file in (CARD_FILE, WEIGHTS_FILE):
        first = (tmp_path / "first" / EXPORT_DIR / file).read_bytes()
        for other in ("again", "reloaded"):
            assert (tmp_path / other / EXPORT_DIR / file).read_bytes() == first
    properties = card["properties"]
    assert properties[TASK_FIELD]["name"] == "segmentation"
    assert properties[TASK_FIELD]["class"] == "model.tasks.segmentation.SegmentationTask"
    assert not {"pretrained", "out_dir"} & set(properties[TASK_FIELD]["hparams"])
    assert properties[HEAD_FIELD] == {"kind": "dense", "out_channels": 6}
    assert properties["msgfm:relative_inputs"] == ["dsm"]
    assert [entry["name"] for entry in properties["mlm:input"]] == ["cir", "dsm"]
    assert properties["mlm:input"][1]["bands"] == list(get_sensor("dsm").band_names)
    mean, std = task.normalisation["cir"]
    assert [s["mean"] for s in properties["mlm:input"][0]["value_scaling"]] == mean.tolist()
    assert [s["stddev"] for s in properties["mlm:input"][0]["value_scaling"]] == std.tolist()
    assert properties["mlm:output"][0]["result"]["shape"] == [-1, 6, INPUT_PX, INPUT_PX]
    assert properties["mlm:hyperparameters"]["input_px"] == INPUT_PX
    assert (
        properties["datetime"] is None
        and card["assets"]["weights"]["href"] == "./model.safetensors"
    )


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A classification export's card."""
    return export_finetuned(tiny_task("classification"), tmp_path_factory.mktemp("run"))


def _damaged(card_path: Path, tmp_path: Path, change: object) -> Path:
    """A copy of the export whose card went through ``change(properties)``."""
    folder = tmp_path / EXPORT_DIR
    folder.mkdir()
    (folder / WEIGHTS_FILE).write_bytes((card_path.parent / WEIGHTS_FILE).read_bytes())
    card = json.loads(card_path.read_text())
    change(card["properties"])
    (folder / CARD_FILE).write_text(json.dumps(card))
    return folder / CARD_FILE


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda p: p.pop(TASK_FIELD), r"properties\.msgfm:task is missing"),
        (lambda p: p[TASK_FIELD].pop("hparams"), r"properties\.msgfm:task\.hparams is missing"),
        (
            lambda p: p[TASK_FIELD].update({"class": "os.system"}),
            r"properties\.msgfm:task\.class 'os\.system' is not the class of task "
            r"'classification' \(model\.tasks\.classification\.ClassificationTask\)",
        ),
        (
            lambda p: p[TASK_FIELD].update({"name": "detection"}),
            r"properties\.msgfm:task\.name 'detection' is not a task; known tasks: ",
        ),
        (
            lambda p: p[TASK_FIELD]["hparams"].update({"dropout": 0.5}),
            r"properties\.msgfm:task\.hparams: .*'dropout'",
        ),
        (
            lambda p: p[HEAD_FIELD].update({"out_channels": 5}),
            r"properties\.msgfm:head is a classification head of 5 channels; the task builds "
            r"a classification head of 19",
        ),
        (
            lambda p: p["msgfm:target_info"].pop("num_classes"),
            r"msgfm:target_info lacks .*num_classes",
        ),
        (
            lambda p: p.update({"msgfm:relative_inputs": [1]}),
            r"msgfm:relative_inputs\[0\] must be a string",
        ),
        (lambda p: p["mlm:hyperparameters"].update({"embed_dim": 48}), r"architecture mismatch"),
    ],
)
def test_a_damaged_card_names_the_file_and_the_field(
    exported: Path, tmp_path: Path, change: object, message: str
) -> None:
    card_path = _damaged(exported, tmp_path, change)
    with pytest.raises(ModelCardError, match=message) as error:
        load_finetuned(tmp_path)
    assert str(card_path) in str(error.value)


def test_an_export_without_a_built_network_or_outside_the_tasks_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="no network yet"):
        export_finetuned(TASKS["segmentation"].task_class(init="random"), tmp_path)
    task = tiny_task("segmentation")
    task.__class__ = type("Mine", (type(task),), {})
    with pytest.raises(ValueError, match=r"Mine is not a task of model\.tasks\.TASKS"):
        export_finetuned(task, tmp_path)
