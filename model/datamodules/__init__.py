"""Lightning data modules: datasets, samplers, normalisation and augmentation wired together."""

from model.datamodules.base import DownstreamDataModule
from model.datamodules.bigearthnet import BigEarthNetDataModule
from model.datamodules.geopile2 import GeoPile2DataModule
from model.datamodules.sen12ms_cr import SEN12MSCRDataModule
from model.datamodules.spacenet2 import SpaceNet2DataModule
from model.datamodules.vaihingen import VaihingenDataModule

__all__ = [
    "BigEarthNetDataModule",
    "DownstreamDataModule",
    "GeoPile2DataModule",
    "SEN12MSCRDataModule",
    "SpaceNet2DataModule",
    "VaihingenDataModule",
]
