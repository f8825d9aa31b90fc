"""TorchGeo dataset classes: GeoPile-2 and the downstream sets TorchGeo lacks."""

from model.datasets.batching import SensorBatchSampler, collate_by_sensor
from model.datasets.chip_reader import ChipReadError
from model.datasets.geopile2 import GeoPile2
from model.datasets.sen12ms_cr import SEN12MSCR
from model.datasets.spacenet2 import SpaceNet2PanMS
from model.datasets.vaihingen import VaihingenDSM

__all__ = [
    "SEN12MSCR",
    "ChipReadError",
    "GeoPile2",
    "SensorBatchSampler",
    "SpaceNet2PanMS",
    "VaihingenDSM",
    "collate_by_sensor",
]
