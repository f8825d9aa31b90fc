"""ONNX export of fine-tuned models: each task's network (MoE included) runs in onnxruntime as
in PyTorch, at any batch size of one export; the inference backends check what they are given."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch

from model.export_onnx import example_inputs, export_onnx, main
from model.finetuned import export_finetuned, load_finetuned
from model.inference.backends import OnnxBackend, TorchBackend
from model.tasks import TASKS
from model.tasks.untrained import SETUPS, tiny_task

# Each export takes tens of seconds: one worker runs them all, one export per task.
pytestmark = pytest.mark.xdist_group("onnx")


@pytest.mark.parametrize("name", TASKS)
def test_the_onnx_export_predicts_as_pytorch_at_any_batch_size(name: str, tmp_path: Path) -> None:
    model = load_finetuned(export_finetuned(tiny_task(name), tmp_path))
    assert model.task.network.encoder.moe_layers()
    path = export_onnx(model, tmp_path / "model.onnx")
    backend, reference = OnnxBackend(path, model), TorchBackend(model)
    for batch in (1, 3):
        inputs = {s: x.numpy() for s, x in example_inputs(model.task, batch, seed=batch).items()}
        expected = reference(inputs)
        got = backend(inputs)
        assert got.shape == expected.shape and got.shape[0] == batch and got.dtype == np.float32
        np.testing.assert_allclose(got, expected, rtol=0, atol=1e-4)
    metadata = {p.key: p.value for p in onnx.load(str(path)).metadata_props}
    assert json.loads(metadata["msgfm:inputs"]) == list(SETUPS[name][0])
    assert json.loads(metadata["msgfm:outputs"]) == ["prediction"]
    assert json.loads(metadata["msgfm:task"])["name"] == name
    other = next(task for task in TASKS if SETUPS[task][0] != SETUPS[name][0])
    with pytest.raises(ValueError, match=rf"{path}: the ONNX inputs .* \(missing \["):
        OnnxBackend(path, load_finetuned(export_finetuned(tiny_task(other), tmp_path / other)))


def test_the_command_exports_and_checks(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    export_finetuned(tiny_task("segmentation"), tmp_path)
    assert main(["--model", str(tmp_path), "--out", str(tmp_path / "seg.onnx"), "--check"]) == 0
    printed = capsys.readouterr().out
    difference = float(printed.rsplit(": ", 1)[1])
    assert difference < 1e-4 and (tmp_path / "seg.onnx").is_file()
    assert not [p.name for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_bf16_is_refused_off_cuda(tmp_path: Path) -> None:
    model = load_finetuned(export_finetuned(tiny_task("classification"), tmp_path))
    with pytest.raises(ValueError, match="'bf16' runs under CUDA autocast only, not on 'cpu'"):
        TorchBackend(model, precision="bf16")
    with pytest.raises(ValueError, match="precision must be one of"):
        TorchBackend(model, precision="fp16")
    inputs = example_inputs(model.task, 2)
    prediction = TorchBackend(model)({s: x.numpy() for s, x in inputs.items()})
    assert torch.equal(torch.from_numpy(prediction), model(inputs))
