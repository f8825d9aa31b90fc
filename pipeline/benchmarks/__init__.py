"""Pipeline benchmarks, apart from the product code: ``python -m pipeline.benchmarks``.

The bench inputs (sample-world scenes, one full-size scene, N small items), the measured paths
(ours, the warp bound, a naive per-chip script) and the process-tree resource accounting.
Product code under ``pipeline/`` never imports this package.
"""
