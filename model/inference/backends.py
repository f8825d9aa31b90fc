"""Where a fine-tuned model runs: PyTorch (CPU or CUDA, fp32 or bf16) or onnxruntime.

Both backends take ``{sensor: (B, C, P, P) float32}`` arrays in the model's unit, missing
values filled, and return the task's prediction as a float32 array, batch first
(:class:`~model.finetuned.FinetunedModel`).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np
import onnxruntime
import torch

from model.finetuned import FinetunedModel

PRECISIONS = ("fp32", "bf16")


class TorchBackend:
    """A fine-tuned model run by PyTorch.

    bf16 runs the network under CUDA autocast (the gate and the normalisation stay fp32); on
    the CPU it is refused rather than emulated.

    Args:
        model: the fine-tuned model (moved to ``device``).
        device: a torch device, ``cpu`` or ``cuda[:N]``.
        precision: ``fp32`` or ``bf16`` (CUDA only).

    Raises:
        ValueError: for an unknown precision, or bf16 on a device that is not CUDA.
    """

    def __init__(self, model: FinetunedModel, device: str = "cpu", precision: str = "fp32") -> None:
        """Initialise a new TorchBackend (arguments as on the class)."""
        if precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
        self.device = torch.device(device)
        if precision == "bf16" and self.device.type != "cuda":
            raise ValueError(
                f"precision 'bf16' runs under CUDA autocast only, not on {device!r}; "
                "use precision 'fp32' there"
            )
        self.model = model
        self.precision = precision
        model.task.to(self.device)

    def __call__(self, inputs: Mapping[str, np.ndarray]) -> np.ndarray:
        """The prediction of a batch (float32, batch first)."""
        tensors = {
            sensor: torch.from_numpy(np.ascontiguousarray(values, dtype=np.float32)).to(self.device)
            for sensor, values in inputs.items()
        }
        with torch.autocast(
            self.device.type, dtype=torch.bfloat16, enabled=self.precision == "bf16"
        ):
            prediction = self.model(tensors)
        return prediction.float().cpu().numpy()


class OnnxBackend:
    """A fine-tuned model's ONNX export (:mod:`model.export_onnx`) run by onnxruntime on the CPU.

    Args:
        onnx_path: the ``.onnx`` file.
        model: the fine-tuned model it was exported from (its input sensors).

    Raises:
        ValueError: naming the file and both lists, when the file's inputs are not the model's
            input sensors.
    """

    def __init__(self, onnx_path: Path | str, model: FinetunedModel) -> None:
        """Initialise a new OnnxBackend (arguments as on the class)."""
        self.session = onnxruntime.InferenceSession(
            str(onnx_path), providers=["CPUExecutionProvider"]
        )
        names = [node.name for node in self.session.get_inputs()]
        sensors = list(model.input_sensors)
        if sorted(names) != sorted(sensors):
            raise ValueError(
                f"{onnx_path}: the ONNX inputs {names} are not the model's input sensors "
                f"{sensors} (missing {sorted(set(sensors) - set(names))}, "
                f"unexpected {sorted(set(names) - set(sensors))})"
            )
        self.input_names = names

    def __call__(self, inputs: Mapping[str, np.ndarray]) -> np.ndarray:
        """The prediction of a batch (float32, batch first)."""
        feeds = {
            name: np.ascontiguousarray(inputs[name], dtype=np.float32) for name in self.input_names
        }
        (prediction,) = self.session.run(None, feeds)
        return np.asarray(prediction, dtype=np.float32)
