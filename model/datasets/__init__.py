"""TorchGeo dataset classes: GeoPile-2 and the downstream sets TorchGeo lacks."""
