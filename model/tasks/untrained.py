"""The four downstream tasks at random init, built without data: for tests and benchmarks.

Their inputs and targets are those the data modules give (:data:`SETUPS`); the band statistics
are drawn at random, the weights are untrained. Scene inference runs them at the speed of a
fine-tuned model of the same architecture.
"""

from __future__ import annotations

from typing import Any

import torch

from catalogs.sensors import get_sensor
from model.datamodules.bigearthnet import BigEarthNetDataModule
from model.datamodules.vaihingen import VaihingenDataModule
from model.nn.encoder import encoder_config
from model.tasks import TASKS, DownstreamTask

INPUT_PX = 64


def _regression(sensor: str, data_range: float, **extra: Any) -> dict[str, Any]:
    registry = get_sensor(sensor)
    return {
        "task": "image_regression",
        "sensor": sensor,
        "channels": registry.num_bands,
        "band_names": registry.band_names,
        "data_range": data_range,
        **extra,
    }


# Per task: (input sensors in batch order, target_info, relative inputs), as the data modules say.
SETUPS: dict[str, tuple[tuple[str, ...], dict[str, Any], tuple[str, ...]]] = {
    "segmentation": (
        ("cir", "dsm"),
        {
            "task": "semantic_segmentation",
            "num_classes": 6,
            "ignore_index": 0,
            "class_names": VaihingenDataModule.class_names,
        },
        VaihingenDataModule.relative_inputs,
    ),
    "classification": (
        ("sentinel2_l2a", "sentinel1_grd"),
        {
            "task": "multilabel_classification",
            "num_classes": 19,
            "class_names": BigEarthNetDataModule.class_names,
        },
        (),
    ),
    "cloud_removal": (
        ("sentinel2_l1c", "sentinel1_grd"),
        _regression("sentinel2_l1c", 1.0),
        (),
    ),
    "pansharpening": (
        ("worldview3_ms", "worldview3_pan"),
        _regression("worldview3_ms", 2047.0, ratio=4),
        (),
    ),
}


def tiny_task(name: str, seed: int = 0, input_px: int = INPUT_PX) -> DownstreamTask:
    """Task ``name`` at the tiny preset (with MoE), random weights and random band statistics.

    Args:
        name: a key of :data:`model.tasks.TASKS`.
        seed: seed of the weights and statistics.
        input_px: side of the network's input.

    Returns:
        The task with its network built.
    """
    sensors, target_info, relative = SETUPS[name]
    generator = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    channels = {sensor: get_sensor(sensor).num_bands for sensor in sensors}
    normalisation = {
        sensor: (
            torch.rand(count, generator=generator),
            0.5 + torch.rand(count, generator=generator),
        )
        for sensor, count in channels.items()
    }
    task = TASKS[name].task_class(init="random", preset="tiny", input_px=input_px, out_dir="/run")
    task.build(
        encoder_config("tiny", input_px=input_px), channels, normalisation, target_info, relative
    )
    return task
