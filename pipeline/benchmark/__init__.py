"""The pieces of ``python -m pipeline.bench``: bench input, the three measured paths, and the
process-tree resource accounting."""
