"""Command line: ``python -m model.export_onnx --model RUN_OR_EXPORT --out model.onnx [--check]``.

Exports a fine-tuned model (:func:`model.finetuned.load_finetuned`) to ONNX with
``torch.onnx.export(dynamo=True)``: one input per sensor, named after it, (B, C, P, P) float32 in
the sensor's model unit with missing values filled; one output, ``prediction``, as
:class:`~model.finetuned.FinetunedModel` gives it. The batch dimension is dynamic. The MoE layers
run dropless, every expert on every token (:class:`~model.nn.moe.SparseMoE`). The file's
metadata names the inputs, the output and the task.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn

from catalogs.atomic_files import atomic_path
from model.finetuned import TASK_FIELD, FinetunedModel, load_finetuned
from model.tasks import DownstreamTask

OUTPUT_NAME = "prediction"
INPUTS_KEY = "msgfm:inputs"
OUTPUTS_KEY = "msgfm:outputs"
TASK_KEY = "msgfm:task"
EXAMPLE_BATCH = 2  # torch.export specialises a dimension of size 1: the example batch is larger


class SensorInputs(nn.Module):
    """A fine-tuned model taking one positional tensor per input sensor, in batch order."""

    def __init__(self, model: FinetunedModel) -> None:
        """Wrap ``model`` (its task, already in eval mode with dropless MoE)."""
        super().__init__()
        self.task = model.task
        self.sensors = model.input_sensors

    def forward(self, *images: Tensor) -> Tensor:
        """The prediction of ``{sensor: image}``."""
        return self.task({"inputs": dict(zip(self.sensors, images, strict=True))})


def example_inputs(task: DownstreamTask, batch: int, seed: int = 0) -> dict[str, Tensor]:
    """A random batch of a built task's inputs: mean + std * N(0, 1) per band, float32."""
    generator = torch.Generator().manual_seed(seed)
    side = task.network.encoder.config.input_px
    return {
        sensor: mean[:, None, None]
        + std[:, None, None] * torch.randn(batch, len(mean), side, side, generator=generator)
        for sensor, (mean, std) in task.normalisation.items()
    }


def export_onnx(model: FinetunedModel, out: Path | str, opset: int | None = None) -> Path:
    """Write ``model`` as an ONNX file, replaced atomically.

    Args:
        model: the fine-tuned model.
        out: the ``.onnx`` file to write.
        opset: the ONNX opset, or None for the exporter's default.

    Returns:
        ``out``.
    """
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    sensors = list(model.input_sensors)
    examples = example_inputs(model.task, EXAMPLE_BATCH)
    batch = torch.export.Dim("batch")
    with torch.no_grad():
        program = torch.onnx.export(
            SensorInputs(model).eval(),
            tuple(examples[sensor] for sensor in sensors),
            input_names=sensors,
            output_names=[OUTPUT_NAME],
            dynamic_shapes=(tuple({0: batch} for _ in sensors),),  # one entry: *images
            opset_version=opset,
            dynamo=True,
            verbose=False,
        )
    program.model.metadata_props.update(
        {
            INPUTS_KEY: json.dumps(sensors),
            OUTPUTS_KEY: json.dumps([OUTPUT_NAME]),
            TASK_KEY: json.dumps(model.card["properties"][TASK_FIELD], sort_keys=True),
        }
    )
    with atomic_path(out) as partial:
        program.save(str(partial))
    return out


def max_difference(model: FinetunedModel, onnx_path: Path, batch: int = 2) -> float:
    """Largest absolute difference between onnxruntime and PyTorch on a random batch."""
    from model.inference.backends import OnnxBackend  # it imports this module's neighbours

    inputs = example_inputs(model.task, batch, seed=1)
    expected = model(inputs).numpy()
    got = OnnxBackend(onnx_path, model)({s: x.numpy() for s, x in inputs.items()})
    return float(np.abs(got - expected).max())


def main(args: list[str] | None = None) -> int:
    """Export; with ``--check``, print the largest difference to PyTorch. Returns 0."""
    parser = argparse.ArgumentParser(
        prog="python -m model.export_onnx", description=__doc__.splitlines()[0]
    )
    parser.add_argument(
        "--model", required=True, type=Path, help="a fine-tuning run, its model/ or model_card.json"
    )
    parser.add_argument("--out", required=True, type=Path, help="the .onnx file to write")
    parser.add_argument("--opset", type=int, default=None, help="ONNX opset (exporter default)")
    parser.add_argument(
        "--check", action="store_true", help="compare onnxruntime with PyTorch on a batch of 2"
    )
    options = parser.parse_args(args)
    model = load_finetuned(options.model)
    path = export_onnx(model, options.out, options.opset)
    print(f"wrote {path} ({model.name}; inputs {', '.join(model.input_sensors)})")
    if options.check:
        print(f"max abs difference onnxruntime vs PyTorch: {max_difference(model, path):.3g}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
