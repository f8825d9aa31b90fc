"""Lightning data modules: datasets, samplers, normalisation and augmentation wired together."""

from model.datamodules.geopile2 import GeoPile2DataModule

__all__ = ["GeoPile2DataModule"]
