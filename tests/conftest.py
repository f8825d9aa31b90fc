"""Shared fixtures: the sample world is rendered once per test session."""

from __future__ import annotations

from pathlib import Path

import pytest

from catalogs.sample import build_sample


@pytest.fixture(scope="session")
def sample_world(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The sample world of seed 0 (read-only for tests: copy before changing anything)."""
    out = tmp_path_factory.mktemp("sample") / "world"
    build_sample(out, seed=0)
    return out
