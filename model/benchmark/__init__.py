"""Loader benchmarks: the GeoPile-2 store against the paths a user would take without it."""
