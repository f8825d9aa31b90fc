"""The training tasks, one module each, as TorchGeo's ``trainers``.

Pretraining (:mod:`model.tasks.pretraining`) and the four downstream benchmarks, each with its
LightningModule, metrics, prediction picture, classical baselines and :class:`TaskSpec`.

:data:`TASKS` is the one list of the downstream tasks: ``python -m model.finetune`` names them,
``python -m model.evaluate`` runs them and reads its report's columns from their specs.
"""

from __future__ import annotations

from model.tasks import classification, cloud_removal, pansharpening, segmentation
from model.tasks.classification import ClassificationTask
from model.tasks.cloud_removal import CloudRemovalTask
from model.tasks.downstream import DownstreamTask, TaskSpec
from model.tasks.pansharpening import PanSharpeningTask
from model.tasks.segmentation import SegmentationTask

TASKS: dict[str, TaskSpec] = {
    module.SPEC.name: module.SPEC
    for module in (classification, cloud_removal, pansharpening, segmentation)
}

__all__ = [
    "TASKS",
    "ClassificationTask",
    "CloudRemovalTask",
    "DownstreamTask",
    "PanSharpeningTask",
    "SegmentationTask",
    "TaskSpec",
]
