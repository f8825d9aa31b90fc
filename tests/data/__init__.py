"""Generators of the tests' data (one package per dataset, TorchGeo style), the file writers
they share (:mod:`tests.data.rasters`) and the checks the builder tests share
(:mod:`tests.data.checks`)."""

import pytest

# Imported by test modules, not collected: pytest must be told to show its failed asserts' values.
pytest.register_assert_rewrite("tests.data.checks")
