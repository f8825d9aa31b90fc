"""Catalog builders: one module per source, each turning the source's layout into STAC Items.

Each ``build(root) -> BuildResult`` reads the source's official on-disk layout and reports
damaged or unexpected files.
"""

from collections.abc import Callable
from pathlib import Path

from catalogs.builders import (
    bigearthnet,
    geopile,
    mdas,
    millionaid,
    sen12ms,
    sen12ms_cr,
    spacenet2,
    vaihingen,
)
from catalogs.stac import BuildResult

BUILDERS: dict[str, Callable[[Path], BuildResult]] = {
    "sen12ms": sen12ms.build,
    "mdas": mdas.build,
    "millionaid": millionaid.build,
    "geopile": geopile.build,
    "bigearthnet": bigearthnet.build,
    "sen12ms-cr": sen12ms_cr.build,
    "spacenet2": spacenet2.build,
    "vaihingen": vaihingen.build,
}
