"""Model benchmarks, apart from the product code: ``python -m model.benchmarks loader|model``.

The GeoPile-2 loader against the path a TorchGeo user takes without the store and against the
decode bound, and the network's training speed. Product code under ``model/`` never imports
this package.
"""
