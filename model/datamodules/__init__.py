"""Lightning data modules: datasets, samplers, normalisation and augmentation wired together."""

from model.datamodules.downstream import (
    BigEarthNetDataModule,
    DownstreamDataModule,
    SEN12MSCRDataModule,
    SpaceNet2DataModule,
    VaihingenDataModule,
)
from model.datamodules.geopile2 import GeoPile2DataModule

__all__ = ["GeoPile2DataModule"]
__all__ += ["BigEarthNetDataModule", "DownstreamDataModule", "SEN12MSCRDataModule",
            "SpaceNet2DataModule", "VaihingenDataModule"]
