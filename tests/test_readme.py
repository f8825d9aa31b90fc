"""The README's example of reading GeoPile-2 from another project runs as written."""

from __future__ import annotations

import re
from pathlib import Path

import matplotlib
import pytest

from tests.pipeline_setup import busy_reference

README = Path(__file__).resolve().parents[1] / "README.md"
SECTION = "## Reading GeoPile-2 from another project"


def test_the_geopile2_example_runs_on_a_store(
    tmp_path_factory: pytest.TempPathFactory, sample_world: Path
) -> None:
    matplotlib.use("Agg")
    section = README.read_text().split(SECTION, 1)[1]
    code = re.search(r"```python\n(.*?)```", section, re.DOTALL).group(1)
    store = busy_reference(tmp_path_factory, sample_world).store
    assert '"data/geopile2.zarr"' in code
    namespace: dict = {}
    exec(
        compile(code.replace('"data/geopile2.zarr"', repr(str(store))), "README", "exec"), namespace
    )
    assert namespace["batch"]["image"].shape[1:] == (12, 64, 64)
    assert namespace["batch"]["image_sentinel1_grd"].shape[1:] == (2, 64, 64)
    assert isinstance(namespace["figure"], matplotlib.figure.Figure)
